"""A batch job over many audio files: what to do (:func:`plan`), what an earlier run finished
(:func:`resume`), the per-file work of a worker (:class:`FileWorker`) and the results manifest
(:func:`write_results`), tied together by :func:`run`. No Ray here: :mod:`speechsr.cluster`
runs :class:`FileWorker` on Ray Data; :func:`run` takes any executor (tests run it in-process).

Each input gives one row (:data:`COLUMNS`). A file is upsampled exactly as ``speechsr upsample``
does it (:func:`speechsr.routing.choose_for_file`, :func:`speechsr.routing.load_route`,
:func:`speechsr.files.upsample_file`: streamed, written atomically), so outputs are
byte-identical. Locations are local paths or URIs (:mod:`speechsr.storage`).
"""

from __future__ import annotations

import atexit
import csv
import glob
import io
import itertools
import logging
import os
import posixpath
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from speechsr import audio, cli, files, loading, routing, storage
from speechsr.settings import UpsamplingSettings

log = logging.getLogger("speechsr")

#: Output name of an input ``NAME.EXT``: ``NAME_upsampled.wav``, as ``speechsr upsample DIR -o OUT``.
SUFFIX = "_upsampled.wav"
#: The results manifest in the output root: ``results.parquet`` and ``results.csv``.
RESULTS = "results"
#: Columns of the results manifest -> pyarrow type name (one row per input).
COLUMNS = {
    "input": "string",          # the input's location, as listed
    "output": "string",         # the output's location
    "duration_s": "float64",    # the input's length, seconds (NaN when unreadable)
    "input_rate": "int64",      # the input's sampling rate, Hz (0 when unreadable)
    "route": "string",          # routing's choice: Route.describe() (what and why)
    "reason": "string",         # why (Route.reason)
    "model": "string",          # the model's name (its folder), or 'sinc'
    "model_version": "string",  # from its sidecar or card (speechsr.cli.model_card_version)
    "runtime": "string",        # lite-int8, lite, tf or sinc
    "status": "string",         # 'ok', 'skipped' (complete in an earlier run) or 'error: <one line>'
    "seconds": "float64",       # wall time of this file in its worker, seconds
    "output_bytes": "int64",    # size of the output file (0 when none)
    "worker": "string",         # HOST:PID of the worker process
}
DONE = ("ok", "skipped")
MANIFEST_SUFFIXES = (".csv", ".parquet")


def _mirror(inputs: list[str]) -> list[str]:
    """Paths of ``inputs`` relative to their deepest common folder (POSIX separators)."""
    split = [s.split("://", 1) if "://" in s else ["", s] for s in inputs]
    if len({scheme for scheme, _ in split}) > 1:
        return [Path(rest).name for _, rest in split]
    rests = [posixpath.normpath(Path(rest).as_posix()) for _, rest in split]
    common = posixpath.dirname(rests[0]) if len(rests) == 1 else posixpath.commonpath(rests)
    if common in rests:  # the one input is a file: its folder
        common = posixpath.dirname(common)
    return [posixpath.relpath(r, common or ".") for r in rests]


def _absolute(location: str) -> str:
    """A local path made absolute (workers may run elsewhere; a re-run from another folder
    matches the manifest's rows); a URI as it is."""
    return location if storage.is_remote(location) else os.path.abspath(storage.local_path(location))


def _read_manifest(source: str) -> tuple[list[str], list[str | None]]:
    """``path`` and optional ``output`` columns of a CSV or Parquet manifest; relative paths are
    relative to the manifest's folder."""
    data = storage.read_bytes(source)
    if source.lower().endswith(".parquet"):
        import pyarrow.parquet as pq
        table = pq.read_table(io.BytesIO(data))
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
    else:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
        columns = {name: [r[name] for r in rows] for name in (rows[0] if rows else {})}
    if "path" not in columns:
        raise ValueError(f"{source}: manifest has no 'path' column (columns: {', '.join(columns) or 'none'})")
    base = source.rsplit("/", 1)[0] if storage.is_remote(source) else str(storage.local_path(source).parent)

    def located(p: str) -> str:
        return p if storage.is_remote(p) or os.path.isabs(p) else storage.join(base, p)

    rows = [(p, o) for p, o in zip(columns["path"], columns.get("output") or [None] * len(columns["path"]))
            if p not in (None, "")]
    return [located(str(p)) for p, _ in rows], [str(o) if o not in (None, "") else None for _, o in rows]


