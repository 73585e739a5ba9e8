"""Training losses, per example (shape ``[batch]``) so they average correctly across replicas.

- :func:`mse`: mean squared error on the waveform (the reference suite's loss).
- :func:`mrstft`: multi-resolution STFT loss (spectral convergence + L1 of log10 power), an
  optional addition that rewards the right high-band level, which MSE alone under-estimates.
- :func:`mel_l1`: L1 distance of log mel spectrograms (HiFi-GAN's reconstruction loss): the
  spectro-temporal envelope, phase-blind, which is what perceptual metrics reward.
- :func:`speechsr.high_band.band_energy_loss`: log band energies above the high-band layer's
  edge (the input's Nyquist unless ``high_band_edge_hz``), which trains the learned envelope.
- :func:`reconstruction`: their weighted sum as training settings choose.
"""

from __future__ import annotations

import tensorflow as tf

from speechsr.geometry import high_band_edge
from speechsr.high_band import band_energy_loss

STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) in output samples
LOG_EPS = 1e-7


def mse(y: tf.Tensor, y_hat: tf.Tensor) -> tf.Tensor:
    """Per-example MSE of waveforms ``[batch, time, 1]`` -> ``[batch]``."""
    return tf.reduce_mean(tf.square(y - y_hat), axis=[1, 2])


def mrstft(y: tf.Tensor, y_hat: tf.Tensor) -> tf.Tensor:
    """Per-example multi-resolution STFT loss of ``[batch, time, 1]`` -> ``[batch]``."""
    y, y_hat = y[..., 0], y_hat[..., 0]
    total = 0.0
    for n_fft, hop in STFT_RESOLUTIONS:
        s = tf.abs(tf.signal.stft(y, n_fft, hop, n_fft, window_fn=tf.signal.hann_window))
        s_hat = tf.abs(tf.signal.stft(y_hat, n_fft, hop, n_fft, window_fn=tf.signal.hann_window))
        convergence = tf.norm(s - s_hat, axis=[1, 2]) / (tf.norm(s, axis=[1, 2]) + 1e-7)
        log_l1 = tf.reduce_mean(tf.abs(tf.math.log(tf.square(s) + LOG_EPS) - tf.math.log(tf.square(s_hat) + LOG_EPS)),
                                axis=[1, 2]) / tf.math.log(10.0)
        total += convergence + log_l1
    return total / len(STFT_RESOLUTIONS)


MEL_FFT, MEL_HOP, MEL_BANDS, MEL_RATE = 1024, 256, 80, 16000
MEL_EPS = 1e-5


def mel_l1(y: tf.Tensor, y_hat: tf.Tensor) -> tf.Tensor:
    """Per-example mean |log mel(y) - log mel(y_hat)| of ``[batch, time, 1]`` -> ``[batch]``.

    Mel magnitudes of a 1024-sample Hann STFT (hop 256 output samples), 80 bands 0-8 kHz at
    16 kHz output rate, natural log clipped at 1e-5.
    """
    matrix = tf.signal.linear_to_mel_weight_matrix(MEL_BANDS, MEL_FFT // 2 + 1, MEL_RATE, 0.0, MEL_RATE / 2)

    def log_mel(x):
        spec = tf.abs(tf.signal.stft(x[..., 0], MEL_FFT, MEL_HOP, MEL_FFT, window_fn=tf.signal.hann_window))
        return tf.math.log(tf.maximum(tf.matmul(spec, matrix), MEL_EPS))

    return tf.reduce_mean(tf.abs(log_mel(y) - log_mel(y_hat)), axis=[1, 2])


def reconstruction(y: tf.Tensor, y_hat: tf.Tensor, ts, ms=None) -> tf.Tensor:
    """``mse_weight`` x MSE + ``mrstft_weight`` x MR-STFT + ``mel_weight`` x mel L1
    + ``high_band_weight`` x high-band log-energy error, per example.

    ``ts``/``ms`` are the run's :class:`speechsr.settings.TrainingSettings` and
    :class:`~speechsr.settings.ModelSettings` (``ms`` needed for the high-band term only);
    terms of weight 0 are skipped.
    """
    loss = ts.mse_weight * mse(y, y_hat)
    if ts.mrstft_weight > 0:
        loss = loss + ts.mrstft_weight * mrstft(y, y_hat)
    if ts.mel_weight > 0:
        loss = loss + ts.mel_weight * mel_l1(y, y_hat)
    if ts.high_band_weight > 0:
        loss = loss + ts.high_band_weight * band_energy_loss(y, y_hat, ms.output_rate, high_band_edge(ms),
                                                             ms.high_band_bands, ms.high_band_gain_db,
                                                             ms.high_band_tilt_db, ts.high_band_overshoot_weight,
                                                             ms.high_band_contrast, ts.high_band_floor_db)
    return loss
