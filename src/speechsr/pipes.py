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
  encoded by libsndfile (RAW) and flushed after every block.
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


def open_stream(fileobj: BinaryIO) -> sf.SoundFile:
    """A SoundFile reading ``fileobj`` (e.g. ``sys.stdin.buffer``); AudioError when unreadable."""
    try:
        return sf.SoundFile(fileobj.fileno(), closefd=False)
    except Exception as e:  # LibsndfileError with a long message
        raise audio.AudioError(f"<stdin>: not a readable audio stream ({audio._describe(e)})") from None


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


def read_blocks(f: sf.SoundFile, block_seconds: float, rate: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks ``[time]`` at ``rate`` Hz from an open stream, read as they arrive."""
    def read(n: int) -> np.ndarray:
        try:
            data = f.read(n, dtype="float32", always_2d=True)
        except Exception as e:
            raise audio.AudioError(f"<stdin>: read failed ({audio._describe(e)})") from None
        return np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], dtype=np.float32)

    return audio.resampled_blocks(read, max(1, int(block_seconds * f.samplerate)), f.samplerate, rate)


class WavPipeWriter:
    """Mono WAV onto a binary stream that cannot seek: header first, then encoded blocks.

    ``frames``: the total, when known in advance, else the header says "unspecified".
    ``subtype``: 'PCM_16' | 'PCM_24' | 'FLOAT'.
    """

    def __init__(self, out: BinaryIO, rate: int, subtype: str, frames: int | None = None):
        if subtype not in _BYTES:
            raise ValueError(f"pipe output subtype must be one of {', '.join(_BYTES)}, got {subtype!r}")
        self.out, self.rate, self.subtype = out, rate, subtype
        width = _BYTES[subtype]
        data = frames * width if frames is not None and frames * width < UNSPECIFIED_LENGTH else UNSPECIFIED_LENGTH
        fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * width, width, 8 * width)  # WAVE_FORMAT_PCM
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
        if subtype == "FLOAT":  # WAVE_FORMAT_IEEE_FLOAT: fmt extension (cbSize 0) and a fact chunk
            fmt = struct.pack("<HHIIHHH", 3, 1, rate, rate * width, width, 8 * width, 0)
            chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt
                      + b"fact" + struct.pack("<II", 4, min(data // width, 0xFFFFFFFF)))
        out.write(b"RIFF" + struct.pack("<I", 4 + len(chunks) + 8 + data) + b"WAVE" + chunks
                  + b"data" + struct.pack("<I", data))
        out.flush()
        self.frames = 0

    def write(self, y: np.ndarray) -> None:
        """Encode (libsndfile, RAW) and write one block ``[time]``, then flush."""
        buf = io.BytesIO()
        sf.write(buf, np.asarray(y, dtype=np.float32), self.rate, subtype=self.subtype, format="RAW",
                 endian="LITTLE")
        self.out.write(buf.getvalue())
        self.out.flush()
        self.frames += len(y)


def upsample_stream(f: sf.SoundFile, out: BinaryIO | str | os.PathLike, upsampler, subtype: str = "auto",
                    block_seconds: float = 0.25, frames: int | None = None) -> dict:
    """Upsample the open stream ``f`` into a WAV on the binary stream ``out`` (see the module
    docstring), or into the file ``out`` (a path: written atomically, format by suffix).

    ``subtype`` 'auto' keeps a PCM_16/PCM_24 input's subtype, else FLOAT (PCM_24 for FLAC).
    ``frames``: input frames when known (the output header then states the exact length).
    PCM output is clipped to [-1, 1]. Returns ``{"input_samples", "output_samples", "seconds", "clipped",
    "input_lowpass", "model_seconds", "first_output_seconds"}`` (samples at input/output rate).
    """
    to_file = isinstance(out, (str, os.PathLike))
    if subtype == "auto":
        subtype = f.subtype if f.subtype in ("PCM_16", "PCM_24") else "FLOAT"
    if to_file and subtype == "FLOAT" and Path(out).suffix.lower() == ".flac":
        subtype = "PCM_24"  # FLAC has no float samples
    if frames is None:
        frames = stream_frames(f)
    out_frames = frames * upsampler.factor if frames is not None and f.samplerate == upsampler.input_rate else None
    t0 = time.perf_counter()
    counts = new_stream_counts()
    with (audio.open_atomic_writer(out, upsampler.output_rate, subtype) if to_file
          else contextlib.nullcontext(WavPipeWriter(out, upsampler.output_rate, subtype, out_frames))) as writer:
        lowpass = _upsample_into(f, writer, upsampler, subtype, block_seconds, counts, t0)
    if counts["clipped"]:
        log.warning("%s: %d samples clipped to [-1, 1] (%s output)", "<stdout>" if not to_file else out,
                    counts["clipped"], subtype)
    return {"input_samples": counts["in"], "output_samples": counts["out"], "subtype": subtype,
            "seconds": counts["in"] / upsampler.input_rate, "clipped": counts["clipped"],
            "input_lowpass": lowpass, "model_seconds": time.perf_counter() - t0,
            "first_output_seconds": counts["first"]}


def _upsample_into(f, writer, upsampler, subtype, block_seconds, counts, t0) -> bool:
    """Read, band-limit if needed, upsample and write; returns whether the input was low-passed."""

    blocks = read_blocks(f, block_seconds, upsampler.input_rate)
    head = []  # the band-edge decision looks at one window: the first output needs that much anyway
    while sum(map(len, head)) < upsampler.window and (b := next(blocks, None)) is not None:
        head.append(b)
    first = np.concatenate(head) if head else np.zeros(0, np.float32)
    lowpass = bandlimit.needs_lowpass(first, upsampler.input_lowpass)
    if lowpass and upsampler.input_lowpass == "auto":
        log.info("<stdin>: content at the band edge; low-passing it like the training inputs")
    blocks = itertools.chain([first], blocks)
    if lowpass:
        blocks = bandlimit.lowpass_stream(blocks)
    stream_to_writer(upsampler, blocks, writer, subtype, counts, t0)
    return lowpass
