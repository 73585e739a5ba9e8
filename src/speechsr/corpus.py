"""Find the recordings of a corpus and give each a unique, stable recording id.

Under a base folder, each entry of ``input_dir_name_dirs`` is a glob pattern of sub-folders
(``TEDLIUM_release*/train/sph``); an empty list scans the whole tree. Files whose suffix
(case-insensitive) is one of ``input_data_suffix`` are collected recursively, each real file
once (by device and inode, also across folders), sorted by their path relative to the base.

Recording id: that relative path without its suffix, ``/`` replaced by ``__``
(``TEDLIUM_release2/train/sph/Talk.sph`` -> ``TEDLIUM_release2__train__sph__Talk``), so ids
stay unique and keep speaker folders.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from speechsr.audio import file_key, walk_audio_files
from speechsr.settings import project_path


class CorpusError(ValueError):
    """The corpus folder is missing or holds no matching audio files; one-line message."""


@dataclasses.dataclass(frozen=True)
class Recording:
    """One input file: ``id`` (unique, filesystem-safe) and absolute ``path``."""
    id: str
    path: Path


def resolve_data_path(path: str | os.PathLike) -> Path:
    """A path from the settings files: absolute as is, relative ones from the project root."""
    return project_path(path)


def recording_id(relative: Path) -> str:
    """``a/b/c.flac`` -> ``a__b__c``."""
    return "__".join(relative.with_suffix("").parts)


def find_recordings(base: str | os.PathLike, dirs: list[str], suffixes: list[str],
                    exclude: list[str | os.PathLike] = ()) -> list[Recording]:
    """Recordings under ``base`` (see module doc), sorted by relative path.

    ``exclude`` folders (e.g. the output dir when it lies inside the corpus) are not scanned.
    Raises :class:`CorpusError` when ``base`` is missing or nothing matches.
    """
    base = Path(base)
    if not base.is_dir():
        raise CorpusError(f"{base}: corpus folder not found (input_dir_name_base)")
    wanted = {s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes}
    excluded = [Path(e) for e in exclude]
    folders = [base] if not dirs else sorted({p for pattern in dirs for p in base.glob(pattern) if p.is_dir()})
    if not folders:
        raise CorpusError(f"{base}: no folder matches input_dir_name_dirs {dirs}")
    files, seen = set(), set()
    for f in (f for folder in folders for f in walk_audio_files(folder, wanted, excluded)):
        key = file_key(f)  # folders matched twice (a pattern and a link to it): each file once
        if key is None or key not in seen:
            seen.add(key)
            files.add(f.relative_to(base))
    if not files:
        raise CorpusError(f"{base}: no {'/'.join(sorted(wanted))} files found in {dirs or 'the whole tree'}")
    ordered = sorted(files, key=lambda p: p.as_posix())
    ids = [recording_id(p) for p in ordered]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    out, seen = [], set()
    for rel, rid in zip(ordered, ids):
        if counts[rid] > 1:  # 'a.wav' and 'a.flac': keep both, distinguished by format
            rid = f"{rid}__{rel.suffix.lstrip('.').lower()}"
        if rid in seen:
            raise CorpusError(f"{base / rel}: recording id '{rid}' is not unique; rename the file")
        seen.add(rid)
        out.append(Recording(rid, (base / rel).absolute()))
    return out
