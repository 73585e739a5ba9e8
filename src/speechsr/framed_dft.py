"""A short-time Fourier transform built from matrix products, for layers that must export to LiteRT.

Waveforms ``[batch, time]`` at the output rate; frames of ``N_FFT`` (512) samples every ``hop``
samples (a divisor of ``N_FFT``), periodic Hann window; ``BINS`` = 257 one-sided bins. The
analysis (:func:`analyse`) is ``frames @ analysis`` (windowed cos, -sin) of the centred signal, the
synthesis (:func:`synthesise`) ``spectrum @ synthesis`` then overlap-add divided by the summed
squared window, so that analysis then synthesis gives the input back where frames overlap fully.
Callers pass the columns of :func:`dft_matrices` they need (some bins only). No FFT op: the LiteRT builtins have no
inverse FFT, and matrix products run fast in both runtimes. Used by
:mod:`speechsr.high_band` and :mod:`speechsr.spectral`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from speechsr.geometry import FRAMED_FFT as N_FFT

BINS = N_FFT // 2 + 1


def hann() -> np.ndarray:
    """The periodic Hann window ``[N_FFT]``."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def dft_matrices() -> tuple[np.ndarray, np.ndarray]:
    """Analysis ``[N_FFT, 2 * BINS]`` (windowed cos, -sin: frame @ analysis = [re, im]) and
    synthesis ``[N_FFT, 2 * BINS]`` (one-sided inverse DFT times the window) matrices."""
    n, k = np.arange(N_FFT)[:, None], np.arange(BINS)[None, :]
    angle = 2 * np.pi * n * k / N_FFT
    w = hann()[:, None]
    analysis = np.concatenate([np.cos(angle) * w, -np.sin(angle) * w], axis=1)
    weight = np.full(BINS, 2.0)
    weight[0] = weight[-1] = 1.0
    synthesis = np.concatenate([np.cos(angle) * weight, -np.sin(angle) * weight], axis=1) * w / N_FFT
    return analysis.astype(np.float32), synthesis.astype(np.float32)


def frames(x: tf.Tensor, hop: int) -> tf.Tensor:
    """``[batch, (F + N_FFT / hop - 1) * hop]`` -> overlapping frames ``[batch, F, N_FFT]`` at ``hop``."""
    blocks = tf.reshape(x, [tf.shape(x)[0], -1, hop])
    count = tf.shape(blocks)[1] - (N_FFT // hop - 1)
    return tf.concat([blocks[:, i:i + count] for i in range(N_FFT // hop)], axis=-1)


def overlap_add(frames: tf.Tensor, hop: int) -> tf.Tensor:
    """Frames ``[batch, F, N_FFT]`` at ``hop`` -> their overlap-add ``[batch, (F + N_FFT / hop - 1) * hop]``."""
    parts = N_FFT // hop
    blocks = tf.add_n([tf.pad(frames[..., i * hop:(i + 1) * hop], [[0, 0], [i, parts - 1 - i], [0, 0]])
                       for i in range(parts)])
    return tf.reshape(blocks, [tf.shape(frames)[0], -1])


def _window_overlap(spec: tf.Tensor, hop: int) -> tf.Tensor:
    """The summed squared window ``[1, (F + N_FFT / hop - 1) * hop]`` under the frames of ``spec``
    ``[batch, F, ...]``: synthesis divides by it."""
    return overlap_add(tf.ones_like(spec[:1, :, :1]) * tf.constant(hann() ** 2), hop)


def analyse(y: tf.Tensor, analysis: tf.Tensor, hop: int) -> tf.Tensor:
    """Spectrum ``[batch, F, columns]`` of waveforms ``y`` ``[batch, time, 1]``: frames at ``hop``
    of ``y`` centred (``N_FFT / 2`` zeros each side, the end padded to a multiple of ``hop``) times
    ``analysis`` ``[N_FFT, columns]``."""
    padded = tf.pad(y[..., 0], [[0, 0], [N_FFT // 2, N_FFT // 2 + (-tf.shape(y)[1]) % hop]])
    return tf.matmul(frames(padded, hop), analysis)


def synthesise(change: tf.Tensor, synthesis: tf.Tensor, hop: int, length: tf.Tensor) -> tf.Tensor:
    """Waveform ``[batch, length, 1]`` of a spectrum ``change`` ``[batch, F, columns]`` on the frames
    of :func:`analyse`: ``change @ synthesis`` (``[columns, N_FFT]``) overlap-added, divided by the
    summed squared window, the centring removed."""
    delta = overlap_add(tf.matmul(change, synthesis), hop)
    delta = delta / tf.maximum(_window_overlap(change, hop), 1e-3)
    return tf.expand_dims(delta[:, N_FFT // 2:N_FFT // 2 + length], -1)  # (no new-axis slice in LiteRT)


def kept_float(y: tf.Tensor, matrices: tuple[tf.Tensor, ...]) -> tuple[tf.Tensor, ...]:
    """``matrices`` each multiplied by a 1 the graph computes from ``y``'s batch size, so that the
    converter's dynamic-range quantization, which quantizes constant weights only, leaves them
    float32 (int8 DFT kernels ruin the output: about -25 dB SNR). For layers whose
    ``float_constants`` the int8 export sets (:func:`speechsr.export.export_model`)."""
    one = tf.cast(tf.shape(y)[0] > 0, tf.float32)
    return tuple(m * one for m in matrices)
