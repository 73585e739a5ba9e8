"""Upsampling engine: windowed, batched, streaming model inference with seamless cross-fades.

A low-res signal ``[time]`` at ``input_rate`` Hz is cut into windows of ``window`` low-res
samples that start every ``hop = window - overlap`` samples (both multiples of
:func:`speechsr.model.required_multiple`, so every window sees the same stride phase as a
whole-signal pass). Windows run through the model in batches ``[batch_size, window, 1]``
with one traced ``tf.function`` (fixed window length; the last window is zero-padded).
Consecutive outputs are joined over their overlap: the outer ``margin`` samples of each
window (where zero padding alters the output) get weight 0, the middle of the overlap gets
complementary raised-cosine fades (``rise + fall == 1``), so there is no seam and no level
dip. Output length is exactly ``len(x) * factor`` samples at ``output_rate`` Hz.

:meth:`Upsampler.stream` consumes low-res blocks of any size and yields output blocks,
holding O(window * batch_size + block) samples; :meth:`Upsampler.upsample` is the same code
path with one block, so whole-array and streamed results are identical.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from speechsr import audio, bandlimit
from speechsr import runtime as lean
from speechsr.geometry import receptive_context, required_multiple
from speechsr.runtime import AUTO_ORDER, RUNTIMES, WindowRunner, quiet_stderr
from speechsr.settings import ModelSettings, UpsamplingSettings, project_path

# The TensorFlow-free inference path: TensorFlow, Keras and the modules that import them
# (speechsr.model_io, speechsr.subpixel) are imported only where a model runs in TensorFlow
# (TFRunner, load_upsampler, import_tensorflow_quietly), so command-line checks run, and fail,
# before the slow and noisy TensorFlow start-up, and TensorFlow never loads when the LiteRT
# runtime serves (test_runtime.test_lean_path_never_imports_tensorflow).

log = logging.getLogger("speechsr")

#: Output subtypes kept from the input when ``subtype == "auto"``.
PCM_SUBTYPES = ("PCM_16", "PCM_24")


class InputBandError(ValueError):
    """The input already has high-band content: it is not low-res audio for this model."""


class TFRunner(WindowRunner):
    """A Keras model as a :class:`speechsr.runtime.WindowRunner`: one traced ``tf.function``.

    Fixed window length ``window``, any batch: traced once; a short last batch (e.g. a
    single short clip) is not padded with all-zero windows.
    """

    name = "tf"

    def __init__(self, model, window: int):
        import tensorflow as tf  # only when a model runs in TensorFlow: see the top
        self.model = model
        self.fn = tf.function(lambda x: model(x, training=False), jit_compile=False,
                              input_signature=[tf.TensorSpec([None, window, 1], tf.float32)])

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(windows))


class Upsampler:
    """Windowed batched inference of a model ``[batch, T, 1] -> [batch, T * factor, 1]``.

    ``model``: a Keras model (run by TensorFlow, :class:`TFRunner`) or any
    :class:`speechsr.runtime.WindowRunner` (e.g. the LiteRT export); ``runtime`` names it.

    From the (validated) upsampling settings: ``window_seconds``/``overlap_seconds`` are rounded
    to multiples of ``required_multiple`` low-res samples (overlap at least one multiple, at most
    half the window); ``batch_size`` windows per model call. Streaming holds at most
    ``window + batch_size * hop`` low-res samples besides the current block. ``input_lowpass``
    ('auto' | 'on' | 'off', :mod:`speechsr.bandlimit`) is applied per file by
    :func:`upsample_file` and :func:`speechsr.evaluation.reference_mode`, not by :meth:`stream`.
    """

    def __init__(self, model, model_settings: ModelSettings, upsampling_settings: UpsamplingSettings):
        s, up = model_settings, upsampling_settings
        window_seconds, overlap_seconds, batch_size = up.window_seconds, up.overlap_seconds, up.batch_size
        self.model, self.settings = model, s
        self.input_rate, self.output_rate = s.input_rate, s.output_rate
        self.factor = s.output_rate // s.input_rate
        m = required_multiple(s)
        self.window = max(m, int(round(window_seconds * s.input_rate / m)) * m)
        self.overlap = max(m, int(round(overlap_seconds * s.input_rate / m)) * m)
        if 2 * self.overlap > self.window:
            raise ValueError(f"overlap ({self.overlap} samples) must be at most half the window "
                             f"({self.window} samples at {s.input_rate} Hz)")
        self.hop = self.window - self.overlap
        self.batch_size = batch_size
        self.input_lowpass = up.input_lowpass  # used per file by upsample_file / evaluation.reference_mode
        # Cross-fade over the middle of the overlap, away from both windows' padded edges.
        self.margin = min(receptive_context(s), self.overlap * 3 // 8)
        f = self.factor
        fade = (self.overlap - 2 * self.margin) * f
        ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade) ** 2
        rise = np.concatenate([np.zeros(self.margin * f), ramp, np.ones(self.margin * f)])
        self._rise = rise.astype(np.float32)          # weight of the later window, [overlap * f]
        self._fall = (1.0 - rise).astype(np.float32)  # weight of the earlier one; sum == 1
        self._runner = model if isinstance(model, WindowRunner) else TFRunner(model, self.window)
        self._fn = getattr(self._runner, "fn", None)  # the traced tf.function (TensorFlow runtime)
        self.runtime = self._runner.name
        self.model_calls = 0

    def describe(self) -> str:
        """One line: window, hop, overlap and fade in low-res samples and seconds."""
        r = self.input_rate
        return (f"window {self.window} samples ({self.window / r:.3f} s), hop {self.hop}, "
                f"overlap {self.overlap} (cross-fade {self.overlap - 2 * self.margin}, "
                f"margins {self.margin}) at {r} Hz, batch {self.batch_size}, runtime {self.runtime}")

    def warmup(self) -> float:
        """Trace and run the model once on zeros; returns the seconds it took."""
        t0 = time.perf_counter()
        self._run(np.zeros((self.batch_size, self.window), np.float32))
        return time.perf_counter() - t0

    def _run(self, windows: np.ndarray) -> np.ndarray:
        """Model on ``[n <= batch_size, window]`` low-res windows -> ``[n, window * factor]``."""
        self.model_calls += 1
        return np.asarray(self._runner(windows[:, :, None].astype(np.float32, copy=False)))[:, :, 0]

    def num_windows(self, n: int) -> int:
        """Windows needed for ``n`` low-res samples: the last one is the first reaching the end."""
        return 1 if n <= self.window else math.ceil((n - self.window) / self.hop) + 1

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Upsample low-res blocks ``[time]`` (any sizes) -> output blocks ``[time]`` (float32).

        The concatenated output has exactly ``factor`` x the total input samples. A window
        is processed once input past its end has arrived (or the stream ended), so the
        windows and batches are the same whatever the block sizes.
        """
        W, H, f = self.window, self.hop, self.factor
        buf, buf_start, total = np.zeros(0, np.float32), 0, 0  # input from window state["k"] + len(ready) on
        ready: list[np.ndarray] = []  # windows cut but not yet run (at most batch_size)
        state = {"pending": None, "k": 0}  # faded tail of the last window run; next window to emit

        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            if block.ndim == 2 and block.shape[1] == 1:
                block = block[:, 0]
            if block.ndim != 1:
                raise ValueError(f"blocks must be mono [time], got shape {block.shape}")
            if not np.all(np.isfinite(block)):
                raise ValueError("input contains NaN or infinite samples")
            buf = np.concatenate([buf, block]) if buf.size else block.copy()
            total += block.size
            k = state["k"] + len(ready)  # next window to cut
            while total > k * H + W:  # more input follows: window k is not the last one
                ready.append(buf[k * H - buf_start:k * H - buf_start + W])
                k += 1
                if len(ready) == self.batch_size:
                    yield self._emit(ready, state, last=None)
                    ready = []
            drop = k * H - buf_start  # input before window k is no longer needed
            buf, buf_start = buf[drop:].copy(), buf_start + drop

        if total == 0:
            return
        last = self.num_windows(total) - 1
        k = state["k"] + len(ready)
        for j in range(k, last + 1):
            piece = buf[j * H - buf_start:j * H - buf_start + W]
            ready.append(np.pad(piece, (0, W - piece.size)))
            if len(ready) == self.batch_size or j == last:
                yield self._emit(ready, state, last=(last, total * f))
                ready = []

    def _emit(self, windows: list[np.ndarray], state: dict, last) -> np.ndarray:
        """Run a batch and overlap-add it; returns the output samples now final."""
        H, O, f = self.hop, self.overlap, self.factor
        outputs = self._run(np.stack(windows))
        pieces = []
        for y in outputs:
            k = state["k"]
            head = y[:O * f] if k == 0 else state["pending"] + y[:O * f] * self._rise
            if last is not None and k == last[0]:
                end = last[1] - k * H * f  # output samples of the last window that are kept
                pieces.append(np.concatenate([head, y[O * f:]])[:end])
            else:
                pieces.append(head)
                pieces.append(y[O * f:H * f])
                state["pending"] = y[H * f:] * self._fall
            state["k"] = k + 1
        return np.concatenate(pieces).astype(np.float32, copy=False)

    def upsample(self, x: np.ndarray) -> np.ndarray:
        """Whole-array convenience: low-res ``[time]`` -> ``[time * factor]`` float32."""
        out = list(self.stream([x]))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


