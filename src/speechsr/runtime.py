"""Lean inference runtime: the exported LiteRT model beside a ``.keras`` model, without TensorFlow.

``speechsr.export`` (``make export``) writes ``NAME.tflite`` (float32) and, on request,
``NAME.int8.tflite`` (int8 weights) next to ``NAME.keras``, each with a sidecar
``NAME[.int8].tflite.json`` holding the SHA-256 of the ``.keras`` file it came from, the model
settings and the export check; an export whose recorded hash differs from the ``.keras`` file is
never used. This module loads it with ``ai_edge_litert`` (TensorFlow Lite's own runtime, XNNPACK
kernels) and imports neither TensorFlow nor Keras, so a process that only upsamples starts in a
fraction of a second.

Both runtimes sit behind :class:`WindowRunner`: a callable on low-res windows
``[n, T, 1]`` float32 -> ``[n, T * factor, 1]`` float32 (``T`` low-res samples), which
:class:`speechsr.inference.Upsampler` calls; windowing and cross-fades are shared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from speechsr import settings as settings_mod

#: Exported variants and their file suffixes: float32 weights, or int8 weights (dynamic-range
#: quantization of the network's weights, activations float, the high-band layer's DFTs float32).
EXPORTS = {"lite": ".tflite", "lite-int8": ".int8.tflite"}
RUNTIMES = ("auto", "tf", *EXPORTS)
#: What ``auto`` tries, in order, before falling back to TensorFlow: an int8 export exists only
#: where it was asked for (``export_model.py --variants``), after its quality was measured (the
#: shipped 4x model: 2.7x faster, ViSQOL -0.008 and SNR -0.01 dB on test-other; README, Benchmarks).
AUTO_ORDER = ("lite-int8", "lite")
EXPORT_HINT = "run `make export` (or `python export_model.py MODEL.keras`)"


class ExportUnavailable(ValueError):
    """No usable exported model: missing, or exported from another ``.keras`` file."""


class WindowRunner:
    """A model on windows: ``__call__([n, T, 1] float32) -> [n, T * factor, 1]`` (numpy).

    ``name`` says which runtime runs it ('tf' or 'lite').
    """

    name = "?"

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def resolve_model_file(model_path: str | os.PathLike) -> Path:
    """The ``.keras`` file of ``model_path``: itself, or ``best.keras``/``model.keras`` in a folder."""
    path = Path(model_path)
    if path.is_dir():
        path = path / "best.keras" if (path / "best.keras").exists() else path / "model.keras"
    return path


def exported_path(model_path: str | os.PathLike, variant: str = "lite") -> Path:
    """Where an export of ``model_path`` lives: ``NAME.tflite`` (``NAME.int8.tflite``) beside ``NAME.keras``."""
    return resolve_model_file(model_path).with_suffix(EXPORTS[variant])


def export_sidecar(exported: str | os.PathLike) -> Path:
    """The export's sidecar: ``NAME.tflite.json``."""
    exported = Path(exported)
    return exported.with_name(exported.name + ".json")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_info(model_path: str | os.PathLike, variant: str = "lite") -> tuple[Path, dict]:
    """``(exported file, sidecar dict)`` when the export matches the ``.keras`` file byte for byte.

    Raises :class:`ExportUnavailable` naming the reason (no export, unreadable sidecar, exported
    from a different model, or the exported file itself changed: a recorded SHA-256 differs).
    """
    model_file = resolve_model_file(model_path)
    exported = model_file.with_suffix(EXPORTS[variant])
    side = export_sidecar(exported)
    if not model_file.is_file():
        raise ExportUnavailable(f"{model_file}: no such model")
    if not exported.is_file() or not side.is_file():
        raise ExportUnavailable(f"{model_file}: no exported model ({exported.name} and "
                                f"{side.name}); {EXPORT_HINT}")
    try:
        info = json.loads(side.read_text())
        recorded = info["source_sha256"]
        info["model_settings"]  # noqa: B018  (must be present)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExportUnavailable(f"{side}: unreadable export sidecar ({e}); {EXPORT_HINT}") from None
    if recorded != file_sha256(model_file):
        raise ExportUnavailable(f"{exported} was exported from another version of {model_file.name} "
                                f"(SHA-256 differs); {EXPORT_HINT}")
    if info.get("tflite_sha256") not in (None, file_sha256(exported)):  # 6-20 ms; interpreters load lazily
        raise ExportUnavailable(f"{exported} is damaged or was changed after export (its SHA-256 differs "
                                f"from the one in {side.name}); {EXPORT_HINT}")
    return exported, info


