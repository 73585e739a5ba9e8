"""Running a batch job (:mod:`speechsr.batch`) on Ray Data, on this machine or a Ray cluster.

Ray is the optional extra ``speechsr[distributed]``, imported only here, by :func:`connect`
and :func:`execute`. The files go through ``Dataset.map_batches`` with an actor pool of
:class:`speechsr.batch.FileWorker`: one actor per worker, each loading its model once and
running ``cpus_per_worker`` LiteRT interpreters, one file per batch, up to
:data:`FILES_PER_BLOCK` files per task. Ray Data restarts an actor that dies and retries its
task on the new one (its defaults for actor pools: ``max_restarts=-1``, ``max_task_retries=-1``),
so a killed worker process loses no row.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import Iterator

from speechsr.batch import FileWorker

#: Files per Ray task, at most (see :func:`num_blocks`).
FILES_PER_BLOCK = 50
#: The one line printed when Ray is missing.
INSTALL_HINT = ("speechsr batch needs Ray: pip install 'speechsr[distributed]' (or 'ray[data]'); "
                "on one machine without it use: speechsr upsample FOLDER -o OUT")


def available() -> bool:
    """Whether Ray Data can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None


def errors() -> tuple[type[BaseException], ...]:
    """Ray's own failures (a lost cluster, a task that failed for good), reported in one line."""
    import ray.exceptions
    return (ray.exceptions.RayError,)


def connect(address: str | None = None, quiet: bool = True) -> dict:
    """Start a Ray instance of this process's own on this machine (``address`` None: never an
    existing or stale cluster found here) or join a cluster (``"auto"``: the one `ray start` runs
    here, ``"ray://HOST:PORT"``, ``"HOST:PORT"``); returns its resources (``{"CPU": n, ...}``).
    ``quiet``: workers' log lines are not forwarded here (each file's row records its errors)."""
    import ray
    if not ray.is_initialized():
        where = {"address": address} if address else {"address": "local", "include_dashboard": False}
        ray.init(log_to_driver=not quiet, logging_level=logging.WARNING, **where)
    return ray.cluster_resources()


def default_workers(cpus_per_worker: int) -> int:
    """Workers that fill the cluster's CPUs at ``cpus_per_worker`` each (at least 1)."""
    import ray
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))


def num_blocks(files: int, workers: int) -> int:
    """Blocks (Ray tasks) for ``files`` files: one file each for a small job, at least 8 per
    worker (for balance), at most :data:`FILES_PER_BLOCK` files each (a million files are not a
    million tasks; a retried task redoes at most that many)."""
    return max(1, min(files, max(8 * workers, math.ceil(files / FILES_PER_BLOCK))))


def execute(tasks: list[dict], worker_args: dict, num_workers: int, cpus_per_worker: int = 1) -> Iterator[dict]:
    """Rows of ``tasks`` (``{"index", "input", "output"}``), streamed as workers finish them, in
    any order. ``worker_args``: :class:`speechsr.batch.FileWorker`'s (``up``, ``model``, ``runtime``)."""
    if not tasks:
        return iter(())
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the caller's bar counts files
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # set by ray.data's import: its INFO lines and
    # the warning that its own bars are off
    ds = ray.data.from_items(tasks, override_num_blocks=num_blocks(len(tasks), num_workers))
    ds = ds.map_batches(FileWorker, fn_constructor_kwargs={**worker_args, "threads": cpus_per_worker},
                        batch_size=1, compute=ray.data.ActorPoolStrategy(size=num_workers),
                        num_cpus=cpus_per_worker)  # Ray Data's defaults: max_restarts=-1, max_task_retries=-1
    return ds.iter_rows()