# ------------------------------------------------------------------ loading

def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (absl/oneDNN notices) kept off stderr.

    The captured text is replayed if the import fails.
    """
    if "tensorflow" in sys.modules:
        return
    with quiet_stderr():
        import tensorflow  # noqa: F401
        import keras  # noqa: F401


def resolve_model_path(path: str | os.PathLike, from_settings: bool = False) -> Path:
    """A model path: from a settings file, relative to the project root (as every settings
    path); from the command line, as given (relative to the working directory)."""
    return project_path(path) if from_settings else Path(path)


def load_upsampler(model_path: str | os.PathLike, up: UpsamplingSettings,
                   subpixel: str | None = None, runtime: str = "auto") -> Upsampler:
    """Load a saved model and wrap it with the upsampling settings.

    ``runtime``: ``"lite"`` runs the LiteRT export beside the model (``NAME.tflite``, checked
    to come from this exact ``NAME.keras``; :mod:`speechsr.runtime`) without importing
    TensorFlow, ``"lite-int8"`` its int8-weight export (``NAME.int8.tflite``); ``"tf"`` loads
    the ``.keras`` model in TensorFlow (``model_io.load_model``); ``"auto"`` uses the first
    matching export of ``runtime.AUTO_ORDER`` unless ``subpixel`` is given, else TensorFlow
    (a stale export is reported as a warning). Raises ``model_io.ModelNotFoundError`` (message
    says how to train one), ``runtime.ExportUnavailable`` (a lite runtime without a matching
    export) or ValueError.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    candidates = AUTO_ORDER if runtime == "auto" and not subpixel else () if runtime in ("auto", "tf") else (runtime,)
    for variant in candidates:
        try:
            runner, model_settings = lean.load_lite(model_path, variant)
        except lean.ExportUnavailable as e:
            if runtime != "auto":
                raise
            stale = lean.exported_path(model_path, variant).exists()
            log.log(logging.WARNING if stale else logging.INFO, "%s; using TensorFlow", e)
        else:
            return Upsampler(runner, model_settings, up)
    import_tensorflow_quietly()
    from speechsr import model_io  # TensorFlow (see the top)
    from speechsr.subpixel import set_implementation as set_subpixel_implementation  # TensorFlow too
    model, model_settings, _ = model_io.load_model(model_path)
    if subpixel:
        set_subpixel_implementation(model, subpixel)
    return Upsampler(model, model_settings, up)


