"""tf.data input pipeline: clip pairs from the split CSVs -> batches of aligned patches.

A training element is ``(low_res [patch_length, 1], high_res [patch_length * factor, 1])``,
float32, cut at a random offset from one clip pair. Order and offsets depend only on
``(seed, epoch)``, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import tensorflow as tf

from speechsr.bandlimit import kaiser_lowpass
from speechsr.geometry import required_multiple
from speechsr.settings import ModelSettings, TrainingSettings
from speechsr.split import read_split_csv


def _load_pair(hr_path: bytes, lr_path: bytes) -> tuple[np.ndarray, np.ndarray]:
    hr, _ = sf.read(hr_path.decode(), dtype="float32", always_2d=True)
    lr, _ = sf.read(lr_path.decode(), dtype="float32", always_2d=True)
    return lr[:, :1], hr[:, :1]


def clip_pairs(csv_path: str) -> tuple[list[str], list[str]]:
    """(low-res paths, high-res paths) of a split CSV, checked to exist."""
    rows = read_split_csv(csv_path)
    if not rows:
        raise ValueError(f"{csv_path}: no clips listed")
    return [r["low_res"] for r in rows], [r["high_res"] for r in rows]


def _decode(hr_path, lr_path):
    lr, hr = tf.numpy_function(_load_pair, [hr_path, lr_path], [tf.float32, tf.float32])
    lr.set_shape([None, 1])
    hr.set_shape([None, 1])
    return lr, hr


LOWPASS_TAPS = 63
LOWPASS_BANK_SIZE = 8


def lowpass_bank(lowest: float, size: int = LOWPASS_BANK_SIZE, taps: int = LOWPASS_TAPS) -> np.ndarray:
    """Zero-phase FIR low-passes, float32 ``[size, taps]``, cutoffs evenly from ``lowest`` to 1.

    Cutoffs are fractions of the Nyquist frequency (:func:`speechsr.bandlimit.kaiser_lowpass`);
    the last filter (cutoff 1) is the identity, so some inputs stay as preprocessing made them.
    """
    bank = np.zeros((size, taps), np.float32)
    for i, cutoff in enumerate(np.linspace(lowest, 1.0, size)[:-1]):
        bank[i] = kaiser_lowpass(taps, cutoff)
    bank[-1, taps // 2] = 1.0
    return bank


def random_lowpass(lr: tf.Tensor, bank: tf.Tensor, rng: tf.Tensor) -> tf.Tensor:
    """``lr`` ``[time, 1]`` filtered by one filter of ``bank`` ``[size, taps]`` picked by ``rng``."""
    pick = tf.random.stateless_uniform([], rng, 0, tf.shape(bank)[0], dtype=tf.int32)
    kernel = tf.reshape(bank[pick], [-1, 1, 1])  # symmetric taps: correlation == convolution
    return tf.nn.conv1d(lr[None], kernel, stride=1, padding="SAME")[0]


def training_dataset(csv_path: str | os.PathLike, model_settings: ModelSettings,
                     training_settings: TrainingSettings, epoch: int) -> tf.data.Dataset:
    """One epoch of shuffled, batched patches (``drop_remainder``) for ``epoch``.

    From the training settings: ``patch_length`` (low-res samples; shorter clips are
    zero-padded), ``batch_size``, ``seed``, ``shuffle_buffer``; ``augment_gain_db`` > 0 applies
    the same random gain in +-dB to both twins; ``augment_lowpass_min`` > 0 low-passes each
    low-res clip (whole clip, before cropping) at a random cutoff between that fraction of its
    Nyquist frequency and Nyquist (:func:`lowpass_bank`), so the model also learns inputs whose
    anti-alias filter was gentler than sox's. The high-res twin is ``output_rate / input_rate``
    times longer.
    """
    ts = training_settings
    factor = model_settings.output_rate // model_settings.input_rate
    patch_length, gain_db, lowpass_min = ts.patch_length, ts.augment_gain_db, ts.augment_lowpass_min
    seed, batch_size, shuffle_buffer = ts.seed, ts.batch_size, ts.shuffle_buffer
    lr_paths, hr_paths = clip_pairs(csv_path)
    epoch_seed = seed * 1_000_003 + epoch
    bank = tf.constant(lowpass_bank(lowpass_min)) if lowpass_min > 0 else None

    def crop(index, pair):
        lr, hr = pair
        rng = tf.stack([tf.constant(epoch_seed, tf.int64), index])
        if bank is not None:
            lr = random_lowpass(lr, bank, rng + 13)
        need = patch_length - tf.shape(lr)[0]
        lr = tf.pad(lr, [[0, tf.maximum(need, 0)], [0, 0]])
        hr = tf.pad(hr, [[0, tf.maximum(need, 0) * factor], [0, 0]])
        span = tf.shape(lr, out_type=tf.int64)[0] - patch_length + 1
        offset = tf.random.stateless_uniform([], rng, 0, span, dtype=tf.int64)
        lr = lr[offset:offset + patch_length]
        hr = hr[offset * factor:(offset + patch_length) * factor]
        if gain_db > 0:
            g = tf.random.stateless_uniform([], rng + 7, -gain_db, gain_db)
            scale = tf.pow(10.0, g / 20.0)
            lr, hr = lr * scale, hr * scale
        return tf.ensure_shape(lr, [patch_length, 1]), tf.ensure_shape(hr, [patch_length * factor, 1])

    ds = tf.data.Dataset.from_tensor_slices((hr_paths, lr_paths))
    ds = ds.shuffle(len(hr_paths), seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.map(_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.shuffle(shuffle_buffer, seed=epoch_seed + 1, reshuffle_each_iteration=False)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def steps_in_epoch(csv_path: str, batch_size: int) -> int:
    """Batches per epoch of :func:`training_dataset` (one patch per clip)."""
    return len(clip_pairs(csv_path)[0]) // batch_size


def validation_clips(csv_path: str | os.PathLike, model_settings: ModelSettings,
                     training_settings: TrainingSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole validation clip pairs ``(lr [T], hr [T * factor])``, cut to a multiple of
    :func:`speechsr.geometry.required_multiple`; at most ``validation_max_clips``, evenly picked."""
    multiple, max_clips = required_multiple(model_settings), training_settings.validation_max_clips
    lr_paths, hr_paths = clip_pairs(csv_path)
    if max_clips is not None and len(lr_paths) > max_clips:
        pick = np.linspace(0, len(lr_paths) - 1, max_clips).round().astype(int)
        lr_paths, hr_paths = [lr_paths[i] for i in pick], [hr_paths[i] for i in pick]
    out = []
    for lp, hp in zip(lr_paths, hr_paths):
        lr, hr = _load_pair(hp.encode(), lp.encode())
        n = (len(lr) // multiple) * multiple
        factor = len(hr) // len(lr)
        out.append((lr[:n, 0], hr[:n * factor, 0]))
    return out
