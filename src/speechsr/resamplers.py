"""The resamplers real low-rate files are made with, so a model does not depend on one anti-alias filter.

:func:`downsample` turns mono ``[time]`` float audio at ``rate_in`` Hz into
``[round(time * rate_out / rate_in)]`` float32 at ``rate_out`` Hz with one of :data:`RESAMPLERS`:

- ``sox``: sox ``rate -h`` (how preprocessing makes 4 kHz twins; :func:`speechsr.audio.sox_downsample`);
- ``soxr_vhq`` / ``soxr_hq`` / ``soxr_mq`` / ``soxr_lq`` / ``soxr_qq``: soxr at very high, high,
  medium, low and quick quality (the quick modes keep content and aliases up to Nyquist);
- ``resample_poly``: scipy's polyphase resampler with its default Kaiser window (beta 5);
- ``hann_sinc``: a Hann-windowed sinc of 6 zero crossings with roll-off 0.99, like torchaudio's
  default ``sinc_interp_hann``.

:func:`choose` draws one per recording from a list, seeded by a name, so a corpus made twice is
the same.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import soxr

RESAMPLERS = ("sox", "soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq", "resample_poly", "hann_sinc")
_SOXR_QUALITY = {"soxr_vhq": "VHQ", "soxr_hq": "HQ", "soxr_mq": "MQ", "soxr_lq": "LQ", "soxr_qq": "QQ"}
#: torchaudio's defaults for its Hann-windowed sinc.
HANN_ZERO_CROSSINGS = 6
HANN_ROLLOFF = 0.99


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, np.float32).reshape(-1)
    return np.pad(y, (0, max(0, n - y.size)))[:n]


def hann_sinc_taps(up: int, down: int) -> np.ndarray:
    """FIR taps of the Hann-windowed sinc low-pass for a polyphase ``up``/``down`` resampler:
    cut-off ``HANN_ROLLOFF`` x the lower Nyquist, ``HANN_ZERO_CROSSINGS`` zero crossings each side."""
    step = max(up, down)
    half = int(math.ceil(HANN_ZERO_CROSSINGS * step / HANN_ROLLOFF))
    t = np.arange(-half, half + 1) / step * HANN_ROLLOFF  # in zero crossings of the cut-off
    window = np.cos(np.pi * np.clip(t / (2 * HANN_ZERO_CROSSINGS), -0.5, 0.5)) ** 2
    return (HANN_ROLLOFF * up / step * np.sinc(t) * window).astype(np.float64)


def downsample(x: np.ndarray, rate_in: int, rate_out: int, kind: str = "soxr_vhq") -> np.ndarray:
    """``x`` (mono ``[time]`` at ``rate_in`` Hz) at ``rate_out`` Hz by resampler ``kind``."""
    x = np.asarray(x, np.float32).reshape(-1)
    n = int(round(x.size * rate_out / rate_in))
    if kind == "sox":
        from speechsr.audio import sox_downsample  # sox command line
        return sox_downsample(x, rate_in, rate_out)
    if kind in _SOXR_QUALITY:
        return _fit(soxr.resample(x, rate_in, rate_out, quality=_SOXR_QUALITY[kind]), n)
    if kind in ("resample_poly", "hann_sinc"):
        from scipy.signal import resample_poly  # scipy.signal: slow to import, only here
        g = math.gcd(rate_in, rate_out)
        up, down = rate_out // g, rate_in // g
        window = ("kaiser", 5.0) if kind == "resample_poly" else hann_sinc_taps(up, down)
        return _fit(resample_poly(x.astype(np.float64), up, down, window=window), n)
    raise ValueError(f"resampler must be one of {', '.join(RESAMPLERS)}, got {kind!r}")


def choose(kinds: list[str] | tuple[str, ...], name: str, seed: int = 0) -> str:
    """One of ``kinds`` for the recording ``name``, the same every time for the same seed."""
    if not kinds:
        raise ValueError("no resampler to choose from")
    return kinds[np.random.default_rng([seed, zlib.crc32(name.encode())]).integers(len(kinds))]
