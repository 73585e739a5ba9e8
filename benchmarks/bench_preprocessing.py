"""Benchmark: splicing throughput (seconds of audio per wall second) on a generated corpus.

Generates ``--recordings`` x ``--seconds`` of speech-like 16 kHz flac in a temp dir, runs
:func:`speechsr.splicing.splice_corpus` with ``--jobs`` workers (fresh output each repeat) and
prints the throughput against the 200x real-time target, plus a one-process breakdown of one
recording (read+resample, sox low-res twin, clip writing). Example::

    nice -n 19 python benchmarks/bench_preprocessing.py --jobs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET = 200.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recordings", type=int, default=20, help="recordings in the generated corpus")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each recording (s)")
    p.add_argument("--splice-duration", type=float, default=2.0, help="clip length (s)")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="worker processes")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (fresh output dir each)")
    return p.parse_args(argv)


def speechlike(seconds: float, rate: int, seed: int):
    """The tests' speech-like signal (test/conftest.py ``speech_like``), float32 [time]."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from conftest import speech_like
    return speech_like(seconds, rate, seed)


def make_corpus(folder: Path, n: int, seconds: float, rate: int = 16000) -> None:
    import soundfile as sf
    folder.mkdir(parents=True)
    for i in range(n):
        sf.write(folder / f"rec{i:03d}.flac", speechlike(seconds, rate, i), rate, subtype="PCM_16")


def breakdown(path: Path, s) -> dict:
    """Seconds per stage for one recording in this process."""
    import soundfile as sf
    from speechsr import audio
    t0 = time.perf_counter()
    x, _ = audio.read_audio(path, rate=s.sampling_rate)
    t1 = time.perf_counter()
    lr = audio.sox_downsample(x, s.sampling_rate, s.downsample_rate)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        hr_len, lr_len = int(s.splice_duration * s.sampling_rate), int(s.splice_duration * s.downsample_rate)
        for i in range(len(x) // hr_len):
            sf.write(f"{d}/{i}.hr.wav", x[i * hr_len:(i + 1) * hr_len], s.sampling_rate, subtype="PCM_16")
            sf.write(f"{d}/{i}.lr.wav", lr[i * lr_len:(i + 1) * lr_len], s.downsample_rate, subtype="PCM_16")
    t3 = time.perf_counter()
    return {"read": t1 - t0, "sox": t2 - t1, "write": t3 - t2}


def main(argv=None) -> None:
    args = parse_args(argv)
    from speechsr import settings
    from speechsr.splicing import splice_corpus

    with tempfile.TemporaryDirectory(prefix="bench_preprocessing_") as tmp:
        corpus = Path(tmp) / "corpus"
        t0 = time.perf_counter()
        make_corpus(corpus, args.recordings, args.seconds)
        print(f"corpus: {args.recordings} x {args.seconds:g} s 16 kHz flac "
              f"({args.recordings * args.seconds / 60:.1f} min), generated in {time.perf_counter() - t0:.1f} s")
        raw = {"input_dir_name_base": str(corpus), "input_dir_name_dirs": [], "input_data_suffix": [".flac"],
               "output_dir": "", "start_time": 0.0, "end_time": 0.0, "splice_duration": args.splice_duration,
               "last_clip": "drop", "sampling_rate": 16000, "downsample_rate": 4000, "clip_subtype": "PCM_16",
               "test_fraction": 0.0, "validation_fraction": 0.0, "split_by": "recording", "split_seed": 0}
        rates = []
        for r in range(args.repeats):
            s = settings.validate("data", dict(raw, output_dir=f"{tmp}/out{r}"), "benchmark")
            summary = splice_corpus(s, jobs=args.jobs, progress=False)
            rates.append(summary.throughput)
            print(f"run {r + 1}: {summary.elapsed_s:.2f} s wall, {summary.clips} clips, "
                  f"{summary.throughput:.0f}x real time")
        stages = breakdown(corpus / "rec000.flac", s)
        per_min = {k: v * 60 / args.seconds * 1000 for k, v in stages.items()}
        print(f"one process, per minute of audio: read+resample {per_min['read']:.0f} ms, "
              f"sox twin {per_min['sox']:.0f} ms, write clips {per_min['write']:.0f} ms")
        best, med = max(rates), statistics.median(rates)
        print(f"throughput (jobs={args.jobs}, load avg {os.getloadavg()[0]:.2f}): median {med:.0f}x, "
              f"best {best:.0f}x real time; target {TARGET:.0f}x: {'met' if med >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
