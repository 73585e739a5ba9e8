"""Train / validation / test CSVs over the spliced clips, and their reader.

Split unit: the recording (default; no recording appears in two splits) or the clip
(``split_by == "clip"``). Units are sorted, shuffled with ``random.Random(seed)``, and the
first ``round(test_fraction * N)`` go to test, the next ``round(validation_fraction * N)`` to
validation, the rest to train. Output is byte-identical for the same clips and seed.

CSV columns: ``recording_id,high_res,low_res,duration_s``; clip paths are relative to the
CSV's folder (POSIX separators); rows sorted by recording id and clip index.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import random
from pathlib import Path

from speechsr import audio
from speechsr.settings import DataSettings, project_path
from speechsr.splicing import clip_names, read_manifest

HEADER = ["recording_id", "high_res", "low_res", "duration_s"]
SPLITS = ("train", "validation", "test")


class SplitError(ValueError):
    """A split CSV is missing, malformed, or names clip files that do not exist."""


@dataclasses.dataclass(frozen=True)
class Clip:
    recording_id: str
    index: int
    high_res: Path  # absolute
    low_res: Path
    duration_s: float


def collect_clips(output_dir: str | os.PathLike) -> list[Clip]:
    """All clips of complete recordings under ``<output_dir>/clips/*/``, sorted.

    Every recording must have been spliced with the same clip parameters
    (:func:`speechsr.splicing.clip_params`) as the first one found; one made with other
    parameters is an error (its clips would not match the rest). The split itself needs no
    data settings beyond the fractions and seed.
    """
    clips_dir = Path(output_dir) / "clips"
    if not clips_dir.is_dir():
        raise SplitError(f"{clips_dir}: no clips folder; run preprocessing/splice_raw_data.py first")
    clips, mismatched, params = [], [], None
    for rec_dir in sorted(p for p in clips_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        m = read_manifest(rec_dir)
        if m is None:
            continue
        params = params or m["params"]
        if m["params"] != params:
            mismatched.append(rec_dir.name)
            continue
        for i in range(m["clips"]):
            hr, lr = clip_names(m["recording_id"], i)
            clips.append(Clip(m["recording_id"], i, (rec_dir / hr).absolute(), (rec_dir / lr).absolute(),
                              float(m["clip_duration_s"])))
    if mismatched:
        raise SplitError(f"{clips_dir}: {len(mismatched)} recording(s) were spliced with other settings "
                         f"(e.g. {mismatched[0]}); rerun splice_raw_data.py or delete them")
    if not clips:
        raise SplitError(f"{clips_dir}: no complete recordings found; run preprocessing/splice_raw_data.py first")
    return clips


def _count(fraction: float, n: int, name: str, unit: str) -> int:
    k = int(math.floor(fraction * n + 0.5))  # round half up
    if fraction > 0 and k == 0:
        raise ValueError(f"{name} {fraction:g} of {n} {unit}s rounds to 0 {unit}s; "
                         f"use a larger fraction or 0")
    return k


def assign(units: list[str], test_fraction: float, validation_fraction: float, seed: int,
           unit: str = "unit") -> dict[str, list[str]]:
    """Split the ``units`` (ids) into ``{"train", "validation", "test"}`` lists (each sorted).

    ``unit`` only names the units in error messages ('recording', 'clip').
    """
    for name, f in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"{name} must be in [0, 1), got {f:g}")
    order = sorted(set(units))
    n = len(order)
    n_test = _count(test_fraction, n, "test_fraction", unit)
    n_val = _count(validation_fraction, n, "validation_fraction", unit)
    if n_test + n_val >= n:
        raise ValueError(f"test_fraction {test_fraction:g} + validation_fraction {validation_fraction:g} "
                         f"of {n} {unit}s leaves no {unit}s for training")
    random.Random(seed).shuffle(order)
    return {"test": sorted(order[:n_test]), "validation": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


@dataclasses.dataclass
class SplitSummary:
    """Per split: CSV path, number of recordings, clips and seconds."""
    csv: dict
    recordings: dict
    clips: dict
    duration_s: dict


def _csv_text(rows: list[Clip], csv_dir: Path) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for c in rows:
        w.writerow([c.recording_id, Path(os.path.relpath(c.high_res, csv_dir)).as_posix(),
                    Path(os.path.relpath(c.low_res, csv_dir)).as_posix(), repr(round(c.duration_s, 6))])
    return buf.getvalue()


def write_splits(data: DataSettings, csv_dir: str | os.PathLike | None = None) -> SplitSummary:
    """Write ``train.csv``, ``validation.csv``, ``test.csv`` (atomically) into ``csv_dir``.

    The clips are those under ``data.output_dir``; ``csv_dir`` defaults to it. Split by
    ``data.split_by`` with ``test_fraction``, ``validation_fraction`` and ``split_seed``. Raises
    ValueError for fractions that leave a requested split or the training split empty.
    """
    output_dir, by = project_path(data.output_dir), data.split_by
    clips = collect_clips(output_dir)
    key = (lambda c: c.recording_id) if by == "recording" else (lambda c: f"{c.recording_id}/{c.index:09d}")
    groups = assign([key(c) for c in clips], data.test_fraction, data.validation_fraction, data.split_seed,
                    unit=by)
    which = {u: name for name, units in groups.items() for u in units}
    csv_dir = Path(csv_dir) if csv_dir is not None else Path(output_dir)
    csv_dir = csv_dir.absolute()
    summary = SplitSummary({}, {}, {}, {})
    for name in SPLITS:
        rows = sorted((c for c in clips if which[key(c)] == name), key=lambda c: (c.recording_id, c.index))
        path = csv_dir / f"{name}.csv"
        with audio.atomic_path(path) as tmp:
            tmp.write_bytes(_csv_text(rows, csv_dir).encode("utf-8"))
        summary.csv[name] = str(path)
        summary.recordings[name] = len({c.recording_id for c in rows})
        summary.clips[name] = len(rows)
        summary.duration_s[name] = sum(c.duration_s for c in rows)
    return summary


def read_split_csv(csv_path: str | os.PathLike) -> list[dict]:
    """Rows of a split CSV as dicts: ``recording_id``, ``high_res``/``low_res`` (absolute path
    strings, checked to exist) and ``duration_s`` (float). Raises :class:`SplitError`."""
    path = Path(csv_path)
    if not path.is_file():
        raise SplitError(f"{path}: split CSV not found (run preprocessing/test_train_split.py)")
    base = path.absolute().parent
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != HEADER:
                raise SplitError(f"{path}: expected header {','.join(HEADER)}, got {','.join(header or [])!r}")
            rows, missing = [], []
            for line, rec in enumerate(reader, start=2):
                if not rec:
                    continue
                if len(rec) != len(HEADER):
                    raise SplitError(f"{path}:{line}: expected {len(HEADER)} fields, got {len(rec)}")
                try:
                    duration = float(rec[3])
                except ValueError:
                    raise SplitError(f"{path}:{line}: duration_s is not a number: {rec[3]!r}") from None
                if not (math.isfinite(duration) and duration > 0):
                    raise SplitError(f"{path}:{line}: duration_s must be a positive number of seconds, "
                                     f"got {rec[3]!r}")
                hr, lr = (str(base / p) if not os.path.isabs(p) else p for p in rec[1:3])
                missing += [p for p in (hr, lr) if not os.path.isfile(p)]
                rows.append({"recording_id": rec[0], "high_res": hr, "low_res": lr, "duration_s": duration})
    except (UnicodeDecodeError, csv.Error) as e:
        raise SplitError(f"{path}: malformed CSV ({e})") from None
    if missing:
        raise SplitError(f"{path}: {len(missing)} clip file(s) missing, e.g. {missing[0]} "
                         f"(rerun preprocessing/splice_raw_data.py)")
    return rows


def concatenate_csvs(sources: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Write one split CSV of the rows of ``sources`` in their order (a source named twice counts
    twice: a corpus weighted up), clip paths relative to ``out``'s folder, atomically; returns
    the number of rows. Each source is read by :func:`read_split_csv` (raises :class:`SplitError`)."""
    out = Path(out).absolute()
    rows = [Clip(r["recording_id"], i, Path(r["high_res"]), Path(r["low_res"]), r["duration_s"])
            for src in sources for i, r in enumerate(read_split_csv(src))]
    with audio.atomic_path(out) as tmp:
        tmp.write_bytes(_csv_text(rows, out.parent).encode("utf-8"))
    return len(rows)


#: :func:`check_clip_rates` opens at most this many clip pairs of a CSV (about 0.2 ms each).
CHECKED_CLIPS = 1000


def check_clip_rates(csv_path: str | os.PathLike, rows: list[dict], high_rate: int, low_rate: int) -> None:
    """SplitError unless the clips of ``rows`` (:func:`read_split_csv`) fit a model of
    ``low_rate`` -> ``high_rate`` Hz: high-res clips at ``high_rate``, low-res ones at ``low_rate``,
    each high-res clip ``high_rate / low_rate`` times as long as its twin (a CSV whose columns are
    swapped fails here, not in TensorFlow). Every pair is opened when there are at most
    :data:`CHECKED_CLIPS`, else that many spread evenly over the CSV (the first and last included)."""
    picks = sorted({round(i * (len(rows) - 1) / max(CHECKED_CLIPS - 1, 1))
                    for i in range(min(len(rows), CHECKED_CLIPS))})
    for i in picks:
        frames = {}
        for column, rate in (("high_res", high_rate), ("low_res", low_rate)):
            clip = rows[i][column]
            try:
                info = audio.audio_info(clip)
            except audio.AudioError as e:
                raise SplitError(f"{csv_path}: {e}") from None
            if info.samplerate != rate:
                raise SplitError(f"{csv_path}: {column} clip {clip} is sampled at {info.samplerate} Hz, the model's "
                                 f"{'output' if column == 'high_res' else 'input'} rate is {rate} Hz (columns "
                                 "swapped, or clips spliced for another model?)")
            frames[column] = info.frames
        if frames["high_res"] != frames["low_res"] * (high_rate // low_rate):
            raise SplitError(f"{csv_path}: {rows[i]['high_res']} holds {frames['high_res']} samples, its low-res "
                             f"twin {frames['low_res']}: the high-res clip must be exactly "
                             f"{high_rate // low_rate} times as long")
