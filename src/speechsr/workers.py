"""Worker process pools that end with their script (splicing, evaluation's perceptual metrics).

:func:`pool` is a ``ProcessPoolExecutor`` whose workers die with the process that started them,
even when it is killed with SIGKILL (:func:`die_with_parent`), and which an interruption
(Ctrl-C, SIGTERM) stops at once: queued tasks are cancelled and running workers killed
(:func:`stop_pool`) instead of finishing the work already handed out. Workers ignore Ctrl-C,
which the terminal sends to the whole process group: the parent alone decides. Nothing here
imports TensorFlow (spawned workers import this module).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import os
import signal
import threading
import time
from typing import Callable

from speechsr import signals


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` ends, even by SIGKILL; leave Ctrl-C and SIGTERM to it.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; elsewhere a daemon thread polls the parent id.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool (stop_pool)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the script's handler, inherited by fork
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl failed")
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _initialize(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def stop_pool(executor: cf.ProcessPoolExecutor) -> None:
    """Kill ``executor``'s workers and cancel its queued tasks, now (their work is thrown away)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    executor.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(5)


@contextlib.contextmanager
def pool(jobs: int, initializer: Callable | None = None, initargs: tuple = (), **kwargs):
    """A ``ProcessPoolExecutor`` of ``jobs`` workers that die with this process, each running
    ``initializer(*initargs)`` first (``kwargs``: e.g. ``mp_context``). Leaving the block normally
    or on an error waits for the running tasks (queued ones are cancelled on an error); on an
    interruption (:func:`speechsr.signals.requested`, KeyboardInterrupt) it kills the workers at once.
    """
    executor = cf.ProcessPoolExecutor(jobs, initializer=_initialize,
                                      initargs=(os.getpid(), initializer, initargs), **kwargs)
    try:
        yield executor
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or signals.requested():
            stop_pool(executor)
        else:
            executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
