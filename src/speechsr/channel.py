"""A telephone channel: how a phone line turns wideband speech into 8 kHz G.711 audio.

:meth:`TelephoneChannel.apply` takes mono ``[time]`` float audio at ``rate_in`` Hz (e.g. the
16 kHz target of a clip pair) and returns what a narrowband phone line delivers, float32
``[round(time * rate / rate_in)]`` at ``rate`` Hz (8000):

1. resample to ``rate`` Hz (soxr, very high quality);
2. band-pass to the telephone band ``low_hz``-``high_hz`` Hz (300-3400 Hz, ITU-T G.712-like):
   a linear-phase Kaiser-window FIR, zero delay, ``-6 dB`` at the edges, at least 60 dB down
   ``TRANSITION_HZ`` Hz outside them; each edge moved by a random amount in
   ``[-edge_jitter_hz, +edge_jitter_hz]`` Hz (drawn once per call);
3. per segment of ``segment`` output samples (a clip; the whole signal by default): a random
   gain in ``[-gain_db, +gain_db]`` dB and a codec drawn from ``codecs``;
4. G.711 coding and decoding (:func:`ulaw_encode`/:func:`alaw_encode`, the segmented 8-bit
   companding of ITU-T G.711 as in sox and Sun's ``g711.c``) of the 16-bit PCM samples;
   samples beyond full scale clip, as on a real line.

Everything random comes from ``numpy.random.default_rng(seed)``: the same seed gives the same
samples. :func:`clip_seed` derives a per-recording seed from a settings seed and a name.
"""

from __future__ import annotations

import dataclasses
import zlib
from functools import lru_cache

import numpy as np
import soxr

from speechsr.resamplers import RESAMPLERS

CODECS = ("ulaw", "alaw")
#: How reference mode and evaluate.py make the low-res input from high-res audio (``--channel``).
#: ``resamplers``: a resampler of :mod:`speechsr.resamplers` drawn per file (by name); a name of
#: :data:`speechsr.resamplers.RESAMPLERS` (``resample_poly``, ``soxr_qq``...) takes that one.
LOW_RES_CHANNELS = ("sox", "telephone", "resamplers")
#: How reference mode (``--channel``) may make the low-res input: a channel or one resampler by name.
EVALUATION_CHANNELS = LOW_RES_CHANNELS + tuple(k for k in RESAMPLERS if k not in LOW_RES_CHANNELS)
TELEPHONE_RATE = 8000  # Hz
#: Width (Hz) of the band-pass's transitions: full attenuation this far outside an edge.
TRANSITION_HZ = 200.0
#: Stop-band attenuation of the band-pass in dB.
STOPBAND_DB = 60.0

# G.711 segment ends (Sun Microsystems' public-domain g711.c, also used by sox).
_ULAW_SEG_END = np.array([0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_BIAS = 0x84


def to_pcm16(x: np.ndarray, bits: int = 16) -> np.ndarray:
    """Float samples in [-1, 1) -> int32 16-bit PCM values, rounded to ``bits`` bits and clipped.

    G.711 codes 14-bit (mu-law) or 13-bit (A-law) linear samples; sox rounds to those first.
    """
    scale = 2.0 ** (bits - 1)
    q = np.clip(np.floor(np.asarray(x, np.float64) * scale + 0.5), -scale, scale - 1)  # half up, as sox
    return (q * 2 ** (16 - bits)).astype(np.int32)


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """16-bit PCM values (int) -> G.711 mu-law codes (uint8)."""
    pcm = np.asarray(pcm, np.int32)
    neg = pcm < 0
    mag = np.where(neg, _ULAW_BIAS - pcm, pcm + _ULAW_BIAS)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    mask = np.where(neg, 0x7F, 0xFF)
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 3)) & 0xF))
    return (code ^ mask).astype(np.uint8)


