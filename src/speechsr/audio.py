"""Audio I/O: one reader for every accepted input, atomic writers, and sox downsampling.

Accepted inputs: wav (16/24/32-bit int, float), flac, ogg, NIST SPHERE ``.sph``, any sample
rate, any channel count. Multichannel audio is **downmixed to mono** (mean of channels).
Resampling uses soxr at its highest quality ("VHQ"). Every failure to read is an
:class:`AudioError` whose message is one line naming the file and the cause.

Arrays are float32, shape ``[time]`` (mono), values in [-1, 1] for integer sources.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger("speechsr")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph")


class AudioError(Exception):
    """A file could not be read or written; ``str()`` is one line naming file and cause."""


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    text = text[-1] if text else type(exc).__name__
    return text.replace("Error opening", "cannot open").strip()


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile's info (rate, channels, frames, subtype) with a one-line error on failure."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError with long text
        raise AudioError(f"{path}: not a readable audio file ({_describe(e)})") from None
    if info.frames == 0:
        raise AudioError(f"{path}: contains no audio samples")
    return info


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
               start: float = 0.0, stop: float | None = None) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono float32 ``[time]``; resample to ``rate`` Hz when given.

    ``start``/``stop`` are seconds at the file's own rate (``stop=None``: to the end).
    Returns ``(samples, sample_rate)``.
    """
    path = Path(path)
    info = audio_info(path)
    first = int(round(start * info.samplerate))
    last = None if stop is None else int(round(stop * info.samplerate))
    try:
        data, file_rate = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
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


def iter_audio_blocks(path: str | os.PathLike, block_seconds: float, rate: int | None = None
                      ) -> Iterator[np.ndarray]:
    """Stream ``path`` as mono float32 blocks ``[time]`` of about ``block_seconds``.

    With ``rate``, blocks are resampled on the fly (soxr ResampleStream, VHQ) so memory stays
    bounded by one block whatever the file length. The concatenated blocks equal
    ``read_audio(path, rate)`` up to the resampler's streaming edge handling.
    """
    path = Path(path)
    info = audio_info(path)
    frames = max(1, int(block_seconds * info.samplerate))
    stream = None
    if rate is not None and rate != info.samplerate:
        stream = soxr.ResampleStream(info.samplerate, rate, 1, dtype="float32", quality="VHQ")
    warned = False
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                data = f.read(frames, dtype="float32", always_2d=True)
                last = data.shape[0] < frames
                x = _to_mono(data, path, warn=not warned)
                warned = True
                if stream is not None:
                    x = stream.resample_chunk(x, last=last)
                if x.size:
                    yield x
                if last:
                    return
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: read failed, file truncated or corrupt ({_describe(e)})") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it into place only on success.

    On any exception the temporary file is removed, so no half-written file is ever left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_audio(path: str | os.PathLike, samples: np.ndarray, rate: int, subtype: str = "FLOAT") -> None:
    """Write ``samples`` (``[time]`` or ``[time, channels]``) atomically as WAV (or by suffix)."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), np.asarray(samples), rate, subtype=subtype, format=_format_for(path))
    except OSError as e:
        raise AudioError(f"{path}: cannot write ({e.strerror or e})") from None


def _format_for(path: Path) -> str:
    return {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".sph": "NIST"}.get(path.suffix.lower(), "WAV")


@contextlib.contextmanager
def open_atomic_writer(path: str | os.PathLike, rate: int, subtype: str = "FLOAT"):
    """A ``soundfile.SoundFile`` open for block writes into a temporary file, renamed on success."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=1, subtype=subtype,
                              format=_format_for(path)) as f:
                yield f
    except OSError as e:
        raise AudioError(f"{path}: cannot write ({e.strerror or e})") from None


def sox_version() -> str:
    """The sox command line's version string (e.g. 'SoX v14.4.2'), or 'missing'."""
    import subprocess
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
