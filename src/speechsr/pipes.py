"""WAV through pipes: upsample stdin to stdout (``-``) in bounded memory, output as it is made.

``sox call.wav -t wav - | python upsample_audio_file.py - -o - | sox -t wav - out.flac``

* **Reading** a stream (stdin or a file) goes through libsndfile on the file descriptor: WAV
  at any rate, also with sox's "length unknown" header (FLAC does not decode from a pipe); it
  is resampled to the model's input rate block by block (soxr stream) and downmixed to mono,
  as files are.
* **Writing**: libsndfile cannot write WAV to a pipe (it seeks back to fix the header), so the
  header is written first, with the data length when it is known in advance (input length
  known at the model's input rate) and otherwise sox's "unspecified" length ``0x7ffff000``,
  which sox reads silently and libsndfile reads to the end of the stream; the samples are
  encoded by libsndfile (RAW) and flushed after every block. The header goes out with the first
  block (a stream without samples writes nothing). When the stream ends short of the length its
  header announced, a warning says so and the output header is rewritten where stdout is a
  regular file; on a pipe, whose header cannot be fixed, the run fails after the data.
  A failed write (broken pipe, full disk) is a :class:`speechsr.audio.WriteError` naming stdout.
* **Latency and memory**: blocks of ``block_seconds`` are read as they arrive; with
  ``batch_size`` 1 the first output is written once one window plus one block of input has
  arrived; memory is one block plus the upsampler's window buffers, whatever the length.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import stat
import struct
import time
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf

from speechsr import audio, bandlimit
from speechsr.files import new_stream_counts, stream_to_writer

log = logging.getLogger("speechsr")

#: sox's WAV data length for "unspecified" (stream of unknown length).
UNSPECIFIED_LENGTH = 0x7FFFF000
_BYTES = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}
_MAX_FRAMES = 2 ** 31 - 1  # libsndfile's "unknown" frame count for streams


#: How messages name the standard streams.
STDIN, STDOUT = "<stdin>", "<stdout>"


def open_stream(fileobj: BinaryIO) -> sf.SoundFile:
    """A SoundFile reading ``fileobj`` (e.g. ``sys.stdin.buffer``); AudioError when unreadable
    (``stdin is empty`` when nothing at all came)."""
    try:
        return sf.SoundFile(fileobj.fileno(), closefd=False)
    except Exception as e:  # LibsndfileError with a long message
        if _at_end(fileobj):
            raise audio.AudioError(f"{STDIN}: stdin is empty (or shorter than a WAV header)") from None
        raise audio.AudioError(f"{STDIN}: not a readable audio stream ({audio._describe(e)})") from None


def _at_end(fileobj: BinaryIO) -> bool:
    """Whether nothing is left to read on ``fileobj`` (after libsndfile read what it could)."""
    try:
        return os.read(fileobj.fileno(), 1) == b""
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def open_file(path: str | os.PathLike) -> sf.SoundFile:
    """A SoundFile reading the file ``path``; AudioError (one line) when unreadable."""
    audio.audio_info(path)
    try:
        return sf.SoundFile(audio.sf_name(path))
    except Exception as e:
        raise audio.AudioError(f"{path}: not a readable audio file ({audio._describe(e)})") from None


def stream_frames(f: sf.SoundFile) -> int | None:
    """Frames announced by a stream's header, or None when unknown (pipes from sox etc.)."""
    frames = f.frames
    return None if frames <= 0 or frames >= _MAX_FRAMES or frames * _BYTES["FLOAT"] >= UNSPECIFIED_LENGTH else frames


def read_blocks(f: sf.SoundFile, block_seconds: float, rate: int, counts: dict | None = None
                ) -> Iterator[np.ndarray]:
    """Mono float32 blocks ``[time]`` at ``rate`` Hz from an open stream, read as they arrive;
    ``counts["frames"]`` (when given) tallies the frames read at the stream's own rate."""
    def read(n: int) -> np.ndarray:
        try:
            data = f.read(n, dtype="float32", always_2d=True)
        except Exception as e:
            raise audio.AudioError(f"{STDIN}: read failed ({audio._describe(e)})") from None
        if counts is not None:
            counts["frames"] = counts.get("frames", 0) + len(data)
        return np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], dtype=np.float32)

    return audio.resampled_blocks(read, max(1, int(block_seconds * f.samplerate)), f.samplerate, rate)


