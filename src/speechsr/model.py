"""The models: the 1-D U-Net of Kuleshov et al. 2017, working at the low-res input rate, and the
spectral model (model setting ``architecture``; :mod:`speechsr.spectral`).

Design (see README "Model"): the model takes the **raw low-res clip** ``[batch, T, 1]`` at
``input_rate`` (4 kHz) and returns ``[batch, T * factor, 1]`` at ``output_rate`` (16 kHz),
``factor = output_rate / input_rate``. Inside it:

1. A fixed (not trained) windowed-sinc interpolator makes the interpolated input
   ``[batch, T * factor, 1]``: a polyphase Conv1D with ``factor`` output channels followed by a
   subpixel shuffle. It is part of the graph, so training and upsampling interpolate identically.
2. The U-Net runs on the low-res signal, 4x cheaper than on the interpolated one:
   ``num_blocks`` downsampling blocks (strided Conv1D + optional batch norm + nonlinearity,
   filters doubling up to a cap), a bottleneck block like them (+ dropout), and upsampling
   blocks (Conv1D + dropout + nonlinearity + subpixel shuffle r=2 + concatenation with the
   matching downsampling output). A last upsampling block returns to length T and stacks the
   input itself.
3. A final Conv1D with ``factor`` channels + subpixel shuffle (r = factor) gives the residual,
   added to the interpolated input; the network learns only what interpolation misses.
4. Optionally (``high_band_bands`` > 0) :class:`speechsr.high_band.HighBandEnvelope` re-levels
   the band above the input's Nyquist to a predicted spectral envelope.

Any input length that is a multiple of ``2 ** (num_blocks + 1)`` low-res samples works
(:func:`required_multiple`). The model uses the compiled subpixel op when built, so compile
it with ``jit_compile=False`` (no XLA kernel).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from speechsr.geometry import (conv_table, high_band_edge, level_filters, level_kernel,  # noqa: F401  (re-exported)
                               receptive_context, required_multiple)
from speechsr.high_band import HighBandEnvelope
from speechsr.settings import ModelSettings
from speechsr.spectral import SpectralHighBand
from speechsr.subpixel import SubPixel1D


def sinc_interpolation_kernel(factor: int, taps: int) -> np.ndarray:
    """Polyphase windowed-sinc kernel ``[2*taps+1, 1, factor]`` (Kaiser window, beta 8.6).

    Channel ``i`` of a 'same' Conv1D with it is the signal at fractional time ``n + i/factor``.
    """
    j = np.arange(2 * taps + 1)
    kernel = np.zeros((2 * taps + 1, 1, factor), dtype=np.float64)
    for i in range(factor):
        t = taps - j + i / factor  # distance (input samples) from the output point to each tap
        window = np.kaiser(2 * taps + 3, 8.6)
        w = np.interp(t, np.linspace(-(taps + 1), taps + 1, 2 * taps + 3), window)
        h = np.sinc(t) * w
        kernel[:, 0, i] = h / h.sum()
    return kernel.astype(np.float32)


@keras.saving.register_keras_serializable(package="speechsr")
class SincInterpolation1D(keras.layers.Layer):
    """Fixed band-limited interpolation ``[batch, T, 1] -> [batch, T * factor, 1]`` (no weights)."""

    def __init__(self, factor: int, taps: int, implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.factor, self.taps, self.implementation = factor, taps, implementation
        self._kernel = tf.constant(sinc_interpolation_kernel(factor, taps))
        self._shuffle = SubPixel1D(factor, implementation=implementation)

    def build(self, input_shape):
        self.built = True  # no weights: the kernel is a constant

    def call(self, x):
        phases = tf.nn.conv1d(x, tf.cast(self._kernel, x.dtype), stride=1, padding="SAME")
        return self._shuffle(phases)

    def compute_output_shape(self, input_shape):
        t = input_shape[1]
        return (input_shape[0], None if t is None else t * self.factor, 1)

    def set_implementation(self, implementation: str) -> None:
        """Switch its subpixel shuffle (:func:`speechsr.subpixel.set_implementation`)."""
        self._shuffle.set_implementation(implementation)
        self.implementation = implementation

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "taps": self.taps,
                "implementation": self.implementation}


def _activation(name: str, label: str) -> keras.layers.Layer:
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.2, name=label)
    if name == "prelu":
        return keras.layers.PReLU(shared_axes=[1], name=label)
    return keras.layers.Activation(name, name=label)


#: name of the spectral model's network layer (:class:`speechsr.spectral.SpectralHighBand`)
SPECTRAL_LAYER = "spectral"


def spectral_layer(s: ModelSettings) -> SpectralHighBand:
    """The spectral model's layer of model settings ``s``."""
    return SpectralHighBand(s.output_rate // s.input_rate, s.spectral_channels, s.spectral_dilations,
                            name=SPECTRAL_LAYER)


