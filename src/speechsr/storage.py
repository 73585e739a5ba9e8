"""Where a batch job's files live: local paths, or URIs on object storage (``s3://``, ``gs://``,
``abfs://``, ``hdfs://``...) through pyarrow's filesystems, else fsspec's where installed.

A local path or a ``file://`` URI is used as it is. A remote input is copied to a local
temporary file before it is read (:func:`local_copy`) and a remote output is written locally
first, then uploaded (:func:`upload`): the audio code (:mod:`speechsr.audio`, soundfile) reads
and writes local files only. Copies stream in blocks of :data:`CHUNK` bytes (bounded memory).
pyarrow and fsspec are imported only for remote locations.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

#: Bytes per read/write when copying to or from a remote filesystem.
CHUNK = 1 << 20

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URI other than ``file://`` (a local path is not)."""
    m = _SCHEME.match(str(location))
    return bool(m) and m.group(1).lower() != "file"


def local_path(location: str | os.PathLike) -> Path:
    """A local path, or a ``file://`` URI, as a Path."""
    text = str(location)
    return Path(text[len("file://"):]) if text.lower().startswith("file://") else Path(text)


def filesystem(uri: str):
    """``(pyarrow FileSystem, path inside it)`` of a remote ``uri``: pyarrow's own filesystems
    (S3, GCS, HDFS, Azure), else an fsspec filesystem wrapped for pyarrow. ValueError (one line)
    when neither knows the scheme."""
    import pyarrow.fs as pafs  # remote only (see the top)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as first:  # pyarrow's ArrowInvalid is a ValueError
        try:
            import fsspec
        except ImportError:
            raise ValueError(f"{uri}: pyarrow cannot open this location ({first}); fsspec is not installed") from None
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as e:
            raise ValueError(f"{uri}: neither pyarrow nor fsspec can open this location ({e})") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(root: str, relative: str) -> str:
    """``root`` / ``relative`` (POSIX separators) for a local path or a URI."""
    return f"{str(root).rstrip('/')}/{relative}" if is_remote(root) else str(local_path(root) / relative)


def exists(location: str) -> int | None:
    """The size of the file at ``location`` in bytes, or None when there is none."""
    if not is_remote(location):
        path = local_path(location)
        return path.stat().st_size if path.is_file() else None
    import pyarrow.fs as pafs
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def list_files(uri: str, suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(uri of file, path relative to uri)`` of the files under a remote folder whose suffix is one
    of ``suffixes`` (lower case), recursively, hidden names skipped, sorted by relative path.
    (Local folders: :func:`speechsr.audio.walk_audio_files`.)"""
    import pyarrow.fs as pafs
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    found = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=False)):
        rel = info.path[len(root):].lstrip("/")
        if (info.type == pafs.FileType.File and Path(rel).suffix.lower() in suffixes
                and not any(part.startswith(".") for part in rel.split("/"))):
            found.append((join(uri, rel), rel))
    return sorted(found, key=lambda item: item[1])


def _copy(src, dst) -> None:
    shutil.copyfileobj(src, dst, CHUNK)


@contextlib.contextmanager
def local_copy(location: str, workdir: str | os.PathLike | None) -> Iterator[Path]:
    """A local path to read ``location`` from: itself when local, else a temporary copy in
    ``workdir`` (same suffix; None: the system's temporary folder), removed afterwards."""
    if not is_remote(location):
        yield local_path(location)
        return
    fs, path = filesystem(location)
    fd, tmp = tempfile.mkstemp(suffix=Path(path).suffix, dir=workdir)
    try:
        with os.fdopen(fd, "wb") as dst, fs.open_input_stream(path) as src:
            _copy(src, dst)
        yield Path(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def upload(local: str | os.PathLike, uri: str) -> None:
    """Copy the local file ``local`` to the remote ``uri`` (object stores publish an object only
    when its upload completes, so no partial output is visible)."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        with contextlib.suppress(OSError, NotImplementedError):
            fs.create_dir(parent, recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(path) as dst:
        _copy(src, dst)


def read_bytes(location: str) -> bytes:
    """The whole (small) file at ``location``: a manifest."""
    if not is_remote(location):
        return local_path(location).read_bytes()
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()
