"""The spectral model: the STFT bins above the input's Nyquist, predicted from those below it.

An AERO-style alternative to the waveform U-Net (model setting ``architecture: "spectral"``;
:func:`speechsr.model.build_model`). The model interpolates the low-res input with the U-Net's
fixed windowed-sinc interpolator, and :class:`SpectralHighBand` adds the missing band:

1. STFT of the interpolated input (:mod:`speechsr.framed_dft`: window 512, hop
   ``geometry.SPECTRAL_HOP`` = 128 output samples, centred by zero padding).
2. Per frame, features of the bins up to the input's Nyquist (:func:`feature_bins`): real and
   imaginary parts power-compressed (magnitude ** ``COMPRESSION``, phase kept) and log power.
3. A Conv1D over frames (kernel 3) and residual blocks of a dilated Conv1D (kernel 3, dilation
   from ``dilations``) and a 1x1 Conv1D, LeakyReLU 0.2, ``channels`` wide.
4. For every bin from :func:`cut_bin` (7/8 of the input's Nyquist: the input's anti-alias roll-off
   is the model's to fill) up, a log magnitude and a direction (phase) of what to add.
5. Only that change is synthesised (inverse DFT of those bins, overlap-add divided by the summed
   squared window) and added: below the cut the output is the interpolated input exactly.

Shapes: ``[batch, time, 1]`` waveforms at the output rate; ``[batch, frames, ...]`` inside. Any
length works; window starts on the STFT's frame grid (multiples of
:func:`speechsr.geometry.required_multiple`) give identical output in any windowing.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from speechsr.framed_dft import BINS, N_FFT, analyse, dft_matrices, kept_float, synthesise
from speechsr.geometry import SPECTRAL_HOP as HOP

CUT_FRACTION = 7 / 8   # of the input's Nyquist: the first bin the model changes
COMPRESSION = 0.3      # feature magnitudes are |X| ** COMPRESSION
LOG_POWER_EPS = 1e-7
LOG_MAG_OFFSET = -4.0  # natural log of a high-band bin's magnitude when the network outputs 0
SLOPE = 0.2            # of the LeakyReLU


def feature_bins(factor: int) -> int:
    """Bins from 0 Hz up to the input's Nyquist (inclusive) when upsampling by ``factor``."""
    return (BINS - 1) // factor + 1


def cut_bin(factor: int) -> int:
    """The first bin the model changes: ``CUT_FRACTION`` of the input's Nyquist."""
    return int((feature_bins(factor) - 1) * CUT_FRACTION)


@keras.saving.register_keras_serializable(package="speechsr")
class SpectralHighBand(keras.layers.Layer):
    """``[batch, time, 1]`` (the interpolated input at the output rate) -> the same with the band
    above :func:`cut_bin` predicted from the bins below the input's Nyquist (module docstring)."""

    def __init__(self, factor: int, channels: int = 384, dilations=(1, 2, 4, 8, 1, 2), **kwargs):
        super().__init__(**kwargs)
        self.factor, self.channels, self.dilations = int(factor), int(channels), [int(d) for d in dilations]
        self.features, self.cut = feature_bins(self.factor), cut_bin(self.factor)
        self.float_constants = False  # set by the int8 export: see _matrices
        conv = keras.layers.Conv1D
        self.entry = conv(self.channels, 3, padding="same", name="spectral_in")
        self.blocks = [(conv(self.channels, 3, padding="same", dilation_rate=d, name=f"spectral{i}_dilated"),
                        conv(self.channels, 1, name=f"spectral{i}_mix")) for i, d in enumerate(self.dilations)]
        self.head = conv(3 * (BINS - self.cut), 1, name="spectral_out")

    def build(self, input_shape):
        self.entry.build((None, None, 3 * self.features))
        for dilated, mix in self.blocks:
            dilated.build((None, None, self.channels))
            mix.build((None, None, self.channels))
        self.head.build((None, None, self.channels))
        analysis, synthesis = dft_matrices()
        bins = np.r_[:self.features, BINS:BINS + self.features]  # the features' re, im
        high = np.r_[self.cut:BINS, BINS + self.cut:2 * BINS]  # the changed bins' re, im
        self._analysis = tf.constant(analysis[:, bins].copy())  # [N_FFT, 2 * features]
        self._synthesis = tf.constant(synthesis[:, high].T.copy())  # [2 * (BINS - cut), N_FFT]

    def _matrices(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The fixed DFT matrices; kept float32 through int8 quantization with ``float_constants``
        (set by the int8 export; :func:`speechsr.framed_dft.kept_float`)."""
        matrices = (self._analysis, self._synthesis)
        return kept_float(y, matrices) if self.float_constants else matrices

    def predict(self, re: tf.Tensor, im: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The change ``(re, im)`` ``[batch, frames, BINS - cut]`` from the feature bins' spectrum
        ``re, im`` ``[batch, frames, features]``."""
        power = re * re + im * im
        scale = tf.pow(power + 1e-12, (COMPRESSION - 1.0) / 2.0)
        h = tf.concat([re * scale, im * scale, tf.math.log(power + LOG_POWER_EPS) / 10.0], axis=-1)
        h = tf.nn.leaky_relu(self.entry(h), SLOPE)
        for dilated, mix in self.blocks:
            h = tf.nn.leaky_relu(h + mix(tf.nn.leaky_relu(dilated(h), SLOPE)), SLOPE)
        out = self.head(h)
        n = BINS - self.cut
        log_mag, a, b = out[..., :n], out[..., n:2 * n], out[..., 2 * n:]
        mag = tf.exp(tf.clip_by_value(log_mag + LOG_MAG_OFFSET, -20.0, 5.0)) / tf.sqrt(a * a + b * b + 1e-6)
        return mag * a, mag * b

    def call(self, y):
        analysis, synthesis = self._matrices(y)
        spec = analyse(y, analysis, HOP)  # [B, F, 2 * features]
        change_re, change_im = self.predict(spec[..., :self.features], spec[..., self.features:])
        return y + synthesise(tf.concat([change_re, change_im], axis=-1), synthesis, HOP, tf.shape(y)[1])

    def flops_per_second(self, rate: int) -> float:
        """Multiply-adds x 2 for one second of audio at ``rate`` (the output rate): the two DFT
        matrix products and the network (element-wise operations left out)."""
        per_frame = 2 * N_FFT * 2 * (self.features + BINS - self.cut)
        per_frame += 2 * 3 * 3 * self.features * self.channels
        per_frame += len(self.blocks) * 2 * (3 + 1) * self.channels * self.channels
        per_frame += 2 * self.channels * 3 * (BINS - self.cut)
        return per_frame * rate / HOP

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "channels": self.channels,
                "dilations": list(self.dilations)}

