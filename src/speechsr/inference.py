"""Upsampling engine: windowed, batched, streaming model inference with seamless cross-fades.

A low-res signal ``[time]`` at ``input_rate`` Hz is cut into windows of ``window`` low-res
samples that start every ``hop = window - overlap`` samples (both multiples of
:func:`speechsr.geometry.required_multiple`, so every window sees the same stride phase as a
whole-signal pass). Windows run through the model in batches ``[batch_size, window, 1]``
with one traced ``tf.function`` (fixed window length; the last window is zero-padded).
Consecutive outputs are joined over their overlap: the outer ``margin`` samples of each
window (where zero padding alters the output; :func:`speechsr.geometry.receptive_context`) get
weight 0, the middle of the overlap gets complementary raised-cosine fades (``rise + fall == 1``),
so there is no seam and no level dip. Output length is exactly ``len(x) * factor`` samples at
``output_rate`` Hz.

:meth:`Upsampler.stream` consumes low-res blocks of any size and yields output blocks,
holding O(window * batch_size + block) samples; :meth:`Upsampler.upsample` is the same code
path with one block, so whole-array and streamed results are identical. Loading a saved model
as an Upsampler is :mod:`speechsr.loading`; upsampling files is :mod:`speechsr.files`.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Iterator

import numpy as np

from speechsr import low_band
from speechsr.geometry import receptive_context, required_multiple
from speechsr.runtime import WindowRunner
from speechsr.settings import ModelSettings, UpsamplingSettings

# The TensorFlow-free inference path: TensorFlow is imported only where a model runs in it
# (TFRunner), so TensorFlow never loads when the LiteRT runtime (speechsr.runtime) serves
# (test_runtime.test_lean_path_never_imports_tensorflow).


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


class NonFiniteOutput(ValueError):
    """The model's output holds NaN or infinite values (input peaks near the float32 limit);
    ``str()`` names the input's peak. Callers put the file's name in front."""


class Upsampler:
    """Windowed batched inference of a model ``[batch, T, 1] -> [batch, T * factor, 1]``.

    ``model``: a Keras model (run by TensorFlow, :class:`TFRunner`) or any
    :class:`speechsr.runtime.WindowRunner` (e.g. the LiteRT export); ``runtime`` names it.

    From the (validated) upsampling settings: ``window_seconds``/``overlap_seconds`` are rounded
    to multiples of ``required_multiple`` low-res samples (overlap at least one multiple, at most
    half the window); ``batch_size`` windows per model call. Streaming holds at most
    ``window + batch_size * hop`` low-res samples besides the current block. ``input_lowpass``
    ('auto' | 'on' | 'off', :mod:`speechsr.bandlimit`) is applied per file by
    :func:`speechsr.files.upsample_file` and :func:`speechsr.evaluation.reference_mode`, not by :meth:`stream`.
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
        self.input_lowpass = up.input_lowpass  # used per file by files.upsample_file / evaluation.reference_mode
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
        windows and batches are the same whatever the block sizes. A window whose peak exceeds 1
        runs scaled to a unit peak and its output is scaled back (the models were trained near
        [-1, 1]). Output that is still not finite (scaled back beyond float32, peaks near 3e38)
        raises :class:`NonFiniteOutput` before it is yielded.
        """
        W, H, f = self.window, self.hop, self.factor
        buf, buf_start, total = np.zeros(0, np.float32), 0, 0  # input from window state["k"] + len(ready) on
        ready: list[np.ndarray] = []  # windows cut but not yet run (at most batch_size)
        # faded tail of the last window run; next window to emit; largest input magnitude so far
        state = {"pending": None, "k": 0, "peak": 0.0}

        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            if block.ndim == 2 and block.shape[1] == 1:
                block = block[:, 0]
            if block.ndim != 1:
                raise ValueError(f"blocks must be mono [time], got shape {block.shape}")
            if not np.all(np.isfinite(block)):
                raise ValueError("input contains NaN or infinite samples")
            if block.size:
                state["peak"] = max(state["peak"], float(np.max(np.abs(block))))
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
        inputs = np.stack(windows)
        # Windows beyond full scale run at unit peak and are scaled back: the models were trained
        # near [-1, 1] and their activations (the spectral model's STFT power) overflow far outside.
        scale = np.maximum(np.max(np.abs(inputs), axis=1, keepdims=True), 1.0)
        if np.any(scale > 1.0):
            with np.errstate(over="ignore"):
                outputs = self._run(inputs / scale) * scale
        else:
            outputs = self._run(inputs)
        if self.settings.low_band_from_input:
            outputs = low_band.replace(inputs, outputs)
        if not np.all(np.isfinite(outputs)):
            raise NonFiniteOutput(f"the model's output is not finite (input peak {state['peak']:.3g})")
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