def _earlier_output(rel: str) -> bool:
    """Whether a listed file is an output of an earlier run (``*_upsampled.*``)."""
    return Path(rel).stem.endswith(SUFFIX[:-4])


def _listing(source: str, output_root: str) -> tuple[list[str], list[str], list[str | None]]:
    """``(inputs, their paths relative to the tree mirrored, outputs given by a manifest or None)``."""
    if source.lower().endswith(MANIFEST_SUFFIXES):
        inputs, outputs = _read_manifest(source)
        return inputs, _mirror(inputs), outputs
    if glob.has_magic(source):
        if storage.is_remote(source):
            raise ValueError(f"{source}: globs take local paths; list remote files in a manifest or give their folder")
        root = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), Path(source).parts))
        inputs = sorted(p for p in glob.glob(source, recursive=True)
                        if Path(p).suffix.lower() in audio.AUDIO_SUFFIXES and not _earlier_output(p))
        rels = [Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else Path(p).name for p in inputs]
        return inputs, rels, [None] * len(inputs)
    if storage.is_remote(source):
        found = [(f, rel) for f, rel in storage.list_files(source, audio.AUDIO_SUFFIXES) if not _earlier_output(rel)]
        return [f for f, _ in found], [rel for _, rel in found], [None] * len(found)
    folder = storage.local_path(source).is_dir()
    pairs = [(f, rel) for f, rel in audio.collect_audio_files([storage.local_path(source)],
                                                               exclude=storage.local_path(output_root))
             if not folder or not _earlier_output(f.name)]
    return [str(f) for f, _ in pairs], [rel.as_posix() + f.suffix for f, rel in pairs], [None] * len(pairs)


def plan(source: str, output_root: str) -> list[dict]:
    """The tasks of a job: ``{"index", "input", "output"}`` per input file, in listing order.

    ``source``: a folder (recursively; earlier ``*_upsampled.*`` outputs and the output root
    skipped, as ``speechsr upsample DIR -o OUT``), a glob (local; quote it in a shell), a
    manifest (``.csv``/``.parquet``: column ``path``, optional ``output`` relative to the output
    root) or one file. Outputs mirror the inputs' tree under ``output_root``
    (``sub/NAME.flac`` -> ``sub/NAME_upsampled.wav``). AudioError/ValueError (one line) when
    nothing is found or two inputs would write one output.
    """
    inputs, rels, outputs = _listing(source, output_root)
    if not inputs:
        raise audio.AudioError(f"{source}: no audio files ({' '.join(audio.AUDIO_SUFFIXES)})")
    tasks, output_root = [], _absolute(output_root)
    for i, (src, rel, out) in enumerate(zip(inputs, rels, outputs)):
        dest = storage.join(output_root, out if out else str(Path(rel).with_suffix("")) + SUFFIX)
        tasks.append({"index": i, "input": _absolute(src), "output": dest})
    seen: dict[str, str] = {}
    for t in tasks:
        if t["output"] in seen:
            raise ValueError(f"{seen[t['output']]} and {t['input']} would both write {t['output']}")
        seen[t["output"]] = t["input"]
        if not storage.is_remote(t["output"]):
            audio.check_output_format(t["output"])
    return tasks


# ------------------------------------------------------------------ results manifest

def results_paths(output_root: str) -> tuple[str, str]:
    """Locations of the results manifest: ``(results.parquet, results.csv)`` in ``output_root``."""
    return storage.join(output_root, RESULTS + ".parquet"), storage.join(output_root, RESULTS + ".csv")


def read_results(output_root: str) -> list[dict]:
    """Rows of an earlier run's manifest in ``output_root`` (Parquet, else CSV); [] when none."""
    parquet, csv_path = results_paths(output_root)
    if storage.exists(parquet) is not None:
        import pyarrow.parquet as pq
        return pq.read_table(io.BytesIO(storage.read_bytes(parquet))).to_pylist()
    if storage.exists(csv_path) is not None:
        import pyarrow.csv as pacsv
        types = pacsv.ConvertOptions(column_types=_schema())
        return pacsv.read_csv(io.BytesIO(storage.read_bytes(csv_path)), convert_options=types).to_pylist()
    return []


