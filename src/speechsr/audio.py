"""Audio I/O: one reader for every accepted input, atomic writers, and sox downsampling.

Accepted inputs: wav (16/24/32-bit int, float), flac, ogg, NIST SPHERE ``.sph``, any sample
rate, any channel count. Multichannel audio is **downmixed to mono** (mean of channels).
Resampling uses soxr at its highest quality ("VHQ"). Every failure to read is an
:class:`AudioError` whose message is one line naming the file and the cause; every failure to
write is a :class:`WriteError` (disk full, I/O error, permission: an AudioError and an
OSError), named the same way. A truncated WAV is read as far as it goes, with a warning, and so
is a SPHERE file whose ``sample_count`` disagrees with its data.

Arrays are float32, shape ``[time]`` (mono), values in [-1, 1] for integer sources.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import soxr

from speechsr import signals

log = logging.getLogger("speechsr")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph")


def walk_audio_files(folder: str | os.PathLike, suffixes=AUDIO_SUFFIXES,
                     exclude: list[str | os.PathLike] = ()) -> list[Path]:
    """Files under ``folder`` (recursively, following links) whose suffix is one of ``suffixes``
    (lower case, with the dot), sorted by relative path. Hidden files and folders (``.git``,
    our own ``.partial`` folders) and the ``exclude`` folders (e.g. an output folder inside
    the input) are skipped. Each real folder is entered once and each real file listed once
    (by device and inode: the first in walk order), so link loops (``ln -s . l``) and links to
    files already found add nothing. The one audio-file walker: corpora (:mod:`speechsr.corpus`)
    and the upsample/evaluate folders (:func:`collect_audio_files`)."""
    folder, excluded = Path(folder), {k for k in map(file_key, exclude) if k}
    entered = {file_key(folder)}
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        root_path = Path(root)
        keep = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            key = file_key(root_path / d)
            if key is not None and key not in entered and key not in excluded:
                entered.add(key)
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            key = file_key(root_path / name)
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes and (key is None or key not in seen):
                seen.add(key)
                found.append(root_path / name)
    return sorted(found, key=lambda f: f.relative_to(folder).as_posix())


def file_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(device, inode)`` of what ``path`` names (links followed), or None when it does not exist."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file: the same resolved path (for names not yet written),
    or the same device and inode (hard and symbolic links)."""
    ka, kb = file_key(a), file_key(b)
    if ka is not None and ka == kb:
        return True
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def collect_audio_files(inputs: list[str | os.PathLike], exclude: str | os.PathLike | None = None
                        ) -> list[tuple[Path, Path]]:
    """``(file, relative output stem path)`` for files, and audio files in folders (recursively,
    :func:`walk_audio_files`), as upsample_audio_file.py and evaluate.py take them.

    Folder contents keep their sub-folder layout in the relative path; files under ``exclude``
    (e.g. the output folder) are skipped. Missing inputs raise :class:`AudioError`.
    """
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += [(f, f.relative_to(item).with_suffix(""))
                      for f in walk_audio_files(item, exclude=[exclude] if exclude else [])]
        elif item.exists():
            found.append((item, Path(item.stem)))
        else:
            raise AudioError(f"{item}: file not found")
    return found


class AudioError(Exception):
    """A file could not be read or written; ``str()`` is one line naming file and cause."""


class WriteError(AudioError, OSError):
    """Writing an output failed (disk full, I/O error, permission): an error of the run, not
    of an input file. ``str()`` is one line naming the file and the cause."""


#: errno values that mean the output side failed (reported by name, never as "System error.").
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                 errno.ENAMETOOLONG, errno.ELOOP)


def write_error(path: str | os.PathLike, exc: BaseException) -> WriteError:
    """A :class:`WriteError` for a failed write of ``path``: ``"<path>: cannot write (<cause>)"``.

    The cause comes from the OSError's errno, or, for libsndfile's bare "System error.", from
    the C errno it left behind, or from the folder's free space.
    """
    path = Path(path)
    code = exc.errno if isinstance(exc, OSError) and exc.errno else None
    if code is None and isinstance(exc, sf.SoundFileError):
        c_errno = getattr(getattr(sf, "_ffi", None), "errno", 0)
        code = c_errno if c_errno in _WRITE_ERRNOS else None
    if code is None:
        with contextlib.suppress(OSError):
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 64 * 1024:
                code = errno.ENOSPC
    cause = os.strerror(code).lower() if code else _describe(exc)
    err = WriteError(f"{path}: cannot write ({cause})")
    err.errno = code  # lets callers test for ENOSPC
    return err


