"""Stop requests from Ctrl-C and SIGTERM, honoured even when TensorFlow swallows the first one.

:func:`install` (called by every script) makes SIGINT and SIGTERM set a flag and raise
KeyboardInterrupt. The KeyboardInterrupt may land inside a C extension's callback (TensorFlow's
nest flattening calls back into Python), which then reports it as an "unraisable" error and goes
on, or turns it into its own error (e.g. a TypeError). So long loops call :func:`check` at safe
points (the training loop after each step), which raises KeyboardInterrupt again once a stop was
requested, and :func:`requested` lets a script count any error after the signal as the
interruption. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import signal
import sys
import threading

_requested = False


def _handler(signum, frame):
    global _requested
    _requested = True
    # the run ends with the one interruption line: reports of the swallowed raise are noise
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
    raise KeyboardInterrupt


def install() -> None:
    """Make Ctrl-C and SIGTERM request a stop (main thread only, as Python requires)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def requested() -> bool:
    """Whether Ctrl-C or SIGTERM arrived since :func:`install`."""
    return _requested


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (call at a safe point of a long loop)."""
    if _requested:
        raise KeyboardInterrupt
