"""Compose a model from trained parts: the U-Net of one model and a weighted blend of the
high-band envelope layers (:class:`speechsr.high_band.HighBandEnvelope`) of others; or the
weighted average of whole models of one architecture (:func:`average_models`: snapshots of one
training run, a "model soup" of the run's tail, which scores better than any one of them).

How the shipped default (version 3.0) was made: a three-quarter-width U-Net, with the layer
0.7 x version 2.2's + 0.3 x one retrained on the new U-Net (README of ``models/pretrained``).
Blending the weights of two layers trained from the same start ("model soup") keeps one
layer's cost.

The composed model takes its U-Net settings (``input_rate`` ... ``subpixel_implementation``)
from the U-Net model and its ``high_band_*`` settings from the first layer source. Those
include how the layer plays its envelope (gain, tilt, contrast), so a layer trained at one
contrast is played at the first source's. All layer sources must have the same layer shape
(bands, channels, layers, kernel, hop) and the same rates as the U-Net.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from speechsr.settings import ModelSettings

if TYPE_CHECKING:
    import keras


def check_fractions(fractions: Sequence[float] | None, count: int, flag: str = "--high-band") -> list[float]:
    """The blend fractions of ``count`` high-band layers (or models, named by ``flag``);
    ``None``: ``[1.0]`` for one layer, ``[]`` for none;
    ValueError (one line, named as compose_model.py's flags) unless there is one per layer, each
    in [0, 1], summing to 1. Imports no TensorFlow: the script checks its arguments with it first."""
    if count == 0 and not fractions:
        return []
    if fractions is None:
        if count != 1:
            raise ValueError(f"--fractions: give one per {flag} model ({count})")
        return [1.0]
    if len(fractions) != count:
        raise ValueError(f"--fractions: {len(fractions)} given for {count} {flag} model(s)")
    if any(not 0 <= f <= 1 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"--fractions must each be in [0, 1] and sum to 1, got {list(fractions)}")
    return [float(f) for f in fractions]


def average_fractions(fractions: Sequence[float] | None, count: int) -> list[float]:
    """The fractions of ``count`` averaged models: ``fractions`` (:func:`check_fractions`), or equal
    ones when none are given. ValueError (one line) for fewer than two models. No TensorFlow."""
    if count < 2:
        raise ValueError("--average: give two or more models")
    return check_fractions(fractions if fractions is not None else [1.0 / count] * count, count, "--average")


def composed_settings(unet: ModelSettings, high_band: ModelSettings) -> ModelSettings:
    """Model settings: the U-Net settings of ``unet`` with the ``high_band_*`` settings of ``high_band``."""
    if (unet.input_rate, unet.output_rate) != (high_band.input_rate, high_band.output_rate):
        raise ValueError(f"the U-Net maps {unet.input_rate} -> {unet.output_rate} Hz but the high-band "
                         f"layer's model {high_band.input_rate} -> {high_band.output_rate} Hz")
    layer = {f.name: getattr(high_band, f.name) for f in dataclasses.fields(ModelSettings)
             if f.name.startswith("high_band_")}
    return dataclasses.replace(unet, **layer)


def blend_weights(layers: Sequence[keras.layers.Layer], fractions: Sequence[float]) -> list[np.ndarray]:
    """Weights sum(fraction_i x weights of layer_i); the layers must have the same weight shapes
    and the fractions must pass :func:`check_fractions`."""
    fractions = check_fractions(fractions, len(layers))
    weights = [layer.get_weights() for layer in layers]
    shapes = [[w.shape for w in ws] for ws in weights]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError("the high-band layers differ in shape (high_band_bands, _channels, _layers, "
                         "_kernel or _hop); only layers of the same shape can be blended")
    return _mix(weights, fractions)


def compose_model(unet_path: str | os.PathLike, high_band_paths: Sequence[str | os.PathLike],
                  fractions: Sequence[float] | None = None) -> tuple[keras.Model, ModelSettings, dict]:
    """``(model, model_settings, provenance)``: the U-Net of ``unet_path`` and the high-band layer
    blended from ``high_band_paths`` with ``fractions`` (:func:`check_fractions`; default: all
    from the one path given); no ``high_band_paths``: the U-Net alone, its layer dropped
    (``high_band_bands`` 0). Loads TensorFlow.

    The provenance dict (for :func:`speechsr.model_io.save_model`) keeps the U-Net model's
    training record and names every source with its fraction under ``"composition"``.
    """
    from speechsr import model_io
    from speechsr.model import HIGH_BAND_LAYER, build_model, copy_layer_weights
    fractions = check_fractions(fractions, len(high_band_paths))
    unet, unet_settings, unet_info = model_io.load_model(unet_path)
    if unet_settings.architecture != "unet":
        raise ValueError(f"{unet_path}: a {unet_settings.architecture} model, not a U-Net: nothing to compose")
    sources = [model_io.load_model(p) for p in high_band_paths]
    for path, (_, s, _) in zip(high_band_paths, sources):
        if not s.high_band_bands:
            raise ValueError(f"{path}: this model has no high-band layer (high_band_bands 0)")
    settings = composed_settings(unet_settings, sources[0][1]) if sources else \
        dataclasses.replace(unet_settings, high_band_bands=0)
    model = build_model(settings)
    copy_layer_weights(model, unet, skip=(HIGH_BAND_LAYER,))
    if sources:
        model.get_layer(HIGH_BAND_LAYER).set_weights(
            blend_weights([m.get_layer(HIGH_BAND_LAYER) for m, _, _ in sources], fractions))
    info = {k: v for k, v in unet_info.items() if k != "model_settings"}
    info["composition"] = {
        "unet": str(unet_path),
        "high_band": [{"model": str(p), "fraction": f} for p, f in zip(high_band_paths, fractions)],
        "high_band_settings_from": str(high_band_paths[0]) if high_band_paths else None,
    }
    return model, settings, info


def average_models(paths: Sequence[str | os.PathLike], fractions: Sequence[float] | None = None
                   ) -> tuple[keras.Model, ModelSettings, dict]:
    """``(model, model_settings, provenance)``: every weight the ``fractions``-weighted mean of the
    models at ``paths`` (default: equal fractions). The models must have the same model settings
    (snapshots of one run, or runs forked from one start; averaging unrelated models gives noise).
    The provenance keeps the last model's training record and names every source with its
    fraction under ``"average"``. Loads TensorFlow."""
    from speechsr import model_io
    from speechsr.model import build_model
    fractions = average_fractions(fractions, len(paths))
    sources = [model_io.load_model(p) for p in paths]
    settings = sources[0][1]
    for path, (_, s, _) in zip(paths[1:], sources[1:]):
        if s != settings:
            raise ValueError(f"{path}: its model settings differ from {paths[0]}'s; only models of the same "
                             "settings can be averaged")
    model = build_model(settings)
    model.set_weights(_mix([m.get_weights() for m, _, _ in sources], fractions))
    info = {k: v for k, v in sources[-1][2].items() if k != "model_settings"}
    info["average"] = [{"model": str(p), "fraction": f} for p, f in zip(paths, fractions)]
    return model, settings, info


def _mix(weights: Sequence[Sequence[np.ndarray]], fractions: Sequence[float]) -> list[np.ndarray]:
    """sum(fraction_i x weights_i), each array in float64 then back to its dtype."""
    return [sum(f * ws[i].astype(np.float64) for f, ws in zip(fractions, weights)).astype(ws0.dtype)
            for i, ws0 in enumerate(weights[0])]