_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
          stat.S_IFSOCK: "a socket"}


def sf_name(path: str | os.PathLike) -> bytes:
    """``path`` as the bytes libsndfile opens: any name the file system holds, also one that is
    not valid UTF-8 (Python keeps its bytes as surrogate escapes, which soundfile cannot encode)."""
    return os.fsencode(path)


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    text = text[-1] if text else type(exc).__name__
    return re.sub(r"^Error opening .*?: (?=\S)", "", text).strip()  # the name is already said


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile's info (rate, channels, frames, subtype) with a one-line error on failure."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot open ({(e.strerror or str(e)).lower()})") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        raise AudioError(f"{path}: not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special file')}); "
                         f"give a file, or '-' for a WAV stream on stdin")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        with open(path, "rb") as f:  # libsndfile would say only "System error."
            head = f.read(_SPHERE_HEADER_MAX)
    except OSError as e:
        raise AudioError(f"{path}: cannot open ({(e.strerror or str(e)).lower()})") from None
    fields = sphere_fields(head)
    for key in ("sample_rate", "channel_count"):  # libsndfile: "Internal error : SF_INFO struct incomplete."
        if key in fields and fields[key] <= 0:
            raise AudioError(f"{path}: not a readable audio file (SPHERE header field {key} is {fields[key]}, "
                             "must be above 0)")
    try:
        info = sf.info(sf_name(path))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError with long text
        raise AudioError(f"{path}: not a readable audio file ({_describe(e)})") from None
    info.name = str(path)  # not the bytes given to libsndfile
    if info.frames == 0:
        raise AudioError(f"{path}: contains no audio samples")
    return info


_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_warned_truncated: set[str] = set()
_SPHERE_HEADER_MAX = 4096  # bytes read for a NIST SPHERE header (1024 in practice)
_SPHERE_FIELD = re.compile(rb"^(\w+) -i (-?\d+)[ \t\r]*$", re.MULTILINE)


def sphere_fields(head: bytes) -> dict[str, int]:
    """The integer fields (``sample_rate``, ``channel_count``, ``sample_count``, ...) of the NIST
    SPHERE header at the start of ``head`` (a file's first bytes); {} for any other format."""
    if not head.startswith(b"NIST_1A"):
        return {}
    head = head.split(b"end_head", 1)[0]
    return {k.decode(): int(v) for k, v in _SPHERE_FIELD.findall(head)}


def _sphere_count_note(info: sf._SoundFileInfo) -> str | None:
    """For a SPHERE file whose ``sample_count`` disagrees with the samples it holds: one line
    saying so (libsndfile reads the samples there, whatever the header says)."""
    try:
        with open(info.name, "rb") as f:
            declared = sphere_fields(f.read(_SPHERE_HEADER_MAX)).get("sample_count")
    except OSError:
        return None
    if declared is None or declared == info.frames:
        return None
    return (f"{info.name}: its SPHERE header's sample_count announces {declared} samples but the file holds "
            f"{info.frames}; using the {info.frames / info.samplerate:.2f} s present")


def truncation_note(info: sf._SoundFileInfo | sf.SoundFile, name: str | None = None) -> str | None:
    """For a WAV whose header announces more audio than the file holds, or a SPHERE file whose
    ``sample_count`` disagrees with its samples: one line saying so, naming ``name`` (default
    ``info.name``).

    libsndfile then reads what is there (``info.frames`` counts it). Streaming writers' size
    placeholders (>= 0x7FFF0000 bytes) are not taken for truncation.
    """
    if getattr(info, "format", None) == "NIST":
        return _sphere_count_note(info)
    m = _DATA_CHUNK.search(getattr(info, "extra_info", "") or "")
    if not m:
        return None
    declared, actual = int(m.group(1)), int(m.group(2))
    if declared <= actual or declared >= 0x7FFF0000:
        return None
    return (f"{name or info.name}: truncated: its header announces {declared} bytes of audio but the file "
            f"holds {actual}; using the {info.frames / info.samplerate:.2f} s present")