class Peeked:
    """An open SoundFile whose first ``frames`` were read ahead (to route a stream on its content;
    :mod:`speechsr.routing`) and are served again by :meth:`read` before the rest. Other
    attributes (``samplerate``, ``subtype``, ``frames``...) are the file's."""

    def __init__(self, f: sf.SoundFile, frames: int):
        self._f = f
        try:
            self._ahead = f.read(frames, dtype="float32", always_2d=True)
        except Exception as e:
            raise audio.AudioError(f"{STDIN}: read failed ({audio._describe(e)})") from None

    def __getattr__(self, name):
        return getattr(self._f, name)

    @property
    def head(self) -> np.ndarray:
        """The frames read ahead, mono float32 ``[time]`` at the stream's rate."""
        a = self._ahead
        return np.ascontiguousarray(a.mean(axis=1) if a.shape[1] > 1 else a[:, 0], dtype=np.float32)

    def read(self, frames: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        take, self._ahead = self._ahead[:frames], self._ahead[frames:]
        if len(take) < frames:
            rest = self._f.read(frames - len(take), dtype=dtype, always_2d=True)
            take = np.concatenate([take, rest]) if len(take) else rest
        return take


class WavPipeWriter:
    """Mono WAV onto a binary stream that may not seek: header first, then encoded blocks.

    ``frames``: the total, when known in advance, else the header says "unspecified".
    ``subtype``: 'PCM_16' | 'PCM_24' | 'FLOAT'. The header is written with the first block;
    :meth:`close` makes it match the data (see the module docstring).
    """

    def __init__(self, out: BinaryIO, rate: int, subtype: str, frames: int | None = None):
        if subtype not in _BYTES:
            raise ValueError(f"pipe output subtype must be one of {', '.join(_BYTES)}, got {subtype!r}")
        self.out, self.rate, self.subtype, self.announced = out, rate, subtype, frames
        self.frames, self._start = 0, None

    def _header(self, frames: int | None) -> bytes:
        width = _BYTES[self.subtype]
        data = frames * width if frames is not None and frames * width < UNSPECIFIED_LENGTH else UNSPECIFIED_LENGTH
        rate = self.rate
        fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * width, width, 8 * width)  # WAVE_FORMAT_PCM
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
        if self.subtype == "FLOAT":  # WAVE_FORMAT_IEEE_FLOAT: fmt extension (cbSize 0) and a fact chunk
            fmt = struct.pack("<HHIIHHH", 3, 1, rate, rate * width, width, 8 * width, 0)
            chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt
                      + b"fact" + struct.pack("<II", 4, min(data // width, 0xFFFFFFFF)))
        return (b"RIFF" + struct.pack("<I", 4 + len(chunks) + 8 + data) + b"WAVE" + chunks
                + b"data" + struct.pack("<I", data))

    def _put(self, data: bytes) -> None:
        try:
            self.out.write(data)
            self.out.flush()
        except OSError as e:  # broken pipe, full disk: name the stream, not just the errno
            raise audio.write_error(STDOUT, e) from None

    def _begin(self) -> None:
        """Write the header once, noting where it starts when ``out`` is a regular file."""
        if self._start is None:
            self._start = _position(self.out)
            self._put(self._header(self.announced))

    def write(self, y: np.ndarray) -> None:
        """Encode (libsndfile, RAW) and write one block ``[time]``, then flush."""
        self._begin()
        buf = io.BytesIO()
        sf.write(buf, np.asarray(y, dtype=np.float32), self.rate, subtype=self.subtype, format="RAW",
                 endian="LITTLE")
        self._put(buf.getvalue())
        self.frames += len(y)

    def close(self) -> None:
        """Make the header match the data: rewritten in place on a regular file; on a pipe an
        announced length that was not reached is a :class:`speechsr.audio.AudioError`."""
        self._begin()
        if self.announced == self.frames:
            return
        if self._start >= 0:  # a regular file: rewind and state the real length
            try:
                self.out.seek(self._start)
                self.out.write(self._header(self.frames))
                self.out.seek(0, os.SEEK_END)
                self.out.flush()
            except OSError as e:
                raise audio.write_error(STDOUT, e) from None
        elif self.announced is not None:
            raise audio.AudioError(
                f"{STDOUT}: its WAV header announces {self.announced / self.rate:.2f} s but "
                f"{self.frames / self.rate:.2f} s were written, and a pipe cannot be rewound to fix it")


def _position(out: BinaryIO) -> int:
    """Where ``out`` stands when it is a regular file (its header can be rewritten), else -1."""
    try:
        if stat.S_ISREG(os.fstat(out.fileno()).st_mode):
            return out.tell()
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    return -1


def upsample_stream(f: sf.SoundFile, out: BinaryIO | str | os.PathLike, upsampler, subtype: str = "auto",
                    block_seconds: float = 0.25, frames: int | None = None, name: str = STDIN) -> dict:
    """Upsample the open stream ``f`` into a WAV on the binary stream ``out`` (see the module
    docstring), or into the file ``out`` (a path: written atomically, format by suffix).

    ``subtype`` 'auto' keeps a PCM_16/PCM_24 input's subtype, else FLOAT (PCM_24 for FLAC).
    ``frames``: input frames when known (the output header then states the exact length).
    ``name`` names the input in messages. A stream without samples is an AudioError (nothing
    written); one shorter than its header announced gives a warning. PCM output is clipped to
    [-1, 1]. Returns ``{"input_samples", "output_samples", "seconds", "clipped", "input_lowpass",
    "model_seconds", "first_output_seconds"}`` (samples at input/output rate).
    """
    to_file = isinstance(out, (str, os.PathLike))
    if subtype == "auto":
        subtype = f.subtype if f.subtype in ("PCM_16", "PCM_24") else "FLOAT"
    if to_file and subtype == "FLOAT" and Path(out).suffix.lower() == ".flac":
        subtype = "PCM_24"  # FLAC has no float samples
    if frames is None:
        frames = stream_frames(f)
    if note := audio.truncation_note(f, name):  # a regular file (also on stdin): libsndfile knows its size
        log.warning("%s", note)
    out_frames = frames * upsampler.factor if frames is not None and f.samplerate == upsampler.input_rate else None
    t0 = time.perf_counter()
    counts = new_stream_counts()
    with (audio.open_atomic_writer(out, upsampler.output_rate, subtype) if to_file
          else contextlib.nullcontext(WavPipeWriter(out, upsampler.output_rate, subtype, out_frames))) as writer:
        lowpass = _upsample_into(f, writer, upsampler, subtype, block_seconds, counts, t0, name)
        read = counts.get("frames", 0)
        announced = "" if frames is None else f" (its header announces {frames / f.samplerate:.2f} s)"
        if read == 0:
            raise audio.AudioError(f"{name}: contains no audio samples{announced}")
        if frames is not None and read < frames:
            log.warning("%s: truncated: its header announces %.2f s of audio but the stream held %.2f s; "
                        "using what is there", name, frames / f.samplerate, read / f.samplerate)
        if not to_file:
            writer.close()
    if counts["clipped"]:
        log.warning("%s: %d samples clipped to [-1, 1] (%s output)", STDOUT if not to_file else out,
                    counts["clipped"], subtype)
    return {"input_samples": counts["in"], "output_samples": counts["out"], "subtype": subtype,
            "seconds": counts["in"] / upsampler.input_rate, "clipped": counts["clipped"],
            "input_lowpass": lowpass, "model_seconds": time.perf_counter() - t0,
            "first_output_seconds": counts["first"]}


def _upsample_into(f, writer, upsampler, subtype, block_seconds, counts, t0, name) -> bool:
    """Read, band-limit if needed, upsample and write; returns whether the input was low-passed."""

    blocks = read_blocks(f, block_seconds, upsampler.input_rate, counts)
    head = []  # the band-edge decision looks at one window: the first output needs that much anyway
    while sum(map(len, head)) < upsampler.window and (b := next(blocks, None)) is not None:
        head.append(b)
    first = np.concatenate(head) if head else np.zeros(0, np.float32)
    lowpass = bandlimit.needs_lowpass(first, upsampler.input_lowpass)
    if lowpass and upsampler.input_lowpass == "auto":
        log.info("%s: content at the band edge; low-passing it like the training inputs", STDIN)
    blocks = itertools.chain([first], blocks)
    if lowpass:
        blocks = bandlimit.lowpass_stream(blocks)
    stream_to_writer(upsampler, blocks, writer, subtype, counts, t0, name)
    return lowpass