# ------------------------------------------------------------------ input checks

def check_input_band(path: str | os.PathLike, s: ModelSettings, seconds: float = 60.0) -> dict:
    """Check that ``path`` is low-band audio for the model (first ``seconds`` at its own rate).

    Raises :class:`InputBandError` when the file's rate is >= ``output_rate`` and its energy
    above ``output_rate / 4`` Hz is more than -30 dB of the total. Warns (logger
    ``speechsr``) when the rate is above ``input_rate`` and the energy above ``input_rate / 2``
    Hz is more than -40 dB (that band is low-passed away). Returns the measurements (dB).
    """
    info = audio.audio_info(path)
    rate = info.samplerate
    result = {"rate": rate}
    if rate <= s.input_rate:
        return result
    x, _ = audio.read_audio(path, stop=min(seconds, info.frames / rate))
    if x.size < 16:
        return result
    freqs, psd = bandlimit.welch_psd(x.astype(np.float64), nperseg=min(4096, x.size))  # scipy's welch
    freqs = freqs * rate / 2  # Nyquist units -> Hz (psd's scale cancels in the ratios below)
    total = psd.sum()
    if total <= 0:
        return result

    def rel_db(lo_hz: float) -> float:
        return float(10 * np.log10(max(psd[freqs > lo_hz].sum() / total, 1e-30)))

    content_hz = float(freqs[np.searchsorted(np.cumsum(psd) / total, 0.999)])
    result.update(content_khz=content_hz / 1000, above_input_band_db=rel_db(s.input_rate / 2))
    if rate >= s.output_rate:
        result["above_quarter_output_db"] = rel_db(s.output_rate / 4)
        if result["above_quarter_output_db"] > -30:
            raise InputBandError(
                f"{path}: input already has content up to {content_hz / 1000:.1f} kHz; this tool "
                f"upsamples {s.input_rate / 1000:g} kHz-sampled audio (content below "
                f"{s.input_rate / 2000:g} kHz); to test the model on high-res audio use --reference")
    if result["above_input_band_db"] > -40:
        log.warning("%s: has content above %g kHz (%.0f dB of total) that is low-passed away: "
                    "the model input is %d Hz audio", path, s.input_rate / 2000,
                    result["above_input_band_db"], s.input_rate)
    return result