def _warn_truncated(info: sf._SoundFileInfo) -> None:
    note = truncation_note(info)
    if note and info.name not in _warned_truncated:
        _warned_truncated.add(info.name)
        log.warning("%s", note)


def _to_mono(data: np.ndarray, path: Path, warn: bool = True) -> np.ndarray:
    if data.ndim == 2:
        if data.shape[1] > 1 and warn:
            log.info("%s: downmixed %d channels to mono", path, data.shape[1])
        data = data.mean(axis=1)
    return np.ascontiguousarray(data, dtype=np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """soxr VHQ resampling of a mono float signal ``[time]``; identity when rates agree."""
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(np.asarray(x, dtype=np.float32), rate_in, rate_out, quality="VHQ").astype(np.float32)


def read_audio(path: str | os.PathLike, rate: int | None = None,
               start: float = 0.0, stop: float | None = None,
               warn_truncated: bool = True) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono float32 ``[time]``; resample to ``rate`` Hz when given.

    ``start``/``stop`` are seconds at the file's own rate (``stop=None``: to the end).
    A truncated WAV (see :func:`truncation_note`) is read as far as it goes, with a warning
    (logger ``speechsr``) unless ``warn_truncated`` is False. Returns ``(samples, sample_rate)``.
    """
    path = Path(path)
    info = audio_info(path)
    if warn_truncated:
        _warn_truncated(info)
    first = int(round(start * info.samplerate))
    last = None if stop is None else int(round(stop * info.samplerate))
    try:
        data, file_rate = sf.read(sf_name(path), start=first, stop=last, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: read failed, file truncated or corrupt ({_describe(e)})") from None
    if data.shape[0] == 0 and info.frames > first:
        raise AudioError(f"{path}: read failed, no samples decoded (truncated or corrupt)")
    x = _to_mono(data, path)
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if rate is not None and rate != file_rate:
        x, file_rate = resample(x, file_rate, rate), rate
    return x, file_rate


def resampled_blocks(read: Callable[[int], np.ndarray], frames: int, rate: int, to_rate: int
                     ) -> Iterator[np.ndarray]:
    """Blocks ``[time]`` at ``to_rate`` Hz from ``read(frames)`` (mono float32 at ``rate`` Hz).

    ``read`` returning fewer than ``frames`` samples marks the end. Resampling is one soxr
    ResampleStream (VHQ) across blocks, so memory stays bounded by one block; empty blocks are
    not yielded. Files, pipes and arrays are all cut and resampled by this one loop.
    """
    stream = soxr.ResampleStream(rate, to_rate, 1, dtype="float32", quality="VHQ") if rate != to_rate else None
    while True:
        x = read(frames)
        last = x.shape[0] < frames
        if stream is not None:
            x = stream.resample_chunk(x, last=last)
        if x.size:
            yield x
        if last:
            return


def iter_audio_blocks(path: str | os.PathLike, block_seconds: float, rate: int | None = None
                      ) -> Iterator[np.ndarray]:
    """Stream ``path`` as mono float32 blocks ``[time]`` of about ``block_seconds``.

    With ``rate``, blocks are resampled on the fly (soxr ResampleStream, VHQ) so memory stays
    bounded by one block whatever the file length. The concatenated blocks equal
    ``read_audio(path, rate)`` up to the resampler's streaming edge handling.
    """
    path = Path(path)
    info = audio_info(path)
    _warn_truncated(info)
    frames = max(1, int(block_seconds * info.samplerate))
    warned = False

    def read(f, n):
        nonlocal warned
        x = _to_mono(f.read(n, dtype="float32", always_2d=True), path, warn=not warned)
        warned = True
        if not np.all(np.isfinite(x)):
            raise AudioError(f"{path}: contains NaN or infinite samples")
        return x

    try:
        with sf.SoundFile(sf_name(path)) as f:
            yield from resampled_blocks(lambda n: read(f, n), frames, info.samplerate, rate or info.samplerate)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: read failed, file truncated or corrupt ({_describe(e)})") from None


_PART = re.compile(r"^\..*\.([A-Za-z0-9-]*)-pid(\d+)\.[^.]+\.part(\.[^.]*)?$")
_swept: set[str] = set()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_parts(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files of :func:`atomic_path` in ``folder`` whose writer process is gone
    (killed with SIGKILL, or the machine stopped); returns what was removed."""
    removed, host = [], _host()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for e in entries:
            m = _PART.match(e.name)  # only this machine's: a pid says nothing about another's
            if m and m.group(1) == host and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
                    removed.append(Path(e.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it into place only on success.

    On any exception, or a Ctrl-C / SIGTERM requested meanwhile (:mod:`speechsr.signals`), the
    temporary file is removed, so no half-written file is ever left.
    The name ``.<stem>.<host>-pid<PID>.<random>.part<suffix>`` records the writer, so the first write
    into a folder also removes temporaries left there by writers killed with SIGKILL.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = str(path.parent.resolve())
    if folder not in _swept:
        _swept.add(folder)
        for p in remove_stale_parts(folder):
            log.info("removed %s, left by an interrupted run", p)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{_host()}-pid{os.getpid()}.", suffix=".part" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file normal permissions
    try:
        yield Path(tmp)
        signals.check()  # a stop that TensorFlow swallowed mid-write never puts the file in place
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_audio(path: str | os.PathLike, samples: np.ndarray, rate: int, subtype: str = "FLOAT") -> None:
    """Write ``samples`` (``[time]`` or ``[time, channels]``) atomically as WAV (or by suffix).

    A failed write raises :class:`WriteError` naming the file and the cause; nothing is left.
    """
    path = Path(path)
    fmt = _format_for(path)
    try:
        with atomic_path(path) as tmp:
            sf.write(sf_name(tmp), np.asarray(samples), rate, subtype=subtype, format=fmt)
    except (OSError, sf.SoundFileError) as e:
        raise write_error(path, e) from None


#: Output formats by file suffix (anything else is refused rather than written as WAV bytes).
OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".sph": "NIST"}


def _format_for(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write '{Path(path).suffix or '(no suffix)'}' files; "
                         f"use {', '.join(OUTPUT_FORMATS)}")
    return fmt


def check_output_format(path: str | os.PathLike) -> None:
    """AudioError unless ``path``'s suffix is a format the writers produce (:data:`OUTPUT_FORMATS`)."""
    _format_for(Path(path))


class _CheckedWriter:
    """A ``soundfile.SoundFile`` whose ``write`` failures become :class:`WriteError` for ``path``."""

    def __init__(self, f: sf.SoundFile, path: Path):
        self._f, self._path = f, path

    def write(self, data) -> None:
        try:
            self._f.write(data)
        except (OSError, sf.SoundFileError) as e:
            raise write_error(self._path, e) from None

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextlib.contextmanager
def open_atomic_writer(path: str | os.PathLike, rate: int, subtype: str = "FLOAT"):
    """A ``soundfile.SoundFile`` open for block writes into a temporary file, renamed on success.

    A failed write (disk full, I/O error) raises :class:`WriteError` naming ``path`` and the
    cause, and the temporary file is removed.
    """
    path = Path(path)
    fmt = _format_for(path)
    try:
        with atomic_path(path) as tmp:
            f = sf.SoundFile(sf_name(tmp), "w", samplerate=rate, channels=1, subtype=subtype, format=fmt)
            try:
                yield _CheckedWriter(f, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    f.close()
                raise
            f.close()  # flushes the header: may itself fail on a full disk
    except (OSError, sf.SoundFileError) as e:
        if isinstance(e, WriteError):
            raise
        raise write_error(path, e) from None


def sox_version() -> str:
    """The sox command line's version string (e.g. 'SoX v14.4.2'), or 'missing'."""
    try:
        out = subprocess.run(["sox", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "missing"
    return out.strip().split(":")[-1].strip() or out.strip()


def sox_downsample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Low-res twin of a mono float signal ``[time]`` with sox's ``rate -h`` (low-pass + resample).

    This is how preprocessing makes training inputs and how ``--reference`` makes test inputs.
    Output length is ``round(len(x) * rate_out / rate_in)`` samples.
    """
    import sox  # imported lazily: pysox logs a warning at import when sox is missing
    tfm = sox.Transformer()
    tfm.set_globals(verbosity=0)
    tfm.set_output_format(rate=rate_out, bits=32, encoding="floating-point")  # sox's rate -h
    y = tfm.build_array(input_array=np.asarray(x, dtype=np.float32), sample_rate_in=rate_in)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n = int(round(len(x) * rate_out / rate_in))
    if len(y) < n:
        y = np.pad(y, (0, n - len(y)))
    return y[:n]
