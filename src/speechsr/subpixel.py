"""1-D sub-pixel shuffle: ``[batch, time, channels] -> [batch, time*r, channels/r]``.

Element order (Kuleshov et al. SubPixel1D): ``out[b, t*r + i, c] = in[b, t, i*(channels/r) + c]``,
which in the channels-last layout is exactly ``tf.reshape``.

Two implementations give identical results:

* ``"op"``: the compiled custom op ``SubpixelShuffle1D`` (``speechsr/ops``, built by
  ``src/build_ops.sh`` / ``make build``); CPU, float32/float64, no XLA kernel.
* ``"reshape"``: ``tf.reshape`` (any dtype, any device, XLA-friendly).

``implementation="auto"`` picks the op when its library is loaded and the dtype is
float32/float64, else the reshape. The environment variable ``SPEECHSR_SUBPIXEL``
(``auto`` | ``op`` | ``reshape``) overrides ``"auto"`` only; an explicit ``"op"`` or
``"reshape"`` argument wins. The choice is logged once per process (logger ``speechsr``,
INFO); :func:`reset_implementation_cache` forgets the log flag and the op load attempt.

Errors: statically known bad input (rank != 3, channels not divisible by ``r``, ``r < 1``)
raises ``ValueError`` when the shuffle is called (eagerly or while tracing); bad shapes
only known at run time raise ``tf.errors.InvalidArgumentError`` when it runs.
"""

from __future__ import annotations

import logging
import os
import threading

import keras
import tensorflow as tf

from speechsr import ops
from speechsr.settings import SUBPIXEL_IMPLEMENTATIONS as IMPLEMENTATIONS

ENV_VAR = "SPEECHSR_SUBPIXEL"
OP_DTYPES = (tf.float32, tf.float64)

logger = logging.getLogger("speechsr")
_log_lock = threading.Lock()
_logged = False


def _check_r(r) -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"subpixel shuffle: r must be an int >= 1, got {r!r}")
    return int(r)


def _check_implementation(implementation: str, source: str = "implementation") -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"subpixel shuffle: {source} must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    return implementation


def _check_static_shape(shape, r: int) -> None:
    """ValueError for a statically known rank != 3 or channels not divisible by r."""
    shape = tf.TensorShape(shape)
    if shape.rank is not None and shape.rank != 3:
        raise ValueError("subpixel shuffle: input must be rank 3 [batch, time, channels], "
                         f"got shape {shape}")
    if shape.rank == 3 and shape[2] is not None and shape[2] % r:
        raise ValueError(f"subpixel shuffle: channels ({shape[2]}) must be divisible by "
                         f"r ({r}); input shape {shape}")


def _decide(implementation: str) -> tuple[str, str, bool]:
    """(implementation, reason, explicit) where explicit means "op" was demanded."""
    implementation = _check_implementation(implementation)
    forced_by = f"requested implementation={implementation!r}"
    if implementation == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            implementation = _check_implementation(env, f"${ENV_VAR}")
            forced_by = f"forced by {ENV_VAR}={env}"
    if implementation == "reshape":
        return "reshape", f"tf.reshape ({forced_by})", False
    module = ops.load_op_library()
    if implementation == "op":
        if module is None:
            raise RuntimeError(
                f"subpixel shuffle: the compiled SubpixelShuffle1D op was requested "
                f"({forced_by}) but is not available: {ops.load_error()}. Build it with "
                "`bash src/build_ops.sh` (or `make build`), or use implementation='reshape'.")
        return "op", f"compiled op ({ops.LIBRARY_PATH}, {forced_by})", True
    if module is None:
        return "reshape", f"tf.reshape fallback (op library not built: {ops.load_error()})", False
    if tf.config.list_logical_devices("GPU"):
        return "reshape", "tf.reshape (a GPU is visible and the op has a CPU kernel only)", False
    return "op", f"compiled op ({ops.LIBRARY_PATH})", False


def _log_choice(reason: str) -> None:
    global _logged
    with _log_lock:
        first, _logged = not _logged, True
    (logger.info if first else logger.debug)("subpixel shuffle: %s", reason)


