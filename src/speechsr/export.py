"""Export a trained ``.keras`` model to LiteRT (``NAME.tflite`` + ``NAME.tflite.json``).

The trained graph uses the compiled subpixel op and adds the interpolated input to the
residual after two separate shuffles; TensorFlow Lite's converter cannot take the op, and on
the ``tf.reshape`` path it fails on that final add ("'tf.Transpose' op x should be of the same
rank with y"). :func:`build_export_model` therefore rebuilds the same network from export-
friendly layers with the same weights:

* every shuffle is a ``keras.layers.Reshape`` ``[B, W, C] -> [B, W*r, C/r]`` (the same element
  order, see :mod:`speechsr.subpixel`);
* the fixed sinc interpolator is a bias-free ``Conv1D`` holding
  :func:`speechsr.model.sinc_interpolation_kernel`;
* interpolation and residual are added *before* the final shuffle (``[B, T, factor]``), which
  is the same sum element for element, since the shuffle only moves elements;
* dropout is left out (inference); the high-band envelope layer, if any, is the same layer.

Input ``[batch, T, 1]`` with ``T`` free (any multiple of ``required_multiple``); the runtime
resizes it to its window. Two variants (:data:`speechsr.runtime.EXPORTS`): ``lite``, float32
(``NAME.tflite``), and ``lite-int8``, int8 weights by the converter's dynamic-range
quantization (``NAME.int8.tflite``; activations stay float). :func:`export_model` checks the
LiteRT output against the trained model (SNR >= ``MIN_SNR_DB[variant]``) before writing,
atomically, the model and its sidecar (SHA-256 of the source ``.keras``, model settings, the
check).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from speechsr import model_io, runtime
from speechsr import settings as settings_mod
from speechsr.audio import atomic_path
from speechsr.model import (_activation, high_band_layer, level_filters, level_kernel, required_multiple,
                            sinc_interpolation_kernel, spectral_layer)

log = logging.getLogger("speechsr")

#: Least SNR (dB) of the export's output against the trained model's, per variant.
MIN_SNR_DB = {"lite": 60.0, "lite-int8": 35.0}
CHECK_SECONDS = 4.096


def build_export_model(s: settings_mod.ModelSettings, length: int | None = None) -> keras.Model:
    """The model of :func:`speechsr.model.build_model` from converter-friendly layers (same names).

    ``length``: low-res samples (None = any). Weights: :func:`copy_weights`.
    """
    L = keras.layers
    factor = s.output_rate // s.input_rate
    filters = level_filters(s)

    def shuffle(h, r, name):
        return L.Reshape((-1, h.shape[-1] // r), name=name)(h)

    x_in = keras.Input(shape=(length, 1), name="low_res")
    phases = L.Conv1D(factor, 2 * s.interpolation_taps + 1, padding="same", use_bias=False,
                      name="sinc_phases")(x_in)
    if s.architecture == "spectral":
        y = spectral_layer(s)(shuffle(phases, factor, "interpolated"))
        return keras.Model(x_in, y, name="speechsr_spectral_export")
    skips, h = [], x_in
    for level in range(s.num_blocks):
        h = L.Conv1D(filters[level], level_kernel(s, level), strides=2, padding="same",
                     name=f"down{level}_conv")(h)
        if s.batch_norm:
            h = L.BatchNormalization(name=f"down{level}_bn")(h)
        h = _activation(s.activation, f"down{level}_act")(h)
        skips.append(h)
    b = s.num_blocks
    h = L.Conv1D(filters[b], level_kernel(s, b), strides=2, padding="same", name="bottleneck_conv")(h)
    h = _activation(s.activation, "bottleneck_act")(h)
    for level in reversed(range(s.num_blocks)):
        h = L.Conv1D(2 * filters[level], level_kernel(s, level), padding="same", name=f"up{level}_conv")(h)
        h = _activation(s.activation, f"up{level}_act")(h)
        h = shuffle(h, 2, f"up{level}_shuffle")
        h = L.Concatenate(name=f"up{level}_concat")([h, skips[level]])
    h = L.Conv1D(2 * filters[0], level_kernel(s, 0), padding="same", name="top_conv")(h)
    h = _activation(s.activation, "top_act")(h)
    h = shuffle(h, 2, "top_shuffle")
    h = L.Concatenate(name="top_concat")([h, x_in])
    residual = L.Conv1D(factor, level_kernel(s, 0), padding="same", use_bias=False, name="final_conv")(h)
    y = L.Add(name="high_res_phases")([phases, residual])
    y = shuffle(y, factor, "high_res")
    if s.high_band_bands:
        y = high_band_layer(s)(y)
    return keras.Model(x_in, y, name="speechsr_unet_export")


def copy_weights(trained: keras.Model, export: keras.Model, s: settings_mod.ModelSettings) -> None:
    """Give ``export`` the trained weights (matched by layer name) and the sinc kernel."""
    for layer in export.layers:
        if layer.name == "sinc_phases":
            layer.set_weights([sinc_interpolation_kernel(s.output_rate // s.input_rate, s.interpolation_taps)])
        elif layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """20 log10(||reference|| / ||reference - estimate||), inf when equal."""
    err = float(np.sum((np.asarray(reference, np.float64) - estimate) ** 2))
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(np.asarray(reference, np.float64) ** 2) / err))


def check_signal(s: settings_mod.ModelSettings, seconds: float = CHECK_SECONDS) -> np.ndarray:
    """A fixed test input ``[1, T, 1]``: harmonics and noise bursts at the input rate, T a valid length."""
    m = required_multiple(s)
    n = int(round(seconds * s.input_rate / m)) * m
    t = np.arange(n) / s.input_rate
    rng = np.random.default_rng(0)
    x = sum(np.sin(2 * np.pi * k * 140 * t + k) / k for k in range(1, 14)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x = 0.1 * x + 0.02 * rng.normal(size=n) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
    return x.astype(np.float32)[None, :, None]


def convert(export: keras.Model, variant: str = "lite") -> bytes:
    """LiteRT flatbuffer of ``export`` (TensorFlow Lite builtin ops only): float32 weights
    (``lite``) or int8 weights, dynamic-range quantization (``lite-int8``)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(export)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "lite-int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant != "lite":
        raise ValueError(f"export variant must be one of {', '.join(runtime.EXPORTS)}, got {variant!r}")
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # Keras prints the saved signature
        flatbuffer = converter.convert()
    log.debug("converter: %s", printed.getvalue())
    return flatbuffer