class _Interpreter:
    """One LiteRT interpreter (XNNPACK) on ``threads`` threads; its input is resized when the
    window shape changes (e.g. a shorter last batch)."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter  # optional extra [lite]: see load_lite
        self._interp = Interpreter(model_path=str(path), num_threads=threads)
        self._in = self._interp.get_input_details()[0]["index"]
        self._out = self._interp.get_output_details()[0]["index"]
        self._shape: tuple | None = None

    def set_input(self, windows: np.ndarray) -> None:
        """Resize (in the calling thread: :func:`quiet_stderr` swaps a process-wide descriptor)
        and copy ``windows`` ``[n, T, 1]`` in."""
        if windows.shape != self._shape:
            self._interp.resize_tensor_input(self._in, list(windows.shape))
            with quiet_stderr():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate"
                self._interp.allocate_tensors()
            self._shape = windows.shape
        self._interp.set_tensor(self._in, windows)

    def invoke(self) -> np.ndarray:
        """Run on the input set last; returns a copy of the output (LiteRT releases the GIL)."""
        self._interp.invoke()
        return self._interp.get_tensor(self._out)


class LiteRunner(WindowRunner):
    """A ``.tflite`` model in the LiteRT interpreter (XNNPACK), any window length and batch.

    ``num_threads`` (default: all CPUs this process may use): a batch of ``n >= 2`` windows is
    split into ``min(n, num_threads)`` contiguous parts, each run at the same time by its own
    single-threaded interpreter. On the 2-core machine that is 8-9 % faster for the default model
    and 19-20 % for the fast one than one interpreter on 2 threads (README, Benchmarks), and the
    output is the same within float rounding: each window is computed alone either way. A lone
    window (a short file) runs on one interpreter with all threads, unless the single-threaded
    ones exist already (a long file's last batch): each interpreter holds its own copy of the
    packed weights, so they are created on first use only.
    """

    name = "lite"

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        if num_threads is None:
            num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.path = Path(path)
        self.num_threads = max(1, int(num_threads or 1))
        self._whole: _Interpreter | None = None  # all threads, for a lone window
        self._parts: list[_Interpreter] = []  # single-threaded, for batches of >= 2 windows
        self._pool = None

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if windows.ndim != 3 or windows.shape[2] != 1:
            raise ValueError(f"windows must be [n, T, 1], got shape {windows.shape}")
        parts = min(len(windows), self.num_threads)
        if parts <= 1 and not self._parts:
            if self._whole is None:
                self._whole = _Interpreter(self.path, self.num_threads)
            self._whole.set_input(windows)
            return self._whole.invoke()
        if not self._parts:
            from concurrent.futures import ThreadPoolExecutor
            self._parts = [_Interpreter(self.path, 1) for _ in range(self.num_threads)]
            self._pool = ThreadPoolExecutor(self.num_threads - 1, thread_name_prefix="litert")
        bounds = np.linspace(0, len(windows), parts + 1).round().astype(int)
        for interp, a, b in zip(self._parts, bounds[:-1], bounds[1:]):
            interp.set_input(windows[a:b])
        others = [self._pool.submit(interp.invoke) for interp in self._parts[1:parts]]
        first = self._parts[0].invoke()  # the calling thread runs one part itself
        return np.concatenate([first, *(f.result() for f in others)])


@contextlib.contextmanager
def quiet_stderr():
    """Keep C++ log lines written to file descriptor 2 off stderr; replay them on an exception."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_lite(model_path: str | os.PathLike, variant: str = "lite", num_threads: int | None = None
              ) -> tuple[LiteRunner, settings_mod.ModelSettings]:
    """``(runner, model settings)`` of an export (``variant`` of :data:`EXPORTS`) of ``model_path``,
    checked to match it. Raises :class:`ExportUnavailable` when there is no matching export.
    """
    exported, info = export_info(model_path, variant)
    try:
        import ai_edge_litert.interpreter  # noqa: F401  (optional extra [lite]: its absence is reported)
    except ImportError:
        raise ExportUnavailable(f"{exported.name}: the LiteRT runtime (package ai-edge-litert) is not "
                                "installed") from None
    model_settings = settings_mod.validate("model", info["model_settings"], str(export_sidecar(exported)))
    runner = LiteRunner(exported, num_threads)
    runner.name = variant
    return runner, model_settings