def active_implementation(implementation: str = "auto", dtype=None) -> str:
    """Resolve ``implementation`` to ``"op"`` or ``"reshape"`` (see module docstring).

    With ``dtype`` given, ``"auto"`` falls back to the reshape for dtypes the op does not
    support; an explicit/forced ``"op"`` raises TypeError instead. Raises RuntimeError
    when ``"op"`` is requested but the library is not loaded.
    """
    chosen, reason, explicit = _decide(implementation)
    if chosen == "op" and dtype is not None and tf.as_dtype(dtype) not in OP_DTYPES:
        if explicit:
            raise TypeError(f"subpixel shuffle: the compiled op supports float32/float64, "
                            f"got {tf.as_dtype(dtype).name}; use implementation='reshape'")
        chosen, reason = "reshape", f"tf.reshape (op does not support {tf.as_dtype(dtype).name})"
    _log_choice(reason)
    return chosen


def reset_implementation_cache() -> None:
    """Forget the once-per-process log flag and the op library load attempt."""
    global _logged
    with _log_lock:
        _logged = False
    ops.reset_cache()


def subpixel_shuffle_reference(x, r: int) -> tf.Tensor:
    """Reference shuffle by ``tf.reshape``: ``[B, T, C] -> [B, T*r, C/r]``."""
    r = _check_r(r)
    x = tf.convert_to_tensor(x)
    _check_static_shape(x.shape, r)
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    batch, width, channels = (s if s is not None else dynamic[i] for i, s in enumerate(static))
    return tf.reshape(x, [batch, width * r, channels // r])


def subpixel_shuffle(x, r: int, implementation: str = "auto") -> tf.Tensor:
    """Sub-pixel shuffle ``[B, T, C] -> [B, T*r, C/r]`` with the chosen implementation.

    ``implementation``: ``"auto"`` (op if built, else reshape; ``$SPEECHSR_SUBPIXEL``
    overrides), ``"op"`` (RuntimeError if not built) or ``"reshape"``.
    """
    r = _check_r(r)
    x = tf.convert_to_tensor(x)
    _check_static_shape(x.shape, r)
    if active_implementation(implementation, dtype=x.dtype) == "op":
        return ops.subpixel_shuffle1d(x, r)
    return subpixel_shuffle_reference(x, r)


@keras.saving.register_keras_serializable(package="speechsr")
class SubPixel1D(keras.layers.Layer):
    """Keras layer: sub-pixel shuffle ``[batch, time, channels] -> [batch, time*r, channels/r]``.

    ``implementation`` is ``"auto"`` | ``"op"`` | ``"reshape"`` (see :func:`subpixel_shuffle`),
    resolved when the layer is called. The compiled op has no XLA kernel: compile models
    that use it with ``jit_compile=False`` (or use ``implementation="reshape"`` with XLA).
    """

    def __init__(self, r: int, implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.r = _check_r(r)
        self.implementation = _check_implementation(implementation)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def call(self, inputs):
        return subpixel_shuffle(inputs, self.r, self.implementation)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        _check_static_shape(input_shape, self.r)
        batch, width, channels = input_shape
        return (batch,
                None if width is None else width * self.r,
                None if channels is None else channels // self.r)

    def set_implementation(self, implementation: str) -> None:
        """Use ``implementation`` from the next trace on (see :func:`set_implementation`)."""
        self.implementation = _check_implementation(implementation)

    def get_config(self):
        config = super().get_config()
        config.update(r=self.r, implementation=self.implementation)
        return config


def set_implementation(model: keras.Model, implementation: str) -> None:
    """Switch every subpixel shuffle of a (loaded) model to ``"auto"``/``"op"``/``"reshape"``.

    Every layer of ``model`` (and of models nested in it) with a ``set_implementation`` method
    is switched: :class:`SubPixel1D` and layers holding one (the model's sinc interpolator).
    Call it before the model is first traced: the choice is made while tracing.
    """
    _check_implementation(implementation)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            set_implementation(layer, implementation)
        elif callable(getattr(layer, "set_implementation", None)):
            layer.set_implementation(implementation)


__all__ = ["SubPixel1D", "active_implementation", "reset_implementation_cache", "set_implementation",
           "subpixel_shuffle", "subpixel_shuffle_reference"]
