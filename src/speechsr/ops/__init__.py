"""Compiled TensorFlow ops: loading ``_subpixel_shuffle.so`` and its gradient.

The library is built by ``src/build_ops.sh`` (or ``make build``). Loading never
raises: :func:`load_op_library` returns the module or ``None`` and
:func:`load_error` says why it is ``None``. A library whose build stamp names
another TensorFlow version, or whose source changed since it was built, is not
loaded (a mismatched binary can crash the process rather than fail cleanly).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import tensorflow as tf

OPS_DIR = Path(__file__).resolve().parent
LIBRARY_PATH = OPS_DIR / "_subpixel_shuffle.so"
SOURCE_PATH = OPS_DIR / "subpixel_shuffle.cc"
STAMP_PATH = OPS_DIR / "_subpixel_shuffle.stamp"
BUILD_HINT = "run `bash src/build_ops.sh` (or `make build`; from an installed wheel, `speechsr build-op`)"

_lock = threading.Lock()
_state: dict = {"tried": False, "module": None, "error": None}


def _read_stamp() -> dict[str, str] | None:
    try:
        lines = STAMP_PATH.read_text().splitlines()
    except OSError:
        return None
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _stale_reason() -> str | None:
    """Why the built library must not be loaded, or None (no stamp: trust it)."""
    stamp = _read_stamp()
    if stamp is None:
        return None
    built_for = stamp.get("tensorflow")
    if built_for and built_for != tf.__version__:
        return (f"{LIBRARY_PATH.name} was built for TensorFlow {built_for}, running "
                f"{tf.__version__}; {BUILD_HINT}")
    built_sha = stamp.get("source_sha256")
    if built_sha and SOURCE_PATH.is_file():
        sha = hashlib.sha256(SOURCE_PATH.read_bytes()).hexdigest()
        if sha != built_sha:
            return f"{SOURCE_PATH.name} changed since {LIBRARY_PATH.name} was built; {BUILD_HINT}"
    return None


def _load():
    if not LIBRARY_PATH.is_file():
        return None, f"{LIBRARY_PATH} not found; {BUILD_HINT}"
    stale = _stale_reason()
    if stale:
        return None, stale
    try:
        module = tf.load_op_library(str(LIBRARY_PATH))
    except Exception as exc:  # NotFoundError (undefined symbol), OSError, ...
        return None, f"loading {LIBRARY_PATH} failed: {type(exc).__name__}: {exc}"
    if not hasattr(module, "subpixel_shuffle1d"):
        return None, f"{LIBRARY_PATH} does not define SubpixelShuffle1D; {BUILD_HINT}"
    return module, None


def load_op_library():
    """Load the op library once per process; the module, or None (see :func:`load_error`)."""
    with _lock:
        if not _state["tried"]:
            _state["module"], _state["error"] = _load()
            _state["tried"] = True
        return _state["module"]


def load_error() -> str | None:
    """Why :func:`load_op_library` returned None (None when it loaded or was not tried)."""
    return _state["error"]


def reset_cache() -> None:
    """Forget the last load attempt, so the next call tries again (e.g. after a build)."""
    with _lock:
        _state.update(tried=False, module=None, error=None)


def subpixel_shuffle1d(x: tf.Tensor, r: int) -> tf.Tensor:
    """Raw op: ``[batch, width, channels] -> [batch, width*r, channels/r]``.

    Raises RuntimeError when the library is not loaded.
    """
    module = load_op_library()
    if module is None:
        raise RuntimeError(f"SubpixelShuffle1D op unavailable: {load_error()}")
    return module.subpixel_shuffle1d(x, r=r)


def _subpixel_shuffle_grad(op, grad):
    """Gradient of SubpixelShuffle1D: the inverse shuffle, a reshape to ``[B, W, C]``."""
    return tf.reshape(grad, tf.shape(op.inputs[0]))


try:
    tf.RegisterGradient("SubpixelShuffle1D")(_subpixel_shuffle_grad)
except KeyError:  # already registered (module re-imported / reloaded)
    pass

__all__ = ["LIBRARY_PATH", "load_op_library", "load_error", "reset_cache", "subpixel_shuffle1d"]
