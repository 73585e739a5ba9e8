"""Which path an input takes to 16 kHz: the 4x model, the telephony model, or sinc interpolation.

Every entry point (``upsample_audio_file.py``, ``evaluate.py``, :mod:`speechsr.api`) asks
:func:`choose` (or :func:`choose_for_file`) and loads the answer with :func:`load_route`:

- ``--model`` (an explicit model) always wins;
- input sampled at 4 kHz or below, or whose content stops below about 2 kHz: the 4x model
  (upsampling setting ``model``, ``models/pretrained/model.keras``);
- telephone-band input: sampled at 8 kHz (above 4 kHz, at most 8 kHz) with content above
  ``NARROW_EDGE_HZ``, or sampled higher with content that stops near 3.4-4 kHz (more than
  ``TELEPHONE_BAND_DB`` above ``NARROW_EDGE_HZ``, less than ``WIDEBAND_DB`` above
  ``WIDEBAND_EDGE_HZ``): the telephony model :data:`TELEPHONY_MODEL` (8 kHz -> 16 kHz) when it
  exists, else plain sinc interpolation (soxr VHQ, :class:`SincUpsampler`) of the 8 kHz signal,
  which scores better on phone speech than low-passing it to 2 kHz for the 4x model
  (test-other through a telephone channel: ViSQOL 2.93 against 1.68);
- anything else (wideband input): the 4x model, whose input check refuses it
  (:func:`speechsr.files.check_input_band`).

Each choice is logged in one line (logger ``speechsr``): telephone routes as warnings, since
they differ from the default model, others at info level.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soxr

from speechsr import audio, bandlimit, loading, settings
from speechsr.channel import TELEPHONE_RATE

log = logging.getLogger("speechsr")

#: The telephony model (8 kHz -> 16 kHz), relative to the project root.
TELEPHONY_MODEL = "models/pretrained-telephony/model.keras"
#: The fast 4x model (16x smaller U-Net, ~4x the default's speed), relative to the project root.
FAST_MODEL = "models/pretrained-fast/model.keras"
#: Names ``--model`` and ``speechsr.load_model`` take besides paths: ``pretrained`` (the
#: default settings' 4x model), ``fast`` (:data:`FAST_MODEL`) and ``telephony`` (:data:`TELEPHONY_MODEL`).
MODEL_NAMES = ("pretrained", "fast", "telephony")
OUTPUT_RATE = 16000
#: Content above this (Hz) marks telephone-band input; a 4 kHz-sampled signal has none.
NARROW_EDGE_HZ = 2200.0
TELEPHONE_BAND_DB = -40.0
#: Content above this (Hz) marks wideband input (phone lines stop at 3.4-4 kHz).
WIDEBAND_EDGE_HZ = 4200.0
WIDEBAND_DB = -30.0
#: Seconds of a file measured for the choice.
PROBE_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Route:
    """The chosen path: ``kind`` 'model' (a ``.keras`` at ``model_path``) or 'sinc'; ``reason`` says why;
    ``telephone``: the input was judged telephone-band (8 kHz) audio."""
    kind: str
    model_path: Path | None
    reason: str
    telephone: bool = False

    def describe(self) -> str:
        what = f"model {self.model_path}" if self.kind == "model" else \
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


def named_model_path(name: str | os.PathLike, default_model: str | os.PathLike | None = None) -> Path:
    """The ``.keras`` path of a model name of :data:`MODEL_NAMES` (``pretrained``: ``default_model``,
    else the default settings' model); anything else is a path and comes back as given."""
    if str(name) == "pretrained":
        return Path(default_model) if default_model is not None else default_model_path()
    if str(name) == "fast":
        return _shipped_path(FAST_MODEL)
    if str(name) == "telephony":
        return telephony_model_path()
    return Path(name)


def band_profile(x: np.ndarray, rate: int) -> dict:
    """Energy of mono ``x`` (``[time]`` at ``rate`` Hz) above the two edges, in dB of the total,
    and the frequency below which 99.9 % of it lies (``content_khz``); empty for silence."""
    x = np.asarray(x, np.float64)
    if x.size < 16:
        return {}
    freqs, psd = bandlimit.welch_psd(x, nperseg=min(4096, x.size))
    freqs = freqs * rate / 2  # Nyquist units -> Hz
    total = psd.sum()
    if total <= 0:
        return {}

    def rel_db(lo_hz: float) -> float:
        return float(10 * np.log10(max(psd[freqs > lo_hz].sum() / total, 1e-30)))

    return {"above_narrow_db": rel_db(NARROW_EDGE_HZ), "above_wide_db": rel_db(WIDEBAND_EDGE_HZ),
            "content_khz": float(freqs[np.searchsorted(np.cumsum(psd) / total, 0.999)]) / 1000}


def classify(rate: int, x: np.ndarray | None = None) -> tuple[bool, str]:
    """``(telephone, reason)`` for audio sampled at ``rate`` Hz (``x``: its first samples, or None)."""
    if rate <= 4000:
        return False, f"sampled at {rate} Hz"
    if x is None:
        tel = rate <= TELEPHONE_RATE
        return tel, f"sampled at {rate} Hz" + (" (telephone rate)" if tel else "")
    p = band_profile(x, rate)
    if not p:
        return rate <= TELEPHONE_RATE, f"sampled at {rate} Hz, silent start"
    if p["above_wide_db"] > WIDEBAND_DB and rate > TELEPHONE_RATE:
        return False, f"sampled at {rate} Hz with content up to {p['content_khz']:.1f} kHz (wideband)"
    if p["above_narrow_db"] > TELEPHONE_BAND_DB:
        return True, f"sampled at {rate} Hz with content up to {p['content_khz']:.1f} kHz (telephone band)"
    return False, f"sampled at {rate} Hz but its content stops at {p['content_khz']:.1f} kHz"


def choose(rate: int | None = None, head: np.ndarray | None = None, model: str | os.PathLike | None = None,
           default_model: str | os.PathLike | None = None, telephone: bool | None = None,
           telephony_model: str | os.PathLike | None = None) -> Route:
    """The route for input at ``rate`` Hz whose first samples are ``head`` (mono, same rate).

    ``model``: an explicit model (``--model``: a path or a name of :data:`MODEL_NAMES`), always
    used. ``default_model``: the 4x model
    (default: the default upsampling settings' ``model``). ``telephone``: skip the measurement
    (True for input made by the telephone channel). ``telephony_model``: default
    :func:`telephony_model_path`.
    """
    if model is not None:
        path = named_model_path(model, default_model)
        return Route("model", path, "model given" + (f" ({model})" if str(model) in MODEL_NAMES else ""),
                     str(model) == "telephony")
    if default_model is None:
        default_model = default_model_path()
    if telephone is None:
        telephone, reason = classify(int(rate), head)
    else:
        reason = "telephone channel input" if telephone else "sox-downsampled input"
    if not telephone:
        return Route("model", Path(default_model), reason)
    tel = Path(telephony_model) if telephony_model is not None else telephony_model_path()
    if tel.is_file():
        return Route("model", tel, f"{reason}: telephony model", True)
    return Route("sinc", None, f"{reason}; no telephony model at {tel}: plain sinc to {OUTPUT_RATE} Hz, better "
                               "on phone speech than the 4x model's 2 kHz input", True)


def choose_for_file(path: str | os.PathLike, **kwargs) -> Route:
    """:func:`choose` for an audio file, measured on its first ``PROBE_SECONDS`` at its own rate."""
    info = audio.audio_info(path)
    head = None
    if kwargs.get("model") is None and kwargs.get("telephone") is None and info.samplerate > 4000:
        head, _ = audio.read_audio(path, stop=min(PROBE_SECONDS, info.frames / info.samplerate))
    return choose(info.samplerate, head, **kwargs)


def log_route(route: Route, name) -> None:
    """The one log line of a choice: a warning for telephone routes, info otherwise."""
    log.log(logging.WARNING if route.telephone else logging.INFO, "%s: %s", name, route.describe())


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