def is_current(model_path: str | Path, variant: str = "lite") -> bool:
    """Whether ``model_path`` already has an export (``variant``) made from exactly this file."""
    try:
        runtime.export_info(model_path, variant)
    except runtime.ExportUnavailable:
        return False
    return True


def export_model(model_path: str | Path, variant: str = "lite", force: bool = False) -> dict:
    """Export ``model_path`` (.keras) to ``NAME.tflite`` (``variant`` 'lite') or
    ``NAME.int8.tflite`` ('lite-int8') beside it, unless already current.

    Returns ``{"path", "written", "snr_db", "max_abs_diff", "bytes"}``. Raises
    ``model_io.ModelNotFoundError``, or ValueError when the exported model's output differs
    from the trained one's by more than ``MIN_SNR_DB[variant]`` on the check signal.
    """
    model_file = runtime.resolve_model_file(model_path)
    out = runtime.exported_path(model_file, variant)
    if not force and is_current(model_file, variant):
        return {"path": out, "written": False}
    digest = runtime.file_sha256(model_file)
    trained, s, _ = model_io.load_model(model_file)
    export = build_export_model(s)
    copy_weights(trained, export, s)
    for layer in export.layers:  # the layers with fixed DFT matrices: int8 networks, float32 DFTs
        if hasattr(layer, "float_constants"):
            layer.float_constants = variant == "lite-int8"
    flatbuffer = convert(export, variant)

    x = check_signal(s)
    want = trained(x, training=False).numpy()
    with atomic_path(out) as tmp:  # the model first, then its sidecar: a crash in between
        tmp.write_bytes(flatbuffer)  # leaves an old sidecar whose hash no longer matches
        got = runtime.LiteRunner(tmp)(x)
        snr = snr_db(want, got)
        if not snr >= MIN_SNR_DB[variant]:
            raise ValueError(f"{model_file}: exported model ({variant}) differs from the trained one "
                             f"(SNR {snr:.1f} dB < {MIN_SNR_DB[variant]:g} dB); not written")
    info = {"format": "tflite", "variant": variant,
            "weights": "int8 (dynamic-range quantization)" if variant == "lite-int8" else "float32",
            "source": model_file.name, "source_sha256": digest,
            "tflite_sha256": runtime.file_sha256(out), "model_settings": settings_mod.to_json(s),
            "input": "[batch, T, 1] float32 at input_rate, T any multiple of "
                     f"{required_multiple(s)}; output [batch, T * {s.output_rate // s.input_rate}, 1]",
            "check": {"seconds": x.shape[1] / s.input_rate, "snr_db": round(snr, 2),
                      "max_abs_diff": float(np.max(np.abs(want - got)))},
            "exported_with": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    with atomic_path(runtime.export_sidecar(out)) as side:
        side.write_text(json.dumps(info, indent=2) + "\n")
    return {"path": out, "written": True, "snr_db": snr, "max_abs_diff": info["check"]["max_abs_diff"],
            "bytes": len(flatbuffer)}
