"""Band-limit low-res input the way the training inputs were, when its band edge is not clean.

The model was trained on 4 kHz clips made by sox (``rate -h``), whose anti-alias filter leaves
(almost) nothing in the top few percent of the band. Files made by other resamplers
(``scipy.signal.resample_poly``, soxr's quick modes, many audio tools) keep content, and
aliases, right up to the Nyquist frequency; the model treats that as signal to extend and
loses several dB of SNR (below plain sinc interpolation). A zero-phase FIR low-pass at
``CUTOFF`` × Nyquist gives such input the band edge the model knows.

``"auto"`` applies it when the energy above ``EDGE`` × Nyquist is more than ``THRESHOLD_DB`` of
the total (sox-made inputs measure about -64 dB, -45 dB at most on LibriSpeech test-other;
resample_poly -42 to -19 dB, soxr "QQ" -31 to -15 dB). All frequencies here are fractions of
the Nyquist frequency, so the module works at any input rate.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

MODES = ("auto", "on", "off")
EDGE = 0.975
THRESHOLD_DB = -42.0
CUTOFF = 0.95
TAPS = 127


def edge_energy_db(x: np.ndarray) -> float:
    """Energy above ``EDGE`` × Nyquist relative to the total, in dB (-inf dB for silence).

    ``x``: mono ``[time]`` at any rate (Welch periodogram, 1024-sample segments).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 16:
        return float("-inf")
    freqs, psd = welch_psd(x, nperseg=min(1024, x.size))
    total = psd.sum()
    if total <= 0:
        return float("-inf")
    return float(10 * np.log10(max(psd[freqs >= EDGE].sum() / total, 1e-30)))


def welch_psd(x: np.ndarray, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.welch(x, fs=2.0, nperseg=nperseg)`` in numpy: ``(freqs, psd)``.

    Frequencies in Nyquist units; periodic Hann window, half overlap, per-segment mean
    removed, one-sided density. Numpy only: importing scipy.signal takes ~0.5-1 s, more
    than the lean runtime's whole start-up (test_runtime.py checks it equals scipy's).
    """
    step = nperseg - nperseg // 2
    starts = np.arange(0, x.size - nperseg + 1, step)
    segments = x[starts[:, None] + np.arange(nperseg)]
    segments = segments - segments.mean(axis=1, keepdims=True)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nperseg) / nperseg)
    psd = np.abs(np.fft.rfft(segments * window, axis=1)) ** 2
    psd = psd.mean(axis=0) / (2.0 * np.sum(window ** 2))  # fs = 2
    psd[1:-1 if nperseg % 2 == 0 else None] *= 2  # one-sided: double all but DC (and Nyquist)
    return np.fft.rfftfreq(nperseg, d=0.5), psd


def needs_lowpass(x: np.ndarray, mode: str) -> bool:
    """Whether ``mode`` ('auto' | 'on' | 'off': upsampling setting ``input_lowpass``, validated
    there) band-limits input whose (first) samples are ``x``."""
    return mode == "on" or (mode == "auto" and edge_energy_db(x) > THRESHOLD_DB)


def kaiser_lowpass(taps: int, cutoff: float) -> np.ndarray:
    """Linear-phase FIR low-pass, ``[taps]`` (odd), ``cutoff`` a fraction of Nyquist, Kaiser beta 8,
    unit gain at DC: ``scipy.signal.firwin(taps, cutoff, window=("kaiser", 8.0))`` in numpy
    (importing scipy.signal takes 0.5-1.5 s, more than the lean runtime's whole start-up)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, 8.0)
    return h / h.sum()


def lowpass_taps() -> np.ndarray:
    """The input band-limit filter: ``TAPS`` taps, cutoff ``CUTOFF`` × Nyquist."""
    return kaiser_lowpass(TAPS, CUTOFF)


def lowpass_stream(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Zero-phase low-pass of a stream of mono float32 blocks ``[time]``, block size free.

    The concatenated output equals ``np.convolve(x, lowpass_taps(), "same")`` of the whole
    signal (same length, no delay); memory is one block plus ``TAPS`` samples.
    """
    h = lowpass_taps()
    delay = (TAPS - 1) // 2
    history = np.zeros(TAPS - 1)  # the causal filter's last inputs (zeros before the signal)

    def causal(block: np.ndarray) -> np.ndarray:
        nonlocal history
        padded = np.concatenate([history, block])
        history = padded[-(TAPS - 1):]
        return np.convolve(padded, h, "valid")  # one output per input sample

    skip = delay  # the first `delay` outputs of the causal filter precede the signal
    for block in blocks:
        if len(block) == 0:
            continue
        y = causal(np.asarray(block, dtype=np.float64))
        drop = min(skip, y.size)
        skip -= drop
        if y.size > drop:
            yield y[drop:].astype(np.float32)
    tail = causal(np.zeros(delay))  # flush: the last `delay` outputs
    if skip < delay:  # something came in
        yield tail[skip:].astype(np.float32)
