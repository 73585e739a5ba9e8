"""Training losses, per example (shape ``[batch]``) so they average correctly across replicas.

- :func:`mse`: mean squared error on the waveform (the reference suite's loss).
- :func:`mrstft`: multi-resolution STFT loss (spectral convergence + L1 of log10 power), an
  optional addition that rewards the right high-band level, which MSE alone under-estimates.
"""

from __future__ import annotations

import tensorflow as tf

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


def combined(y: tf.Tensor, y_hat: tf.Tensor, mrstft_weight: float) -> tf.Tensor:
    """MSE plus ``mrstft_weight`` x MR-STFT (the STFT term is skipped when the weight is 0)."""
    loss = mse(y, y_hat)
    if mrstft_weight > 0:
        loss = loss + mrstft_weight * mrstft(y, y_hat)
    return loss