def build_model(s: ModelSettings, length: int | None = None, name: str | None = None) -> keras.Model:
    """Build the model of model settings ``s``; ``length`` (low-res samples) fixes T, None = any.
    ``name`` names the Keras model (default ``speechsr_spectral`` or ``speechsr_unet``).

    The U-Net's convolutions are those of :func:`speechsr.geometry.conv_table`, in that order; the
    spectral model is the interpolator then :class:`speechsr.spectral.SpectralHighBand`.
    """
    factor = s.output_rate // s.input_rate
    impl = s.subpixel_implementation
    convs = {c.name: c for c in conv_table(s)}

    def conv(c, h, **kwargs):
        return keras.layers.Conv1D(c.filters, c.kernel, strides=c.stride, padding="same", name=f"{c.name}_conv",
                                   **kwargs)(h)

    x_in = keras.Input(shape=(length, 1), name="low_res")
    interpolated = SincInterpolation1D(factor, s.interpolation_taps, impl, name="sinc_interpolation")(x_in)
    if s.architecture == "spectral":
        return keras.Model(x_in, spectral_layer(s)(interpolated), name=name or "speechsr_spectral")

    skips, h = [], x_in
    for level in range(s.num_blocks):
        h = conv(convs[f"down{level}"], h)
        if s.batch_norm:
            h = keras.layers.BatchNormalization(name=f"down{level}_bn")(h)
        h = _activation(s.activation, f"down{level}_act")(h)
        skips.append(h)

    h = conv(convs["bottleneck"], h)
    if s.dropout:
        h = keras.layers.Dropout(s.dropout, name="bottleneck_dropout")(h)
    h = _activation(s.activation, "bottleneck_act")(h)

    for level in reversed(range(s.num_blocks)):
        c = convs[f"up{level}"]
        h = conv(c, h)
        if s.dropout:
            h = keras.layers.Dropout(s.dropout, name=f"up{level}_dropout")(h)
        h = _activation(s.activation, f"up{level}_act")(h)
        h = SubPixel1D(c.shuffle, implementation=impl, name=f"up{level}_shuffle")(h)
        h = keras.layers.Concatenate(name=f"up{level}_concat")([h, skips[level]])

    # back to the input length T, stacking the low-res input itself
    c = convs["top"]
    h = conv(c, h)
    h = _activation(s.activation, "top_act")(h)
    h = SubPixel1D(c.shuffle, implementation=impl, name="top_shuffle")(h)
    h = keras.layers.Concatenate(name="top_concat")([h, x_in])

    # no bias: a per-phase constant would come out of the shuffle as tones at output_rate / factor
    c = convs["final"]
    residual = conv(c, h, kernel_initializer="zeros", use_bias=False)
    residual = SubPixel1D(c.shuffle, implementation=impl, name="final_shuffle")(residual)
    y = keras.layers.Add(name="high_res")([interpolated, residual])
    if s.high_band_bands:
        y = high_band_layer(s)(y)
    return keras.Model(x_in, y, name=name or "speechsr_unet")


#: name of the high-band envelope layer in every model of :func:`build_model`
HIGH_BAND_LAYER = "high_band"


def copy_layer_weights(target: keras.Model, source: keras.Model, skip: tuple[str, ...] = ()) -> None:
    """Give each layer of ``target`` with weights (but those named in ``skip``) the weights of
    ``source``'s layer of the same name; ValueError when ``source`` lacks it or its shapes differ."""
    for layer in target.layers:
        if layer.weights and layer.name not in skip:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def high_band_layer(s: ModelSettings) -> HighBandEnvelope:
    """The learned high-band envelope of model settings ``s`` (edge ``high_band_edge_hz``, else the
    input's Nyquist)."""
    return HighBandEnvelope(s.output_rate, high_band_edge(s), s.high_band_bands,
                            s.high_band_channels, s.high_band_layers, s.high_band_kernel, s.high_band_gain_db,
                            s.high_band_tilt_db, s.high_band_copy_hz, s.high_band_contrast, s.high_band_hop,
                            name=HIGH_BAND_LAYER)


def conv_flops_per_second(s: ModelSettings) -> float:
    """Multiply-adds x 2 of all convolutions for one second of audio (forward pass)."""
    length = required_multiple(s) * math.ceil(s.input_rate / required_multiple(s))
    model = build_model(s, length=length)
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D):
            k, cin, cout = layer.kernel.shape
            total += 2.0 * layer.output.shape[1] * k * cin * cout
        elif isinstance(layer, SincInterpolation1D):
            total += 2.0 * length * (2 * layer.taps + 1) * layer.factor
    high_band = model.get_layer(HIGH_BAND_LAYER).flops_per_second() if s.high_band_bands else 0.0
    spectral = model.get_layer(SPECTRAL_LAYER).flops_per_second(s.output_rate) if s.architecture == "spectral" else 0.0
    return total * s.input_rate / length + high_band + spectral


def summary_text(s: ModelSettings) -> str:
    """Parameters, receptive field and FLOPs per second of audio, as printed by ``--summary``."""
    model = build_model(s)
    params = model.count_params()
    flops = conv_flops_per_second(s)
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    shape = (f"filters per level: {level_filters(s)}" if s.architecture == "unet" else
             f"spectral: {s.spectral_channels} channels, dilations {s.spectral_dilations} (STFT frames)")
    lines += [f"parameters: {params:,} ({params * 4 / 2**20:.1f} MiB as float32)", shape,
              f"input length must be a multiple of {required_multiple(s)} low-res samples "
              f"({required_multiple(s) / s.input_rate * 1000:.1f} ms)",
              f"forward cost: {flops / 1e9:.3f} GFLOP per second of audio"]
    return "\n".join(lines)