def output_subtype(in_path: str | os.PathLike, out_path: str | os.PathLike, subtype: str = "auto") -> str:
    """The output subtype: forced, or the input's when PCM_16/PCM_24, else FLOAT (PCM_24 for FLAC)."""
    if subtype == "auto":
        src = audio.audio_info(in_path).subtype
        subtype = src if src in PCM_SUBTYPES else "FLOAT"
    if subtype == "FLOAT" and Path(out_path).suffix.lower() == ".flac":
        subtype = "PCM_24"  # FLAC has no float samples
    return subtype


def upsample_file(in_path: str | os.PathLike, out_path: str | os.PathLike, upsampler: Upsampler,
                  subtype: str = "auto", block_seconds: float = 30.0, check_band: bool = True) -> dict:
    """Stream ``in_path`` (resampled to ``input_rate``) through the model into ``out_path``.

    The output is written atomically (no partial file on failure) at ``output_rate`` Hz.
    PCM outputs are clipped to [-1, 1]. The input is band-limited first when the upsampler's
    ``input_lowpass`` mode says so (judged on the first block). Returns ``{"input_samples",
    "output_samples", "seconds", "model_seconds", "subtype", "clipped", "input_lowpass"}``
    (samples at input/output rate).
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.resolve() == out_path.resolve():
        raise ValueError(f"{out_path}: output would overwrite the input")
    if check_band:
        check_input_band(in_path, upsampler.settings)
    subtype = output_subtype(in_path, out_path, subtype)
    counts = new_stream_counts()
    t0 = time.perf_counter()
    blocks = audio.iter_audio_blocks(in_path, block_seconds, rate=upsampler.input_rate)
    first = next(blocks, np.zeros(0, np.float32))  # decides the input low-pass
    lowpass = decide_lowpass(upsampler, in_path, first)
    blocks = itertools.chain([first], blocks)
    if lowpass:
        blocks = bandlimit.lowpass_stream(blocks)
    with audio.open_atomic_writer(out_path, upsampler.output_rate, subtype) as writer:
        stream_to_writer(upsampler, blocks, writer, subtype, counts, t0)
    if counts["clipped"]:
        log.warning("%s: %d samples clipped to [-1, 1] (%s output)", out_path, counts["clipped"], subtype)
    return {"input_samples": counts["in"], "output_samples": counts["out"], "subtype": subtype,
            "seconds": counts["in"] / upsampler.input_rate, "clipped": counts["clipped"],
            "model_seconds": time.perf_counter() - t0, "input_lowpass": lowpass}


def new_stream_counts() -> dict:
    """Tallies :func:`stream_to_writer` keeps: samples in/out, clipped, first output time (s)."""
    return {"in": 0, "out": 0, "clipped": 0, "first": None}


def stream_to_writer(upsampler: Upsampler, blocks, writer, subtype: str, counts: dict, t0: float) -> None:
    """Upsample low-res ``blocks`` (``[time]`` at ``input_rate``) into ``writer`` (``.write([time])``).

    PCM subtypes are clipped to [-1, 1]. ``counts`` (:func:`new_stream_counts`) is updated as it
    goes; ``counts["first"]`` is the time (s since ``t0``) of the first output block.
    """
    def counted(source):
        for b in source:
            counts["in"] += b.size
            yield b

    for y in upsampler.stream(counted(blocks)):
        if subtype != "FLOAT":
            counts["clipped"] += int(np.count_nonzero(np.abs(y) > 1.0))
            y = np.clip(y, -1.0, 1.0)
        writer.write(y)
        counts["out"] += y.size
        if counts["first"] is None:
            counts["first"] = time.perf_counter() - t0


def decide_lowpass(upsampler: Upsampler, name, head: np.ndarray) -> bool:
    """Whether to band-limit an input whose first samples (model input rate) are ``head``."""
    lowpass = bandlimit.needs_lowpass(head, upsampler.input_lowpass)
    if lowpass and upsampler.input_lowpass == "auto":
        log.info("%s: content at the band edge (%.0f dB above %.3g Hz); low-passing it at %.3g Hz "
                 "like the training inputs (input_lowpass 'auto')", name, bandlimit.edge_energy_db(head),
                 bandlimit.EDGE * upsampler.input_rate / 2, bandlimit.CUTOFF * upsampler.input_rate / 2)
    return lowpass
