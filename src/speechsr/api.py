"""Python API: upsample arrays and files with a trained model that is loaded once.

    import speechsr
    y, rate = speechsr.upsample(x, 4000)          # x: [time] (or [time, channels]) at 4000 Hz -> 16 kHz
    speechsr.upsample_file("call.wav", "call_16k.wav")
    model = speechsr.load_model("pretrained")     # or the path of a .keras model (or its folder)
    phone = speechsr.load_model("telephony")      # 8 kHz phone speech
    full8k = speechsr.load_model("8k")            # full-band 8 kHz speech (sinc until its model ships)
    y, rate = model.upsample(x, 8000)             # reused: no reload per call

Results are the command line's samples (``speechsr upsample`` = ``upsample_audio_file.py``):
the same resampling to the model's input rate (soxr VHQ, streamed in ``block_seconds`` blocks),
the same input band-limit decision (on the first block) and the same windows and cross-fades
(:class:`speechsr.inference.Upsampler`, loaded by :func:`speechsr.loading.load_upsampler`).
Arrays pass through in blocks, so the model's working memory does not grow with their length.
The command line clips PCM outputs to [-1, 1]; arrays come back float32, unclipped.
The module-level functions keep each model they load (one per path and settings).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from speechsr import audio, bandlimit, files, loading, routing, settings
from speechsr.settings import UpsamplingSettings

log = logging.getLogger("speechsr")

#: Name of the shipped model: the ``model`` of the default upsampling settings.
PRETRAINED = "pretrained"
#: The telephony path (8 kHz -> 16 kHz): the telephony model, or sinc interpolation while it is
#: not shipped (:mod:`speechsr.routing`).
TELEPHONY = "telephony"
#: The full-band 8 kHz path: the 8k model, or sinc interpolation while it is not shipped.
FULLBAND_8K = "8k"
#: Let :mod:`speechsr.routing` choose per input (rate and band): the default of the functions.
AUTO = "auto"

_cache: dict[tuple, "Model"] = {}
_cache_lock = threading.Lock()


class Model:
    """A loaded model with its upsampling settings; reuse it across calls.

    ``input_rate``/``output_rate`` in Hz; ``path`` is the ``.keras`` file; ``runtime`` says what
    runs it ('tf' or 'lite'); ``upsampler`` is the :class:`speechsr.inference.Upsampler` doing
    the work; ``settings`` the :class:`UpsamplingSettings` (window, batch, block size, input
    low-pass, output subtype).
    """

    def __init__(self, upsampler, up: UpsamplingSettings, path: Path):
        self.upsampler, self.settings, self.path = upsampler, up, Path(path)
        self.input_rate, self.output_rate = upsampler.input_rate, upsampler.output_rate
        self.runtime = getattr(upsampler, "runtime", "tf")  # 'tf' or 'lite' (speechsr.runtime)

    def __repr__(self) -> str:
        return (f"speechsr.Model({str(self.path)!r}, {self.input_rate} Hz -> {self.output_rate} Hz, "
                f"runtime {self.runtime})")

    def upsample(self, audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        """Upsample ``audio`` sampled at ``rate`` Hz; returns ``(float32 [time'], output_rate)``.

        ``audio``: ``[time]`` or ``[time, channels]`` (downmixed to mono by the mean; fewer
        channels than samples), float in [-1, 1] or int8/int16/int32 PCM (scaled like soundfile
        reads it). It is resampled to ``input_rate`` when ``rate`` differs; the output has
        ``factor`` x the resampled samples, written into one array allocated up front (memory:
        the input, a float32 mono copy unless it is one already, the output). Raises ValueError for a bad shape, dtype or
        rate, NaN/infinite samples, or samples so large that the model's output is not finite.
        """
        x = as_mono_float(audio)
        rate = check_rate(rate)
        if not np.all(np.isfinite(x)):
            raise ValueError("input contains NaN or infinite samples")
        blocks = resampled_blocks(x, rate, self.input_rate, self.settings.block_seconds)
        first = next(blocks, np.zeros(0, np.float32))  # decides the input low-pass, as for files
        blocks = itertools.chain([first], blocks)
        if bandlimit.needs_lowpass(first, self.upsampler.input_lowpass):
            log.info("array input: content at the band edge; low-passing it like the training inputs")
            blocks = bandlimit.lowpass_stream(blocks)
        # soxr gives about len * input_rate / rate samples: room for a few more, trimmed at the end
        y = np.empty(self.upsampler.factor * (-(-x.size * self.input_rate // rate) + 64), np.float32)
        end = 0
        for block in self.upsampler.stream(blocks):
            if end + block.size > y.size:  # never expected; stays correct if it happens
                y = np.concatenate([y[:end], np.empty(max(block.size, y.size // 8), np.float32)])
            y[end:end + block.size] = block
            end += block.size
        return y[:end], self.output_rate

    def upsample_file(self, path: str | os.PathLike, out_path: str | os.PathLike,
                      subtype: str | None = None) -> dict:
        """Upsample an audio file into ``out_path`` (written atomically), as ``speechsr upsample``.

        ``subtype`` defaults to the setting ``output_subtype`` ('auto' keeps a PCM_16/24 input's).
        Returns :func:`speechsr.files.upsample_file`'s summary (samples, seconds, subtype...).
        """
        return files.upsample_file(path, out_path, self.upsampler, subtype or self.settings.output_subtype,
                                       self.settings.block_seconds)


def as_mono_float(audio) -> np.ndarray:
    """``[time]`` / ``[time, channels]`` float or int8/16/32 samples -> mono float32 ``[time]``.

    Integers are scaled to [-1, 1) as soundfile reads PCM; channels are averaged in float32 as
    :mod:`speechsr.audio` downmixes files. A 2-D array with more channels than samples is taken
    for ``[channels, time]`` and refused (pass ``audio.T``), and so is int64 (whose PCM scale is
    unknown: 2^63 would make 16-bit values near-silent).
    """
    x = np.asarray(audio)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must be [time] or [time, channels], got shape {x.shape}")
    if x.ndim == 2 and x.shape[1] > x.shape[0] > 0:
        raise ValueError(f"audio of shape {x.shape} has more channels than samples: it looks like "
                         "[channels, time]; pass [time, channels] (audio.T)")
    if np.issubdtype(x.dtype, np.signedinteger):
        if x.dtype.itemsize > 4:
            raise ValueError(f"{x.dtype} samples have no PCM scale: give int16/int32 PCM, or float in "
                             "[-1, 1] (e.g. audio / 32768 for 16-bit values)")
        x = x / float(-np.iinfo(x.dtype).min)
    elif not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be float or signed integer samples, got {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def check_rate(rate) -> int:
    """``rate`` (Hz) as an int; ValueError unless it is a positive whole number (not a bool,
    string, NaN or infinity)."""
    try:
        ok = not isinstance(rate, (bool, str, bytes)) and rate > 0 and int(rate) == rate
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"rate must be a positive integer in Hz, got {rate!r}")
    return int(rate)


def check_model_name(model) -> None:
    """ValueError (not a TypeError from deep inside) unless ``model`` can name a model: a string or path."""
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be 'pretrained', 'fast', 'telephony', 'auto', the path of a .keras "
                         f"model or a speechsr.Model, got {model!r}")


def resampled_blocks(x: np.ndarray, rate: int, to_rate: int, block_seconds: float) -> Iterator[np.ndarray]:
    """``x`` ``[time]`` at ``rate`` Hz as float32 blocks at ``to_rate`` Hz.

    Cut and resampled exactly as :func:`speechsr.audio.iter_audio_blocks` reads a file
    (``int(block_seconds * rate)`` samples per block, soxr ResampleStream VHQ), so an array
    and the file holding it give the same samples.
    """
    cursor = itertools.count(0)

    def read(n: int) -> np.ndarray:
        start = next(cursor) * n
        return x[start:start + n]

    return audio.resampled_blocks(read, max(1, int(block_seconds * rate)), rate, to_rate)


def load_model(name_or_path: str | os.PathLike = PRETRAINED,
               upsampling: UpsamplingSettings | str | os.PathLike | None = None,
               subpixel: str | None = None, runtime: str = "auto", rate: int | None = None) -> Model:
    """Load a model once: ``"pretrained"`` (the default settings' model), ``"fast"`` (the fast 4x
    model, ``models/pretrained-fast``) or a ``.keras`` path.

    ``"telephony"`` / ``"8k"``: the 8 kHz -> 16 kHz telephony / full-band 8k model, or sinc
    interpolation (runtime ``"sinc"``) while it does not exist; ``"auto"`` with ``rate`` (Hz of the
    audio to come): the path :func:`speechsr.routing.choose` picks for that rate without seeing
    the audio (4 kHz: the 4x model; 8 kHz: the full-band 8k path, the safe guess; the module-level
    :func:`upsample` and :func:`upsample_file` measure the content instead).

    ``upsampling``: :class:`UpsamplingSettings`, or a settings folder/file (default: the
    commands' default settings). ``runtime``: ``"auto"`` (the LiteRT export beside the model when
    it matches, else TensorFlow, as the command line), ``"tf"`` or ``"lite"``. ``subpixel`` (the
    TensorFlow runtime's shuffle): None (the model's own choice), ``"auto"``, ``"op"`` or
    ``"reshape"``. Raises ``model_io.ModelNotFoundError``, SettingsError or ValueError.
    """
    check_model_name(name_or_path)
    up = upsampling if isinstance(upsampling, UpsamplingSettings) else \
        settings.load("upsampling", upsampling or settings.DEFAULT_SETTINGS_DIR)
    if str(name_or_path) in (TELEPHONY, FULLBAND_8K, AUTO):
        if str(name_or_path) == AUTO and rate is None:
            raise ValueError("load_model('auto') needs the input rate: load_model('auto', rate=8000)")
        default = loading.resolve_model_path(up.model, from_settings=True)
        if str(name_or_path) == FULLBAND_8K:
            route = routing.choose(routing.TELEPHONE_RATE, default_model=default)  # unmeasured 8 kHz: full band
        else:
            route = routing.choose(rate, default_model=default,
                                   telephone=True if str(name_or_path) == TELEPHONY else None)
        routing.log_route(route, f"{name_or_path} model")
        if route.kind == "sinc":
            return Model(routing.SincUpsampler(), up, Path("sinc"))
        path = route.model_path
    elif str(name_or_path) in routing.MODEL_NAMES:  # "pretrained" (the settings' model) or "fast"
        path = routing.named_model_path(name_or_path, loading.resolve_model_path(up.model, from_settings=True))
    else:
        path = loading.resolve_model_path(name_or_path)
    return Model(loading.load_upsampler(path, up, subpixel, runtime=runtime), up, path)


def _model(model) -> Model:
    """A :class:`Model` as given, or the cached one loaded for a name or path."""
    if isinstance(model, Model):
        return model
    check_model_name(model)
    key = (str(model) if str(model) in routing.MODEL_NAMES else str(Path(model).resolve()),)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load_model(model)
        return _cache[key]


def _auto(route) -> Model:
    """The cached :class:`Model` of a :class:`speechsr.routing.Route`."""
    if route.input_class == "telephone":
        return _model(TELEPHONY)
    if route.input_class == "fullband_8k":
        return _model(FULLBAND_8K)
    default = routing.choose(model=None, telephone=False).model_path
    return _model(PRETRAINED if route.model_path == default else route.model_path)


def upsample(audio: np.ndarray, rate: int, model: Model | str | os.PathLike = AUTO
             ) -> tuple[np.ndarray, int]:
    """Upsample ``audio`` (``[time]`` at ``rate`` Hz) -> ``(float32 [time'], 16000)``.

    ``model``: a :class:`Model`, ``"pretrained"``, ``"telephony"``, a ``.keras`` path (loaded
    once, then kept), or ``"auto"`` (default): :func:`speechsr.routing.choose` on the rate and the
    first minute of ``audio`` (4 kHz or 2 kHz content: the 4x model; 8 kHz phone speech: the
    telephony path; full-band 8 kHz speech: the 8k path).
    See :meth:`Model.upsample`.
    """
    if isinstance(model, str) and model == AUTO:
        rate = check_rate(rate)
        x = as_mono_float(audio)
        route = routing.choose(int(rate), x[:int(routing.PROBE_SECONDS * rate)])
        routing.log_route(route, "array input")
        return _auto(route).upsample(x, rate)
    return _model(model).upsample(audio, rate)


def upsample_file(path: str | os.PathLike, out_path: str | os.PathLike,
                  model: Model | str | os.PathLike = AUTO) -> dict:
    """Upsample the audio file ``path`` into ``out_path`` as ``speechsr upsample`` does.

    ``model`` as for :func:`upsample` (``"auto"``: chosen from the file, as the command line).
    See :meth:`Model.upsample_file`.
    """
    if isinstance(model, str) and model == AUTO:
        route = routing.choose_for_file(path)
        routing.log_route(route, path)
        return _auto(route).upsample_file(path, out_path)
    return _model(model).upsample_file(path, out_path)


__all__ = ["Model", "load_model", "upsample", "upsample_file"]
