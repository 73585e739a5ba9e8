"""Cut every recording of a corpus into aligned high-res / low-res clip pairs.

Per recording (one worker process each, memory bounded by one recording per worker):

1. read it as mono at ``sampling_rate`` Hz (:func:`speechsr.audio.read_audio`: downmix + soxr);
2. trim ``start_time`` s from the start and up to ``end_time`` (``<= 0``: that many seconds
   before the end; ``> 0``: absolute end time in seconds);
3. make the low-res twin once for the whole trimmed recording with sox
   (:func:`speechsr.audio.sox_downsample`, ``downsample_rate`` Hz), or, with
   ``low_res_channel`` 'telephone', through a phone line (:mod:`speechsr.channel`: band-pass,
   G.711 mu-law/A-law drawn per clip, seeded by ``channel_seed`` and the recording id);
4. cut both into clips of ``splice_duration`` s: clip ``i`` is samples
   ``[i*H, (i+1)*H)`` of the high-res and ``[i*H/f, (i+1)*H/f)`` of the low-res signal
   (``H = splice_duration * sampling_rate``, ``f = sampling_rate / downsample_rate``), so both
   cover the same time span; the partial last clip is dropped or zero-padded (``last_clip``).
5. with ``speed_factors`` other than ``[1.0]``, steps 3-4 are repeated for the recording played
   that many times faster (soxr resampling: pitch, formants and tempo move together); those
   clips follow the first ones under the same recording id, so a split keeps them together.

Layout: ``<output_dir>/clips/<id>/<id>_<index:05d>.{hr,lr}.wav`` plus ``<id>.done.json``
(manifest). A recording is written into ``clips/.<id>.partial/`` and renamed into place when
complete, so an interrupted run never leaves half a recording; a rerun reuses every recording
whose manifest matches the current settings. Unreadable inputs are skipped with a reason, and so
are sources that cannot serve as high-res targets (see :func:`narrowband_reason`) unless
``allow_narrowband`` is set, and recordings whose clips the output file system cannot name
(:func:`name_problem`: an id longer than its names may be). A failed write (disk full, I/O
error, permission) is an error of the run, not of an input: :func:`splice_corpus` stops with
:class:`speechsr.audio.WriteError`, keeping every recording completed so far (a rerun resumes). Workers die with the parent
process, and Ctrl-C or SIGTERM stops them at once, keeping the recordings complete by then
(:mod:`speechsr.workers`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import errno
import json
import logging
import os
import shutil
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechsr import audio, channel, resamplers, workers
from speechsr.corpus import find_recordings, resolve_data_path
from speechsr.settings import DataSettings, to_json

MANIFEST_SUFFIX = ".done.json"
PARTIAL_SUFFIX = ".partial"
#: A source whose energy above a quarter of ``sampling_rate`` (the top half of the target band,
#: e.g. 4-8 kHz) is below this share of its total (dB) cannot serve as a high-res target.
#: LibriSpeech and TED-LIUM speech measure -36 dB at the lowest; an 8 kHz source resampled to
#: 16 kHz measures about -100 dB.
HIGH_BAND_MIN_DB = -50.0


# ---------------------------------------------------------------------------------------------
# Parameters and manifests


def clip_lengths(s: DataSettings) -> tuple[int, int]:
    """``(high-res, low-res)`` clip length in samples; ValueError if not whole numbers."""
    hr = s.splice_duration * s.sampling_rate
    lr = s.splice_duration * s.downsample_rate
    if abs(lr - round(lr)) > 1e-6 or round(lr) < 1:
        raise ValueError(f"splice_duration {s.splice_duration} s is not a whole number of samples "
                         f"at downsample_rate {s.downsample_rate} Hz")
    return int(round(hr)), int(round(lr))


def clip_params(s: DataSettings) -> dict:
    """The settings that determine a recording's clips (stored in and checked against manifests)."""
    keys = ["sampling_rate", "downsample_rate", "splice_duration", "start_time", "end_time", "last_clip",
            "clip_subtype"]
    if s.low_res_channel == "telephone":  # sox twins keep the manifests of earlier runs valid
        keys += ["low_res_channel", "telephone_band_hz", "telephone_codecs", "telephone_gain_db",
                 "telephone_edge_jitter_hz", "channel_seed"]
    elif s.low_res_channel == "resamplers":
        keys += ["low_res_channel", "resamplers", "channel_seed"]
    if s.speed_factors != [1.0]:  # likewise
        keys.append("speed_factors")
    return {k: getattr(s, k) for k in keys}


