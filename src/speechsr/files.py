"""Upsampling audio files with an :class:`speechsr.inference.Upsampler`: the input band check,
the output subtype, the input low-pass decision and streaming a file (resampled to the model's
input rate) into an atomically written output. No TensorFlow here (see :mod:`speechsr.loading`).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path

import numpy as np

from speechsr import audio, bandlimit, signals
from speechsr.inference import NonFiniteOutput, Upsampler
from speechsr.settings import ModelSettings

log = logging.getLogger("speechsr")

#: Output subtypes kept from the input when ``subtype == "auto"``.
PCM_SUBTYPES = ("PCM_16", "PCM_24")


class InputBandError(ValueError):
    """The input already has high-band content: it is not low-res audio for this model."""



def check_input_band(path: str | os.PathLike, s: ModelSettings, seconds: float = 60.0) -> dict:
    """Check that ``path`` is low-band audio for the model (first ``seconds`` at its own rate).

    Raises :class:`InputBandError` when the file's rate is >= ``output_rate`` and its energy
    above ``output_rate / 4`` Hz is more than -30 dB of the total. Warns (logger
    ``speechsr``) when the rate is above ``input_rate`` and the energy above ``input_rate / 2``
    Hz is more than -40 dB (that band is low-passed away). Returns the measurements (dB).
    """
    info = audio.audio_info(path)
    rate = info.samplerate
    result = {"rate": rate}
    if rate <= s.input_rate:
        return result
    x, _ = audio.read_audio(path, stop=min(seconds, info.frames / rate))
    if x.size < 16:
        return result
    freqs, psd = bandlimit.welch_psd(x.astype(np.float64), nperseg=min(4096, x.size))  # scipy's welch
    freqs = freqs * rate / 2  # Nyquist units -> Hz (psd's scale cancels in the ratios below)
    total = psd.sum()
    if total <= 0:
        return result

    def rel_db(lo_hz: float) -> float:
        return float(10 * np.log10(max(psd[freqs > lo_hz].sum() / total, 1e-30)))

    content_hz = float(freqs[np.searchsorted(np.cumsum(psd) / total, 0.999)])
    result.update(content_khz=content_hz / 1000, above_input_band_db=rel_db(s.input_rate / 2))
    if rate >= s.output_rate:
        result["above_quarter_output_db"] = rel_db(s.output_rate / 4)
        if result["above_quarter_output_db"] > -30:
            raise InputBandError(
                f"{path}: input already has content up to {content_hz / 1000:.1f} kHz; this tool "
                f"upsamples {s.input_rate / 1000:g} kHz-sampled audio (content below "
                f"{s.input_rate / 2000:g} kHz); to test the model on high-res audio use --reference")
    if result["above_input_band_db"] > -40:
        log.warning("%s: has content above %g kHz (%.0f dB of total) that is low-passed away: "
                    "the model input is %d Hz audio", path, s.input_rate / 2000,
                    result["above_input_band_db"], s.input_rate)
    return result


def output_subtype(in_path: str | os.PathLike, out_path: str | os.PathLike, subtype: str = "auto") -> str:
    """The output subtype: forced, or the input's when PCM_16/PCM_24, else FLOAT (PCM_24 for FLAC)."""
    if subtype == "auto":
        src = audio.audio_info(in_path).subtype
        subtype = src if src in PCM_SUBTYPES else "FLOAT"
    if subtype == "FLOAT" and Path(out_path).suffix.lower() == ".flac":
        subtype = "PCM_24"  # FLAC has no float samples
    return subtype


def upsample_file(in_path: str | os.PathLike, out_path: str | os.PathLike, upsampler: Upsampler,
                  subtype: str = "auto", block_seconds: float = 30.0, check_band: bool = True) -> dict:
    """Stream ``in_path`` (resampled to ``input_rate``) through the model into ``out_path``.

    The output is written atomically (no partial file on failure) at ``output_rate`` Hz.
    PCM outputs are clipped to [-1, 1]. The input is band-limited first when the upsampler's
    ``input_lowpass`` mode says so (judged on the first block). Returns ``{"input_samples",
    "output_samples", "seconds", "model_seconds", "subtype", "clipped", "input_lowpass"}``
    (samples at input/output rate).
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if audio.same_file(in_path, out_path):  # by name or through a link
        raise ValueError(f"{out_path}: output would overwrite the input")
    if check_band:
        check_input_band(in_path, upsampler.settings)
    subtype = output_subtype(in_path, out_path, subtype)
    counts = new_stream_counts()
    t0 = time.perf_counter()
    blocks = audio.iter_audio_blocks(in_path, block_seconds, rate=upsampler.input_rate)
    first = next(blocks, np.zeros(0, np.float32))  # decides the input low-pass
    lowpass = decide_lowpass(upsampler, in_path, first)
    blocks = itertools.chain([first], blocks)
    if lowpass:
        blocks = bandlimit.lowpass_stream(blocks)
    with audio.open_atomic_writer(out_path, upsampler.output_rate, subtype) as writer:
        stream_to_writer(upsampler, blocks, writer, subtype, counts, t0, in_path)
    if counts["clipped"]:
        log.warning("%s: %d samples clipped to [-1, 1] (%s output)", out_path, counts["clipped"], subtype)
    return {"input_samples": counts["in"], "output_samples": counts["out"], "subtype": subtype,
            "seconds": counts["in"] / upsampler.input_rate, "clipped": counts["clipped"],
            "model_seconds": time.perf_counter() - t0, "input_lowpass": lowpass}


def new_stream_counts() -> dict:
    """Tallies :func:`stream_to_writer` keeps: samples in/out, clipped, first output time (s)."""
    return {"in": 0, "out": 0, "clipped": 0, "first": None}


def stream_to_writer(upsampler: Upsampler, blocks, writer, subtype: str, counts: dict, t0: float,
                     name="input") -> None:
    """Upsample low-res ``blocks`` (``[time]`` at ``input_rate``) into ``writer`` (``.write([time])``).

    PCM subtypes are clipped to [-1, 1]. ``counts`` (:func:`new_stream_counts`) is updated as it
    goes; ``counts["first"]`` is the time (s since ``t0``) of the first output block. Output that
    is not finite is an AudioError naming the input ``name``: NaN is never written.
    """
    def counted(source):
        for b in source:
            counts["in"] += b.size
            yield b

    try:
        for y in upsampler.stream(counted(blocks)):
            if subtype != "FLOAT":
                counts["clipped"] += int(np.count_nonzero(np.abs(y) > 1.0))
                y = np.clip(y, -1.0, 1.0)
            writer.write(y)
            counts["out"] += y.size
            if counts["first"] is None:
                counts["first"] = time.perf_counter() - t0
            signals.check()  # a Ctrl-C / SIGTERM that TensorFlow swallowed while upsampling the block
    except NonFiniteOutput as e:
        raise audio.AudioError(f"{name}: {e}") from None


def decide_lowpass(upsampler: Upsampler, name, head: np.ndarray) -> bool:
    """Whether to band-limit an input whose first samples (model input rate) are ``head``."""
    lowpass = bandlimit.needs_lowpass(head, upsampler.input_lowpass)
    if lowpass and upsampler.input_lowpass == "auto":
        log.info("%s: content at the band edge (%.0f dB above %.3g Hz); low-passing it at %.3g Hz "
                 "like the training inputs (input_lowpass 'auto')", name, bandlimit.edge_energy_db(head),
                 bandlimit.EDGE * upsampler.input_rate / 2, bandlimit.CUTOFF * upsampler.input_rate / 2)
    return lowpass
