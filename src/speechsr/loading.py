"""Loading a saved model as an :class:`speechsr.inference.Upsampler`, in LiteRT or TensorFlow.

The TensorFlow-free inference path: TensorFlow, Keras and the modules that import them
(:mod:`speechsr.model_io`, :mod:`speechsr.subpixel`) are imported only when a model is loaded
in TensorFlow (:func:`load_upsampler`, :func:`import_tensorflow_quietly`), so command-line
checks run, and fail, before the slow and noisy TensorFlow start-up, and TensorFlow never loads
when the LiteRT runtime (:mod:`speechsr.runtime`) serves
(test_runtime.test_lean_path_never_imports_tensorflow).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from speechsr import runtime as lean
from speechsr.inference import Upsampler
from speechsr.runtime import AUTO_ORDER, RUNTIMES, quiet_stderr
from speechsr.settings import UpsamplingSettings, project_path

log = logging.getLogger("speechsr")


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
    for i, variant in enumerate(candidates):
        try:
            runner, model_settings = lean.load_lite(model_path, variant)
        except lean.ExportUnavailable as e:
            if runtime != "auto":
                raise
            stale = lean.exported_path(model_path, variant).exists()
            fallback = f"trying {candidates[i + 1]}" if i + 1 < len(candidates) else "using TensorFlow"
            log.log(logging.WARNING if stale else logging.INFO, "%s; %s", e, fallback)
        else:
            return Upsampler(runner, model_settings, up)
    import_tensorflow_quietly()
    from speechsr import model_io  # TensorFlow (see the top)
    from speechsr.subpixel import set_implementation as set_subpixel_implementation  # TensorFlow too
    model, model_settings, _ = model_io.load_model(model_path)
    if subpixel:
        set_subpixel_implementation(model, subpixel)
    return Upsampler(model, model_settings, up)