def clip_names(rid: str, index: int) -> tuple[str, str]:
    """File names of clip ``index`` of recording ``rid``: ``(high-res, low-res)``."""
    stem = f"{rid}_{index:05d}"
    return f"{stem}.hr.wav", f"{stem}.lr.wav"


def manifest_path(rec_dir: Path) -> Path:
    return rec_dir / f"{rec_dir.name}{MANIFEST_SUFFIX}"


def read_manifest(rec_dir: str | os.PathLike, params: dict | None = None) -> dict | None:
    """The manifest of a complete recording folder, or None when missing/incomplete.

    With ``params``, a manifest made with other clip parameters also counts as incomplete.
    """
    rec_dir = Path(rec_dir)
    try:
        m = json.loads(manifest_path(rec_dir).read_text())
        if m["recording_id"] != rec_dir.name or (params is not None and m["params"] != params):
            return None
        for i in range(int(m["clips"])):
            if not all((rec_dir / name).is_file() for name in clip_names(m["recording_id"], i)):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return m


def high_band_db(x: np.ndarray, rate: int, segments: int = 64, n_fft: int = 4096) -> float:
    """Energy above ``rate / 4`` Hz as a share of the total, in dB (``-inf`` for silence).

    Measured on up to ``segments`` Hann-windowed frames of ``n_fft`` samples spread evenly over
    ``x`` (mono ``[time]`` at ``rate`` Hz), so the cost does not grow with the recording.
    """
    n = min(n_fft, len(x))
    if n < 16:
        return float("-inf")
    starts = np.linspace(0, len(x) - n, min(segments, max(1, len(x) // n))).astype(int)
    frames = np.stack([x[i:i + n] for i in starts]).astype(np.float64) * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    total = power.sum()
    if total <= 0:
        return float("-inf")
    return float(10 * np.log10(max(power[freqs >= rate / 4].sum() / total, 1e-30)))


def narrowband_reason(source_rate: int, x: np.ndarray | None, rate: int) -> str | None:
    """Why a source cannot serve as a ``rate`` Hz training target, or None when it can.

    It cannot when it was sampled below ``rate`` Hz (``x`` not needed), or when ``x`` (the
    trimmed recording resampled to ``rate`` Hz) has almost no energy in the top half of the band
    (:data:`HIGH_BAND_MIN_DB`), e.g. 8 kHz audio saved at 16 kHz.
    """
    if source_rate < rate:
        return (f"narrowband: sampled at {source_rate} Hz, below sampling_rate {rate} Hz, so it has no "
                f"content above {source_rate / 2000:g} kHz to learn from (set allow_narrowband to use it)")
    if x is None:
        return None
    db = high_band_db(x, rate)
    if db == float("-inf"):
        return "silent: no signal energy"
    if db < HIGH_BAND_MIN_DB:
        return (f"narrowband: energy above {rate / 4000:g} kHz is {db:.0f} dB of the total (a high-res "
                f"target needs at least {HIGH_BAND_MIN_DB:.0f} dB; set allow_narrowband to use it)")
    return None


def low_res_twin(hr: np.ndarray, p: dict, rid: str, lr_len: int) -> np.ndarray:
    """The low-res twin ``[time]`` at ``downsample_rate`` Hz of a trimmed recording ``hr``.

    ``low_res_channel`` 'sox' (default): :func:`speechsr.audio.sox_downsample`; 'telephone':
    :class:`speechsr.channel.TelephoneChannel`, seeded by ``channel_seed`` and the recording id,
    drawing gain and codec once per clip of ``lr_len`` samples; 'resamplers': one of ``resamplers``
    (:mod:`speechsr.resamplers`) drawn per recording, seeded likewise.
    """
    if p.get("low_res_channel", "sox") == "sox":
        return audio.sox_downsample(hr, p["sampling_rate"], p["downsample_rate"])
    if p["low_res_channel"] == "resamplers":
        kind = resamplers.choose(p["resamplers"], rid, p["channel_seed"])
        return resamplers.downsample(hr, p["sampling_rate"], p["downsample_rate"], kind)
    seed = channel.clip_seed(p["channel_seed"], rid)
    return channel.from_clip_params(p).apply(hr, p["sampling_rate"], seed=seed, segment=lr_len)


def trim_bounds(n: int, rate: int, start_time: float, end_time: float) -> tuple[int, int]:
    """Sample range ``[first, last)`` kept of ``n`` samples at ``rate`` Hz (may be empty)."""
    first = int(round(start_time * rate))
    last = n - int(round(-end_time * rate)) if end_time <= 0 else int(round(end_time * rate))
    last = min(n, last)
    return min(first, n), max(min(first, n), last)


# ---------------------------------------------------------------------------------------------
# One recording (runs in a worker process)


def reused_result(rid: str, path: str | os.PathLike, manifest: dict) -> dict:
    """The result dict of a recording found complete (``manifest`` from :func:`read_manifest`)."""
    return {"recording_id": rid, "path": str(path), "status": "reused", "clips": manifest["clips"],
            "duration_s": manifest["duration_s"], "input_s": manifest["source_duration_s"],
            "clipped_samples": manifest.get("clipped_samples", 0)}


def splice_recording(rid: str, path: str | os.PathLike, params: dict, clips_dir: str | os.PathLike,
                     allow_narrowband: bool = False) -> dict:
    """Splice one recording into ``clips_dir/<rid>/``; returns a result dict.

    ``status`` is 'done' (written now), 'reused' (complete from an earlier run) or 'skipped'
    (with ``reason``); ``warning`` (optional) notes a truncated source. Never raises for a bad
    input: every exception becomes 'skipped' — except :class:`speechsr.audio.WriteError` (the
    output side failed), which is raised after removing the half-written recording.
    """
    clips_dir = Path(clips_dir)
    final = clips_dir / rid
    partial = clips_dir / f".{rid}{PARTIAL_SUFFIX}"
    result = {"recording_id": rid, "path": str(path), "status": "skipped", "clips": 0,
              "duration_s": 0.0, "input_s": 0.0, "clipped_samples": 0}
    if reason := name_problem(clips_dir, rid):
        return {**result, "reason": reason}
    try:
        m = read_manifest(final, params)
        if m is not None:
            return reused_result(rid, path, m)
        if final.exists():  # stale: incomplete or made with other settings
            _writing(final, lambda: shutil.rmtree(final))
        result.update(_splice(rid, Path(path), params, partial, allow_narrowband))
        if result["status"] == "done":
            _writing(final, lambda: os.rename(partial, final))
    except audio.WriteError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad input must never abort the run
        reason = str(e) if isinstance(e, audio.AudioError) else f"{type(e).__name__}: {e}"
        result.update(status="skipped", reason=" ".join(reason.split())[:500])
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return result


def name_problem(clips_dir: Path, rid: str) -> str | None:
    """Why the outputs of recording ``rid`` cannot be named under ``clips_dir``, or None.

    The id is the recording's path under the corpus root (:func:`speechsr.corpus.recording_id`),
    so deep folders (or a folder link looping back on itself) can make names longer than the file
    system takes (``NAME_MAX``, usually 255 bytes; ``PATH_MAX`` for the whole path).
    """
    names = [f".{rid}{PARTIAL_SUFFIX}", f"{rid}{MANIFEST_SUFFIX}", *clip_names(rid, 99999)]
    longest = max(len(os.fsencode(n)) for n in names)
    try:
        name_max, path_max = os.pathconf(clips_dir, "PC_NAME_MAX"), os.pathconf(clips_dir, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if longest > name_max:
        return (f"file name too long: its clips would be named with {longest} bytes, the output file system "
                f"takes {name_max} (the recording id is its path under the corpus root: move it higher up)")
    if len(os.fsencode(clips_dir / rid / names[-1])) >= path_max:
        return f"path too long: its clips' paths would exceed the file system's {path_max} bytes"
    return None


#: errno values of a write that fail because of the recording's name, not the output's state.
_NAME_ERRNOS = (errno.ENAMETOOLONG, errno.ELOOP)


def _writing(target: Path, write) -> None:
    """Call ``write()``, an operation that writes ``target``: a failure becomes WriteError, or
    an AudioError (the recording is skipped) when its name is the cause (:data:`_NAME_ERRNOS`)."""
    try:
        write()
    except (OSError, sf.SoundFileError) as e:
        error = audio.write_error(target, e)
        if error.errno in _NAME_ERRNOS:
            raise audio.AudioError(str(error)) from None
        raise error from None


def _clip_pair(hr: np.ndarray, lr: np.ndarray, hr_len: int, lr_len: int, pad: bool, clip: bool
               ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Cut ``hr``/``lr`` to whole clips (the partial last one dropped, or zero-padded with ``pad``);
    with ``clip``, samples outside [-1, 1] are clipped (integer WAV would wrap around).
    Returns ``(hr, lr, padded high-res samples, clipped samples)``."""
    count, rest = divmod(len(hr), hr_len)
    padded = 0
    if rest and pad:
        padded = hr_len - rest
        hr = np.pad(hr, (0, padded))
        count += 1
    lr = np.pad(lr, (0, max(0, count * lr_len - len(lr))))
    hr, lr = hr[:count * hr_len], lr[:count * lr_len]
    clipped = 0
    if clip:
        clipped = int(np.count_nonzero(np.abs(hr) > 1) + np.count_nonzero(np.abs(lr) > 1))
        if clipped:
            hr, lr = np.clip(hr, -1, 1), np.clip(lr, -1, 1)
    return hr, lr, padded, clipped


def _splice(rid: str, path: Path, p: dict, partial: Path, allow_narrowband: bool = False) -> dict:
    sr, dr = p["sampling_rate"], p["downsample_rate"]
    hr_len = int(round(p["splice_duration"] * sr))
    lr_len = int(round(p["splice_duration"] * dr))
    info = audio.audio_info(path)
    note = audio.truncation_note(info)
    extra = {"warning": note} if note else {}
    if not allow_narrowband and (reason := narrowband_reason(info.samplerate, None, sr)):
        return {"status": "skipped", "input_s": info.frames / info.samplerate, "reason": reason, **extra}
    x, _ = audio.read_audio(path, rate=sr, warn_truncated=False)
    source_s = len(x) / sr
    first, last = trim_bounds(len(x), sr, p["start_time"], p["end_time"])
    hr = x[first:last]
    if len(hr) < hr_len:
        return {"status": "skipped", "input_s": source_s,
                "reason": f"too short: {len(hr) / sr:.2f} s left after trimming "
                          f"(source {source_s:.2f} s), one clip needs {p['splice_duration']:g} s", **extra}
    if not allow_narrowband and (reason := narrowband_reason(info.samplerate, hr, sr)):
        return {"status": "skipped", "input_s": source_s, "reason": reason, **extra}
    his, los, pad_s, clipped = [], [], 0.0, 0
    for factor in p.get("speed_factors", [1.0]):
        hr_v = hr if factor == 1.0 else audio.resample(hr, int(round(sr * factor)), sr)  # played faster
        hr_v, lr_v, pad_v, clipped_v = _clip_pair(hr_v, low_res_twin(hr_v, p, rid, lr_len), hr_len, lr_len,
                                                  p["last_clip"] == "pad", p["clip_subtype"] != "FLOAT")
        his.append(hr_v)
        los.append(lr_v)
        pad_s, clipped = pad_s + pad_v / sr, clipped + clipped_v
    hr, lr = np.concatenate(his), np.concatenate(los)
    count = len(hr) // hr_len
    if partial.exists():
        _writing(partial, lambda: shutil.rmtree(partial))
    _writing(partial, lambda: partial.mkdir(parents=True))
    for i in range(count):
        hr_name, lr_name = clip_names(rid, i)
        _writing(partial / hr_name, lambda: sf.write(partial / hr_name, hr[i * hr_len:(i + 1) * hr_len], sr,
                                                     subtype=p["clip_subtype"], format="WAV"))
        _writing(partial / lr_name, lambda: sf.write(partial / lr_name, lr[i * lr_len:(i + 1) * lr_len], dr,
                                                     subtype=p["clip_subtype"], format="WAV"))
    manifest = {"recording_id": rid, "source": str(path), "params": p, "clips": count,
                "clip_duration_s": p["splice_duration"], "duration_s": count * p["splice_duration"],
                "source_duration_s": source_s, "trimmed_duration_s": (last - first) / sr,
                "padded_s": pad_s, "clipped_samples": clipped}
    manifest_file = partial / f"{rid}{MANIFEST_SUFFIX}"
    _writing(manifest_file, lambda: manifest_file.write_text(json.dumps(manifest, indent=1) + "\n"))
    return {"status": "done", "clips": count, "duration_s": manifest["duration_s"],
            "input_s": source_s, "clipped_samples": clipped, **extra}


def _work(task: tuple) -> dict:
    return splice_recording(*task)


def _quiet_worker() -> None:
    """Worker initializer: warnings travel in the results, not on the worker's stderr."""
    logging.getLogger("speechsr").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------
# The whole corpus


@dataclasses.dataclass
class SpliceSummary:
    """Outcome of :func:`splice_corpus` (also written to ``data_info.json``)."""
    found: int
    processed: int
    reused: int
    skipped: list
    clips: int
    clip_duration_s: float
    total_duration_s: float
    input_seconds: float
    elapsed_s: float
    throughput: float
    output_dir: str
    data_info: str
    results: list = dataclasses.field(repr=False, default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)  # {recording_id, path, warning}


def _run_pool(tasks: list[tuple], jobs: int, on_result) -> None:
    """Run ``_work`` over ``tasks`` in processes; a crashed worker's task is retried alone once.

    An interruption kills the workers at once (:func:`speechsr.workers.pool`); a write failure
    lets the running tasks end.
    """
    pending = collections.deque(tasks)
    while pending:
        suspects = []
        with workers.pool(jobs, _quiet_worker) as pool:
            inflight: dict = {}
            while pending or inflight:
                while pending and len(inflight) < 2 * jobs and not suspects:
                    task = pending.popleft()
                    inflight[pool.submit(_work, task)] = task
                if not inflight:
                    break
                done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    task = inflight.pop(fut)
                    try:
                        on_result(fut.result())
                    except BrokenProcessPool:
                        suspects.append(task)
                if suspects:  # the pool is dead: every in-flight task is a suspect
                    suspects += list(inflight.values())
                    break
        for task in suspects:  # retry each alone, so only a task that crashes by itself is skipped
            try:
                with workers.pool(1, _quiet_worker) as solo:
                    on_result(solo.submit(_work, task).result())
            except BrokenProcessPool:
                on_result({"recording_id": task[0], "path": task[1], "status": "skipped", "clips": 0,
                           "duration_s": 0.0, "input_s": 0.0, "clipped_samples": 0,
                           "reason": "worker process crashed while reading or splicing this file"})


def _remove_partials(clips_dir: Path) -> None:
    """Remove the ``.<id>.partial`` folders of recordings being written by workers that are gone."""
    for stale in clips_dir.glob(f".*{PARTIAL_SUFFIX}"):
        shutil.rmtree(stale, ignore_errors=True)


def splice_corpus(s: DataSettings, jobs: int | None = None, progress: bool = True) -> SpliceSummary:
    """Splice every recording of the corpus described by ``s``; write ``data_info.json``.

    ``jobs`` worker processes (default ``os.cpu_count()``). Raises CorpusError/ValueError for a
    missing corpus or unusable settings before any work starts, and
    :class:`speechsr.audio.WriteError` when an output cannot be written (complete recordings
    are kept; a rerun resumes).
    """
    t0 = time.perf_counter()
    hr_len, lr_len = clip_lengths(s)
    params = clip_params(s)
    base = resolve_data_path(s.input_dir_name_base)
    out = resolve_data_path(s.output_dir)
    recordings = find_recordings(base, s.input_dir_name_dirs, s.input_data_suffix, exclude=[out])
    clips_dir = out / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    _remove_partials(clips_dir)  # left by a run killed with SIGKILL
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(recordings)))

    results: list[dict] = []
    bar = tqdm(total=len(recordings), unit="rec", disable=not progress, dynamic_ncols=True)
    audio_s = 0.0

    def on_result(r: dict) -> None:
        nonlocal audio_s
        if r["status"] == "reused" and r["recording_id"] not in complete_at_start:
            r["status"] = "done"  # finished in this run by a worker whose report was lost to a crash
        results.append(r)
        audio_s += r["input_s"]
        bar.update(1)
        bar.set_postfix_str(f"audio={audio_s:.0f}s", refresh=False)

    tasks, complete_at_start = [], set()
    for rec in recordings:  # complete from an earlier run: reuse without starting a worker
        m = read_manifest(clips_dir / rec.id, params)
        if m is None:
            tasks.append((rec.id, str(rec.path), params, str(clips_dir), s.allow_narrowband))
        else:
            complete_at_start.add(rec.id)
            on_result(reused_result(rec.id, rec.path, m))
    try:
        _run_pool(tasks, jobs, on_result)
    except BaseException:  # interrupted (workers killed mid-recording) or a write failed
        _remove_partials(clips_dir)
        raise
    finally:
        bar.close()

    results.sort(key=lambda r: r["recording_id"])
    ok = [r for r in results if r["status"] != "skipped"]
    skipped = [{"recording_id": r["recording_id"], "path": r["path"], "reason": r["reason"]}
               for r in results if r["status"] == "skipped"]
    warnings = [{"recording_id": r["recording_id"], "path": r["path"], "warning": r["warning"]}
                for r in results if r.get("warning")]
    done = [r for r in results if r["status"] == "done"]
    elapsed = time.perf_counter() - t0
    processed_s = sum(r["input_s"] for r in done)
    summary = SpliceSummary(
        found=len(recordings), processed=len(done), reused=len(ok) - len(done), skipped=skipped,
        clips=sum(r["clips"] for r in ok), clip_duration_s=s.splice_duration,
        total_duration_s=sum(r["duration_s"] for r in ok), input_seconds=processed_s,
        elapsed_s=elapsed, throughput=processed_s / elapsed if elapsed > 0 else 0.0,
        output_dir=str(out), data_info=str(out / "data_info.json"), results=results, warnings=warnings)
    info = {
        "settings": to_json(s),
        "input_dir": str(base),
        "output_dir": str(out),
        "recordings": {"found": summary.found, "processed": summary.processed,
                       "reused": summary.reused, "skipped": len(skipped)},
        "clips": summary.clips,
        "clip_duration_s": s.splice_duration,
        "clip_samples": {"high_res": hr_len, "low_res": lr_len},
        "total_clip_duration_s": round(summary.total_duration_s, 6),
        "sampling_rate": s.sampling_rate,
        "downsample_rate": s.downsample_rate,
        "clipped_samples": sum(r["clipped_samples"] for r in ok),
        "sox_version": audio.sox_version(),
        "jobs": jobs,
        "skipped": skipped,
        "warnings": warnings,
        "elapsed_s": round(elapsed, 3),
        "input_audio_s": round(processed_s, 3),
        "throughput_x_realtime": round(summary.throughput, 2),
    }
    try:
        with audio.atomic_path(out / "data_info.json") as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")
    except OSError as e:
        raise audio.write_error(out / "data_info.json", e) from None
    return summary