def resume(tasks: list[dict], output_root: str) -> tuple[list[dict], dict[int, dict]]:
    """``(tasks still to do, {index: skipped row})``: a task is skipped when the earlier manifest
    has its row with status ok or skipped for the same output and that output exists with the
    recorded size; its row is kept with status 'skipped' and 0 seconds."""
    previous = {r["input"]: r for r in read_results(output_root)}
    todo, skipped = [], {}
    for t in tasks:
        r = previous.get(t["input"])
        if (r and r.get("status") in DONE and r.get("output") == t["output"]
                and storage.exists(t["output"]) == int(r.get("output_bytes") or -1)):
            skipped[t["index"]] = {**{k: r.get(k) for k in COLUMNS}, "status": "skipped", "seconds": 0.0}
        else:
            todo.append(t)
    return todo, skipped


def _schema():
    import pyarrow as pa
    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in COLUMNS.items()])


def _table(rows: list[dict]):
    import pyarrow as pa
    return pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in rows], schema=_schema())


def write_results(rows: list[dict], output_root: str) -> tuple[str, str]:
    """Write ``rows`` as ``results.parquet`` and ``results.csv`` in ``output_root``, each to a
    temporary name renamed into place (uploaded whole when remote). Returns their locations."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    table = _table(rows)
    written = results_paths(output_root)
    for location, write in zip(written, (pq.write_table, pacsv.write_csv)):
        if storage.is_remote(location):
            with tempfile.TemporaryDirectory() as d:
                tmp = Path(d) / Path(location).name
                write(table, str(tmp))
                storage.upload(tmp, location)
        else:
            with audio.atomic_path(storage.local_path(location)) as tmp:
                write(table, str(tmp))
    return written


# ------------------------------------------------------------------ a worker

def _one_line(error: BaseException, replace: dict[str, str]) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


class FileWorker:
    """Upsamples files one by one in one worker process; a Ray Data ``map_batches`` callable.

    Each model is loaded once per worker, when a file first routes to it (LiteRT where its
    export matches, as the CLI), running ``threads`` single-threaded interpreters (default:
    all CPUs of the process). ``up``: the upsampling settings; ``model``: ``--model`` (None:
    routed per file); ``runtime``: ``--runtime``. A file that fails gives a row whose status is
    ``error: <one line>``; nothing else is raised.
    """

    def __init__(self, up: UpsamplingSettings, model: str | None = None, runtime: str = "auto",
                 threads: int | None = None):
        self.up, self.model, self.runtime, self.threads = up, model, runtime, threads
        self.default_model = loading.resolve_model_path(up.model, from_settings=True)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._workdir: str | None = None
        self._loaded: dict = {}

    @property
    def workdir(self) -> str:
        """A temporary folder for local copies of remote files (made on first use, removed at exit)."""
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="speechsr-batch-")
            atexit.register(shutil.rmtree, self._workdir, True)
        return self._workdir

    def upsampler(self, route: routing.Route):
        """The loaded upsampler of ``route`` (loaded on first use, then kept)."""
        key = (route.kind, str(route.model_path))
        if key not in self._loaded:
            upsampler = routing.load_route(route, self.up, None, self.runtime)
            runner = getattr(upsampler, "model", None)  # a LiteRunner makes its interpreters on first use
            if self.threads and hasattr(runner, "num_threads"):
                runner.num_threads = int(self.threads)
            self._loaded[key] = upsampler
        return self._loaded[key]

    def process(self, task: dict) -> dict:
        """One task ``{"index", "input", "output"}`` -> its row (:data:`COLUMNS`, plus ``index``)."""
        t0 = time.perf_counter()
        row = {"index": int(task["index"]), "input": str(task["input"]), "output": str(task["output"]),
               "duration_s": float("nan"), "input_rate": 0, "route": "", "reason": "", "model": "",
               "model_version": "", "runtime": "", "status": "", "output_bytes": 0, "worker": self.worker}
        names: dict[str, str] = {}  # local temporaries -> the locations they stand for, in errors
        try:
            fetch = self.workdir if storage.is_remote(row["input"]) else None
            with storage.local_copy(row["input"], fetch) as src:
                names[str(src)] = row["input"]
                upsampler = self._route(src, row)
                self._write(src, upsampler, row, names)
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001  (any failure of one file is its row, not the job's)
            row["status"] = "error: " + _one_line(e, names)
        row["seconds"] = time.perf_counter() - t0
        return row

    def _route(self, src: Path, row: dict):
        """Measure and route the local file ``src``; fills the row's input, route and model columns."""
        info = audio.audio_info(src)
        row.update(duration_s=info.frames / info.samplerate, input_rate=int(info.samplerate))
        route = routing.choose_for_file(src, model=self.model, default_model=self.default_model)
        row.update(route=route.describe(), reason=route.reason)
        upsampler = self.upsampler(route)
        if route.kind == "model":
            row.update(model=route.model_path.parent.name, model_version=cli.model_card_version(route.model_path))
        else:
            row.update(model="sinc", model_version=upsampler.describe())
        row["runtime"] = upsampler.runtime
        return upsampler

    def _write(self, src: Path, upsampler, row: dict, names: dict) -> None:
        """Upsample ``src`` into the row's output (atomically; a remote one written here first, then uploaded)."""
        remote = storage.is_remote(row["output"])
        dest = (Path(self.workdir) / f"out-{row['index']}{Path(row['output']).suffix}" if remote
                else storage.local_path(row["output"]))
        names[str(dest)] = row["output"]
        try:
            files.upsample_file(src, dest, upsampler, self.up.output_subtype, self.up.block_seconds)
            row["output_bytes"] = dest.stat().st_size
            if remote:
                storage.upload(dest, row["output"])
        finally:
            if remote and dest.exists():
                dest.unlink()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Ray Data batch (columns ``index``, ``input``, ``output``) -> rows as columns."""
        rows = [self.process({k: batch[k][i] for k in ("index", "input", "output")}) for i in range(len(batch["input"]))]
        return {k: [r[k] for r in rows] for k in ("index", *COLUMNS)}


# ------------------------------------------------------------------ the job

def run(tasks: list[dict], output_root: str, execute: Callable[[list[dict]], Iterable[dict]],
        save_every: float = 30.0, on_row: Callable[[dict], None] | None = None,
        on_skip: Callable[[int], None] | None = None) -> list[dict]:
    """Run a job: skip what an earlier run in ``output_root`` completed (:func:`resume`), run the
    rest through ``execute`` (tasks -> rows, in any order, e.g. :func:`speechsr.cluster.execute`),
    and write the manifest every ``save_every`` seconds (so an interrupted job resumes) and at
    the end, also when interrupted. Returns the rows in task order; ``on_row`` sees each new one,
    ``on_skip`` the number of tasks skipped.
    """
    todo, done = resume(tasks, output_root)
    if on_skip is not None:
        on_skip(len(done))
    rows = dict(done)
    last = time.monotonic()
    try:
        for row in execute(todo):
            rows[int(row["index"])] = row
            if on_row is not None:
                on_row(row)
            if time.monotonic() - last > save_every:
                write_results([rows[i] for i in sorted(rows)], output_root)
                last = time.monotonic()
    finally:
        write_results([rows[i] for i in sorted(rows)], output_root)
    return [rows[i] for i in sorted(rows)]


def execute_here(worker: FileWorker) -> Callable[[list[dict]], Iterator[dict]]:
    """An executor of :func:`run` that processes the tasks one by one in this process."""
    return lambda todo: map(worker.process, todo)


def summary(rows: list[dict], wall_seconds: float) -> str:
    """One line: files ok/skipped/failed, hours of audio done and the throughput (audio hours per hour)."""
    ok = [r for r in rows if r["status"] == "ok"]
    skipped = sum(r["status"] == "skipped" for r in rows)
    failed = len(rows) - len(ok) - skipped
    hours = sum(r["duration_s"] for r in ok) / 3600
    rate = f", {hours * 3600 / wall_seconds:.0f} h of audio per hour" if wall_seconds > 0 and ok else ""
    return (f"{len(rows)} files: {len(ok)} upsampled ({hours:.2f} h of audio in {wall_seconds:.1f} s{rate}), "
            f"{skipped} skipped (done before), {failed} failed")