def ulaw_decode(code: np.ndarray) -> np.ndarray:
    """G.711 mu-law codes -> 16-bit PCM values (int32)."""
    u = ~np.asarray(code, np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int32)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """16-bit PCM values (int) -> G.711 A-law codes (uint8)."""
    pcm = np.asarray(pcm, np.int32) >> 3
    pos = pcm >= 0
    mask = np.where(pos, 0xD5, 0x55)
    mag = np.where(pos, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    s = np.minimum(seg, 7)
    mant = np.where(s < 2, mag >> 1, mag >> np.maximum(s, 1)) & 0xF
    code = np.where(seg >= 8, 0x7F, (s << 4) | mant)
    return (code ^ mask).astype(np.uint8)


def alaw_decode(code: np.ndarray) -> np.ndarray:
    """G.711 A-law codes -> 16-bit PCM values (int32)."""
    a = np.asarray(code, np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int32)


def g711_roundtrip(x: np.ndarray, codec: str) -> np.ndarray:
    """Float ``[time]`` -> 16-bit PCM -> 8-bit ``codec`` ('ulaw'|'alaw') -> float32 ``[time]``."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    enc, dec = (ulaw_encode, ulaw_decode) if codec == "ulaw" else (alaw_encode, alaw_decode)
    return (dec(enc(to_pcm16(x, 14 if codec == "ulaw" else 13))) / 32768.0).astype(np.float32)


@lru_cache(maxsize=64)
def bandpass_taps(low_hz: float, high_hz: float, rate: int) -> np.ndarray:
    """Odd-length linear-phase band-pass FIR (Kaiser window) for ``rate`` Hz, cut-offs in Hz."""
    from scipy import signal  # lazily: settings imports this module, and scipy.signal stays off the lean path
    numtaps, beta = signal.kaiserord(STOPBAND_DB, 2 * TRANSITION_HZ / rate)
    numtaps |= 1
    return signal.firwin(numtaps, [low_hz, high_hz], pass_zero=False, fs=rate, window=("kaiser", beta))


def clip_seed(seed: int, name: str) -> int:
    """A reproducible per-recording seed from a settings ``seed`` and a recording ``name``."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % 2 ** 32


@dataclasses.dataclass(frozen=True)
class TelephoneChannel:
    """Telephone-line parameters (see the module docstring). Rates and edges in Hz, gain in dB."""
    low_hz: float = 300.0
    high_hz: float = 3400.0
    rate: int = 8000
    codecs: tuple = CODECS
    gain_db: float = 0.0
    edge_jitter_hz: float = 0.0

    def __post_init__(self):
        if not 0 < self.low_hz < self.high_hz < self.rate / 2:
            raise ValueError(f"telephone band must satisfy 0 < low < high < rate/2, got "
                             f"{self.low_hz:g}-{self.high_hz:g} Hz at {self.rate} Hz")
        if not self.codecs or any(c not in CODECS for c in self.codecs):
            raise ValueError(f"codecs must be a non-empty subset of {CODECS}, got {self.codecs!r}")
        if self.gain_db < 0 or self.edge_jitter_hz < 0:
            raise ValueError("gain_db and edge_jitter_hz must be >= 0")

    def apply(self, x: np.ndarray, rate_in: int, seed: int = 0, segment: int | None = None) -> np.ndarray:
        """Mono ``[time]`` at ``rate_in`` Hz -> float32 ``[round(time * rate / rate_in)]`` at ``rate`` Hz.

        ``segment``: output samples per gain/codec draw (None: one draw for the whole signal).
        """
        rng = np.random.default_rng(seed)
        x = np.asarray(x, np.float32)
        n = int(round(len(x) * self.rate / rate_in))
        y = soxr.resample(x, rate_in, self.rate, quality="VHQ") if rate_in != self.rate else x.copy()
        y = np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float64)
        j = self.edge_jitter_hz
        low = self.low_hz + (rng.uniform(-j, j) if j else 0.0)
        high = self.high_hz + (rng.uniform(-j, j) if j else 0.0)
        low = float(np.clip(low, 20.0, self.rate / 2 - 2 * TRANSITION_HZ))
        high = float(np.clip(high, low + TRANSITION_HZ, self.rate / 2 - TRANSITION_HZ))
        if n:
            from scipy import signal  # lazily: see bandpass_taps
            taps = bandpass_taps(round(low, 1), round(high, 1), self.rate)
            y = signal.oaconvolve(y, taps, mode="full")[len(taps) // 2:len(taps) // 2 + n]
        out = np.empty(n, np.float32)
        step = segment or max(n, 1)
        for start in range(0, n, step):
            gain = 10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20) if self.gain_db else 1.0
            codec = self.codecs[rng.integers(len(self.codecs))]
            out[start:start + step] = g711_roundtrip(y[start:start + step] * gain, codec)
        return out

    def describe(self) -> str:
        """One line: band, rate, codecs, variations."""
        extra = (f", gain +-{self.gain_db:g} dB" if self.gain_db else "") + \
                (f", band edges +-{self.edge_jitter_hz:g} Hz" if self.edge_jitter_hz else "")
        return (f"telephone channel {self.low_hz:g}-{self.high_hz:g} Hz, {self.rate} Hz, "
                f"G.711 {'/'.join(self.codecs)}{extra}")


def from_clip_params(p: dict) -> TelephoneChannel:
    """The channel of data settings' keys (``telephone_*``, ``downsample_rate``) as a dict
    (:func:`speechsr.splicing.clip_params`)."""
    low, high = p["telephone_band_hz"]
    return TelephoneChannel(low_hz=float(low), high_hz=float(high), rate=p["downsample_rate"],
                            codecs=tuple(p["telephone_codecs"]), gain_db=float(p["telephone_gain_db"]),
                            edge_jitter_hz=float(p["telephone_edge_jitter_hz"]))
