"""Which path an input takes to 16 kHz: the 4x model, the 8k model, the telephony model, or sinc.

Routing is by content, not by rate. Every entry point (``upsample_audio_file.py`` for files and
streams, ``evaluate.py``, :mod:`speechsr.api`, the batch job) asks :func:`choose` (or
:func:`choose_for_file`) with the input's first samples and loads the answer with :func:`load_route`:

- ``--model`` (an explicit model) always wins;
- input sampled at 4 kHz or below, or whose content stops below about 2 kHz (less than
  ``TELEPHONE_BAND_DB`` above ``NARROW_EDGE_HZ``) at any rate: the 4x model (upsampling setting
  ``model``, ``models/pretrained/model.keras``);
- telephone speech: G.711 coded (a mu-law/A-law file, or samples that all lie on the G.711
  grid), or band-limited to the phone band (less than ``PHONE_LOW_DB`` below ``PHONE_LOW_HZ``
  and less than ``PHONE_HIGH_DB`` above ``PHONE_HIGH_HZ``): the telephony model
  :data:`TELEPHONY_MODEL` when it exists, else sinc interpolation of the 8 kHz signal;
- full-band 8 kHz content (sampled at up to 8 kHz, or higher with content that stops at about
  4 kHz, and not telephone speech): the 8k model :data:`FULLBAND_8K_MODEL` when it exists, else
  sinc interpolation (soxr VHQ, :class:`SincUpsampler`), which is never worse than sinc;
- anything else (wideband input): the 4x model, whose input check refuses it
  (:func:`speechsr.files.check_input_band`).

When in doubt between telephone and full-band, the full-band path is taken: the telephony model
restores a band below 300 Hz and on full-band input doubles it (measured: about 13 dB louder,
SNR -14 dB on the peer set), while the 8k path on phone speech stays near sinc. The thresholds
were set on LibriSpeech train-clean-100 through the telephone channel and eight resamplers
(model card of the 8k model). Each choice is logged in one line (logger ``speechsr``):
at info level for 4 kHz input to the 4x model, else as a warning, shown by default.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import types
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soxr

from speechsr import audio, bandlimit, channel, loading, settings
from speechsr.channel import TELEPHONE_RATE

log = logging.getLogger("speechsr")

#: The telephony model (8 kHz -> 16 kHz), relative to the project root.
TELEPHONY_MODEL = "models/pretrained-telephony/model.keras"
#: The 8k model (full-band 8 kHz speech -> 16 kHz), relative to the project root.
FULLBAND_8K_MODEL = "models/pretrained-8k/model.keras"
#: The fast 4x model (16x smaller U-Net, ~4x the default's speed), relative to the project root.
FAST_MODEL = "models/pretrained-fast/model.keras"
#: Names ``--model`` and ``speechsr.load_model`` take besides paths: ``pretrained`` (the
#: default settings' 4x model), ``fast`` (:data:`FAST_MODEL`), ``8k`` (:data:`FULLBAND_8K_MODEL`)
#: and ``telephony`` (:data:`TELEPHONY_MODEL`).
MODEL_NAMES = ("pretrained", "fast", "8k", "telephony")
OUTPUT_RATE = 16000
#: Content above this (Hz) marks input beyond the 4x model's 2 kHz band.
NARROW_EDGE_HZ = 2200.0
TELEPHONE_BAND_DB = -40.0
#: Content above this (Hz) marks wideband input (phone lines and 8 kHz files stop at 3.4-4 kHz).
WIDEBAND_EDGE_HZ = 4200.0
WIDEBAND_DB = -30.0
#: The phone band's edges: energy below PHONE_LOW_HZ under PHONE_LOW_DB of the total and energy
#: between PHONE_HIGH_HZ and WIDEBAND_EDGE_HZ under PHONE_HIGH_DB. On train-clean-100 (60 files)
#: phone speech (G.711, edges exact / moved by up to 100 Hz) met both in 100 % / 75 % of files,
#: full-band 8 kHz speech from any of eight resamplers in none (its low band: -21 dB at least).
PHONE_LOW_HZ, PHONE_LOW_DB = 250.0, -22.0
PHONE_HIGH_HZ, PHONE_HIGH_DB = 3500.0, -33.0
#: Seconds of a file measured for the choice; a stream is routed on its first STREAM_PROBE_SECONDS.
PROBE_SECONDS = 60.0
STREAM_PROBE_SECONDS = 4.0
#: Said when ``--model telephony`` is given full-band input (measured on the 8 kHz peer set).
TELEPHONY_ON_FULL_BAND = ("; but this input has content below 250 Hz (full-band 8 kHz speech, not a phone call): the "
                          "telephony model adds a second low band to it (+18 to +21 dB below 300 Hz, clipping, "
                          "measured); leave --model out for the full-band path")
#: Input classes of :func:`classify`.
CLASSES = ("4x", "telephone", "fullband_8k", "wideband")


@dataclasses.dataclass(frozen=True)
class Route:
    """The chosen path: ``kind`` 'model' (a ``.keras`` at ``model_path``) or 'sinc'; ``reason`` says why;
    ``telephone``: the input was judged telephone speech; ``input_class``: one of :data:`CLASSES`;
    ``plain``: the expected case (4 kHz input to the 4x model, or a model given), logged at info level."""
    kind: str
    model_path: Path | None
    reason: str
    telephone: bool = False
    input_class: str = "4x"
    plain: bool = False

    def describe(self) -> str:
        what = f"model {settings.shown_path(self.model_path)}" if self.kind == "model" else \
            f"sinc interpolation (soxr) {TELEPHONE_RATE} -> {OUTPUT_RATE} Hz"
        return f"{what} ({self.reason})"


def _shipped_path(relative: str) -> Path:
    """A shipped model's path: in a clone under the project root; an installed wheel keeps
    ``models/pretrained-NAME/`` in the package ``speechsr.models.pretrained_NAME`` (a package name has no '-')."""
    if settings.INSTALLED:
        return settings.PROJECT_ROOT / relative.replace("pretrained-", "pretrained_")
    return settings.project_path(relative)


def default_model_path() -> Path:
    """The 4x model of the default upsampling settings (setting ``model``)."""
    return settings.project_path(settings.load("upsampling", settings.DEFAULT_SETTINGS_DIR).model)


def telephony_model_path() -> Path:
    """Where the shipped telephony model lives (it may not exist yet)."""
    return _shipped_path(TELEPHONY_MODEL)


def fullband_8k_model_path() -> Path:
    """Where the shipped 8k model lives (it may not exist yet)."""
    return _shipped_path(FULLBAND_8K_MODEL)


def named_model_path(name: str | os.PathLike, default_model: str | os.PathLike | None = None) -> Path:
    """The ``.keras`` path of a model name of :data:`MODEL_NAMES` (``pretrained``: ``default_model``,
    else the default settings' model); anything else is a path and comes back as given."""
    if str(name) == "pretrained":
        return Path(default_model) if default_model is not None else default_model_path()
    if str(name) == "fast":
        return _shipped_path(FAST_MODEL)
    if str(name) == "8k":
        return fullband_8k_model_path()
    if str(name) == "telephony":
        return telephony_model_path()
    return Path(name)


def band_profile(x: np.ndarray, rate: int) -> dict:
    """Energy of mono ``x`` (``[time]`` at ``rate`` Hz) in dB of the total: above ``NARROW_EDGE_HZ``
    (``above_narrow_db``), above ``WIDEBAND_EDGE_HZ`` (``above_wide_db``), below ``PHONE_LOW_HZ``
    (``below_phone_db``) and from ``PHONE_HIGH_HZ`` to ``WIDEBAND_EDGE_HZ`` (``phone_top_db``), and
    the frequency below which 99.9 % of it lies (``content_khz``); empty for silence."""
    x = np.asarray(x, np.float64)
    if x.size < 16:
        return {}
    freqs, psd = bandlimit.welch_psd(x, nperseg=min(4096, x.size))
    freqs = freqs * rate / 2  # Nyquist units -> Hz
    total = psd.sum()
    if total <= 0:
        return {}

    def rel_db(mask: np.ndarray) -> float:
        return float(10 * np.log10(max(psd[mask].sum() / total, 1e-30)))

    return {"above_narrow_db": rel_db(freqs > NARROW_EDGE_HZ), "above_wide_db": rel_db(freqs > WIDEBAND_EDGE_HZ),
            "below_phone_db": rel_db(freqs < PHONE_LOW_HZ),
            "phone_top_db": rel_db((freqs > PHONE_HIGH_HZ) & (freqs <= WIDEBAND_EDGE_HZ)),
            "content_khz": float(freqs[np.searchsorted(np.cumsum(psd) / total, 0.999)]) / 1000}


@functools.lru_cache(maxsize=1)
def _g711_grids() -> dict:
    codes = np.arange(256)
    return {"mu-law": np.unique(channel.ulaw_decode(codes)), "A-law": np.unique(channel.alaw_decode(codes))}


def g711_coding(x: np.ndarray, min_samples: int = 1000) -> str | None:
    """'mu-law' or 'A-law' when every sample of ``x`` (float, full scale 1.0) is a G.711 decoded
    value (decoded phone audio stored as 16-bit PCM or float), else None. Needs ``min_samples``
    samples above the grid's finest steps (|x| > 64/32768), so near-silence never qualifies."""
    v = np.asarray(x, np.float64) * 32768.0
    if np.count_nonzero(np.abs(v) > 64) < min_samples:
        return None
    ints = np.rint(v)
    if np.max(np.abs(v - ints)) > 1e-3:
        return None
    for name, grid in _g711_grids().items():
        if np.isin(ints, grid).all():
            return name
    return None


def classify(rate: int, x: np.ndarray | None = None, subtype: str | None = None) -> tuple[str, str]:
    """``(input class, reason)`` for audio sampled at ``rate`` Hz: a class of :data:`CLASSES`.

    ``x``: its first samples (mono, same rate), or None (then judged by rate alone: up to 8 kHz
    is taken as full-band 8 kHz speech, the safe guess); ``subtype``: the file's sample format
    (``ULAW``/``ALAW`` mark telephone audio).
    """
    if rate <= 4000:
        return "4x", f"sampled at {rate} Hz"
    if subtype in ("ULAW", "ALAW"):
        coding = "mu-law" if subtype == "ULAW" else "A-law"
        return "telephone", f"sampled at {rate} Hz, G.711 {coding} coded (telephone band)"
    if x is None:
        if rate <= TELEPHONE_RATE:
            return "fullband_8k", f"sampled at {rate} Hz (content not measured)"
        return "wideband", f"sampled at {rate} Hz"
    p = band_profile(x, rate)
    if not p:
        return ("fullband_8k" if rate <= TELEPHONE_RATE else "wideband"), f"sampled at {rate} Hz, silent start"
    if p["above_wide_db"] > WIDEBAND_DB and rate > TELEPHONE_RATE:
        return "wideband", f"sampled at {rate} Hz with content up to {p['content_khz']:.1f} kHz (wideband)"
    if p["above_narrow_db"] <= TELEPHONE_BAND_DB:
        return "4x", f"sampled at {rate} Hz but its content stops at {p['content_khz']:.1f} kHz"
    coding = g711_coding(x)
    if coding:
        return "telephone", f"sampled at {rate} Hz, G.711 {coding} samples (telephone band)"
    if p["below_phone_db"] < PHONE_LOW_DB and p["phone_top_db"] < PHONE_HIGH_DB:
        return "telephone", (f"sampled at {rate} Hz with content from {PHONE_LOW_HZ / 1000:g} to "
                             f"{p['content_khz']:.1f} kHz (telephone band)")
    return "fullband_8k", (f"sampled at {rate} Hz with content from below {PHONE_LOW_HZ:g} Hz up to "
                           f"{p['content_khz']:.1f} kHz (full-band 8 kHz speech)")


def choose(rate: int | None = None, head: np.ndarray | None = None, model: str | os.PathLike | None = None,
           default_model: str | os.PathLike | None = None, telephone: bool | None = None,
           telephony_model: str | os.PathLike | None = None, subtype: str | None = None,
           fullband_model: str | os.PathLike | None = None) -> Route:
    """The route for input at ``rate`` Hz whose first samples are ``head`` (mono, same rate) and
    whose file sample format is ``subtype`` (or None).

    ``model``: an explicit model (``--model``: a path or a name of :data:`MODEL_NAMES`), always
    used. ``default_model``: the 4x model (default: the default upsampling settings' ``model``).
    ``telephone``: skip the measurement (True for input made by the telephone channel, False for
    sox-made 4 kHz input). ``telephony_model`` / ``fullband_model``: default
    :func:`telephony_model_path` / :func:`fullband_8k_model_path`.
    """
    if model is not None:
        path = named_model_path(model, default_model)
        named = {"telephony": "telephone", "8k": "fullband_8k"}.get(str(model), "4x")
        reason = "model given" + (f" ({model})" if str(model) in MODEL_NAMES else "")
        if str(model) == "telephony" and head is not None and classify(int(rate), head, subtype)[0] == "fullband_8k":
            return Route("model", path, reason + TELEPHONY_ON_FULL_BAND, True, named)  # logged as a warning
        return Route("model", path, reason, str(model) == "telephony", named, plain=True)
    if default_model is None:
        default_model = default_model_path()
    if telephone is None:
        input_class, reason = classify(int(rate), head, subtype)
    else:
        input_class = "telephone" if telephone else "4x"
        reason = "telephone channel input" if telephone else "sox-downsampled input"
    if input_class in ("4x", "wideband"):
        plain = telephone is not None or (rate is not None and int(rate) <= 4000)
        return Route("model", Path(default_model), reason, input_class=input_class, plain=plain)
    if input_class == "telephone":
        tel = Path(telephony_model) if telephony_model is not None else telephony_model_path()
        if tel.is_file():
            return Route("model", tel, f"{reason}: telephony model", True, input_class)
        return Route("sinc", None, f"{reason}; no telephony model at {tel}: plain sinc to {OUTPUT_RATE} Hz, "
                                   "better on phone speech than the 4x model's 2 kHz input", True, input_class)
    full = Path(fullband_model) if fullband_model is not None else fullband_8k_model_path()
    if full.is_file():
        return Route("model", full, f"{reason}: 8k model", input_class=input_class)
    return Route("sinc", None, f"{reason}; no 8k model at {full}: plain sinc to {OUTPUT_RATE} Hz",
                 input_class=input_class)


def choose_for_file(path: str | os.PathLike, **kwargs) -> Route:
    """:func:`choose` for an audio file, measured on its first ``PROBE_SECONDS`` at its own rate."""
    info = audio.audio_info(path)
    head = None
    measured = kwargs.get("model") is None or str(kwargs.get("model")) == "telephony"  # the latter: a warning
    if measured and kwargs.get("telephone") is None and info.samplerate > 4000:
        head, _ = audio.read_audio(path, stop=min(PROBE_SECONDS, info.frames / info.samplerate))
    return choose(info.samplerate, head, subtype=info.subtype, **kwargs)


def log_route(route: Route, name) -> None:
    """The one log line of a choice: info for the plain case (4 kHz input to the 4x model, a model
    given), a warning otherwise (the content chose another path, shown by default)."""
    log.log(logging.INFO if route.plain else logging.WARNING, "%s: %s", name, route.describe())


class SincUpsampler:
    """8 kHz -> 16 kHz by soxr's VHQ sinc interpolation, usable where an
    :class:`speechsr.inference.Upsampler` is (``stream``, ``upsample``, ``warmup``...)."""

    runtime = "sinc"
    input_lowpass = "off"

    def __init__(self, input_rate: int = TELEPHONE_RATE, output_rate: int = OUTPUT_RATE):
        self.input_rate, self.output_rate = input_rate, output_rate
        self.factor = output_rate // input_rate
        self.settings = types.SimpleNamespace(input_rate=input_rate, output_rate=output_rate)
        self.window = 2048  # samples read ahead by speechsr.pipes before the first output

    def describe(self) -> str:
        return f"sinc interpolation (soxr VHQ) {self.input_rate} -> {self.output_rate} Hz"

    def warmup(self) -> float:
        return 0.0

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Low-res blocks ``[time]`` -> output blocks; exactly ``factor`` x the input samples in all."""
        rs = soxr.ResampleStream(self.input_rate, self.output_rate, 1, dtype="float32", quality="VHQ")
        n_in = n_out = 0
        for block in blocks:
            block = np.asarray(block, np.float32).reshape(-1)
            if not np.all(np.isfinite(block)):
                raise ValueError("input contains NaN or infinite samples")
            n_in += block.size
            y = rs.resample_chunk(block, last=False)
            y = y[:max(0, n_in * self.factor - n_out)]
            n_out += y.size
            if y.size:
                yield y
        tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)[:max(0, n_in * self.factor - n_out)]
        tail = np.pad(tail, (0, n_in * self.factor - n_out - tail.size)).astype(np.float32)
        if tail.size:
            yield tail

    def upsample(self, x: np.ndarray) -> np.ndarray:
        out = list(self.stream([x]))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def load_route(route: Route, up, subpixel: str | None = None, runtime: str = "auto"):
    """The upsampler of a route: :func:`speechsr.loading.load_upsampler` or :class:`SincUpsampler`."""
    if route.kind == "sinc":
        return SincUpsampler()
    return loading.load_upsampler(route.model_path, up, subpixel, runtime)
