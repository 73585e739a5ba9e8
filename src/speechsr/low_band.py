"""Keep the input's own band: the output below the input's Nyquist is the input, interpolated.

The low-res input already holds the band below its Nyquist frequency; a model that re-synthesises
it can only add error there. With model setting ``low_band_from_input`` the upsampler replaces the
model's low band by the input's sinc interpolation, so the model supplies only the band above:

    y_out = y_model + h * (factor * zero_stuffed(x) - y_model)

``h`` is a linear-phase Kaiser low-pass at the output rate whose transition runs from ``START`` to
``STOP`` × the input's Nyquist (-80 dB at ``STOP``): below ``START`` the output is the input's, above
``STOP`` the model's, and in between the two cross complementarily (their weights sum to 1). The
same ``h`` removes the zero-stuffing images, which begin above the input's Nyquist.

Applied per model window (:meth:`speechsr.inference.Upsampler._emit`) with zero padding at the
window's edges; :func:`context` (input samples) is added to the model's receptive context, so those
edges fall in the margins the cross-fade discards and streamed output equals whole-signal output.
Numpy only: it runs on the lean LiteRT path too. On the 8 -> 16 kHz model (peer set) it took SNR
from 18.9 to 20.9 dB (sinc 21.5) and LSD-LF from 0.45 to 0.38 (docs/peers.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from speechsr.bandlimit import kaiser_lowpass

#: the crossover, fractions of the input's Nyquist frequency: the input's below START, the model's above STOP
START, STOP = 0.90, 0.98
#: Kaiser (beta 8, about -80 dB) full transition width in fractions of Nyquist is about this / (taps - 1)
_KAISER8_WIDTH = 10.2


@functools.lru_cache(maxsize=8)
def crossover_taps(factor: int) -> np.ndarray:
    """The low-pass ``h`` at the output rate for upsampling by ``factor``: ``[taps]`` (odd), unit DC gain."""
    width = (STOP - START) / factor  # fraction of the output's Nyquist
    taps = 2 * math.ceil(_KAISER8_WIDTH / width / 2) + 1
    return kaiser_lowpass(taps, (START + STOP) / 2 / factor).astype(np.float64)


def context(factor: int) -> int:
    """Input samples on each side of an output point that the replacement reads (half of ``h``)."""
    return -(-(len(crossover_taps(factor)) // 2) // factor)


def _fast_length(n: int) -> int:
    """The smallest of 2^k, 3 * 2^k, 5 * 2^k at least ``n`` (cheap FFT sizes, at most 25 % padding)."""
    return min(m << max(0, (-(-n // m) - 1).bit_length()) for m in (1, 3, 5))


def replace(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Low band of ``y`` (``[n, T * factor]``) replaced by that of ``x`` (``[n, T]``, the same windows at
    the input rate); each row filtered on its own, zeros beyond its ends. Returns float32 ``[n, T * factor]``."""
    n, t = x.shape
    factor = y.shape[1] // t
    h = crossover_taps(factor)
    stuffed = np.zeros(y.shape, np.float64)
    stuffed[:, ::factor] = factor * x
    d = stuffed - y
    size = d.shape[1] + len(h) - 1
    nfft = _fast_length(size)
    full = np.fft.irfft(np.fft.rfft(d, nfft, axis=1) * np.fft.rfft(h, nfft), nfft, axis=1)
    half = len(h) // 2
    return (y + full[:, half:half + d.shape[1]]).astype(np.float32)
