"""A short-time Fourier transform built from matrix products, for layers that must export to LiteRT.

Waveforms ``[batch, time]`` at the output rate; frames of ``N_FFT`` (512) samples every ``hop``
samples (a divisor of ``N_FFT``), periodic Hann window; ``BINS`` = 257 one-sided bins. The
analysis is ``frames @ analysis`` (windowed cos, -sin), the synthesis ``spectrum @ synthesis`` then
overlap-add divided by the summed squared window (:func:`window_overlap`), so that analysis then
synthesis gives the input back where frames overlap fully. No FFT op: the LiteRT builtins have no
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


def window_overlap(spec: tf.Tensor, window_sq: tf.Tensor, hop: int) -> tf.Tensor:
    """The summed squared window ``[1, (F + N_FFT / hop - 1) * hop]`` under the frames of ``spec``
    ``[batch, F, ...]`` (``window_sq``: ``hann() ** 2`` as a tensor): synthesis divides by it."""
    return overlap_add(tf.ones_like(spec[:1, :, :1]) * window_sq, hop)
