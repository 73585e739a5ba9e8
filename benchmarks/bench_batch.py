"""Benchmark: `speechsr batch` on Ray Data against a plain `speechsr upsample` of the same folder.

Generates ``--files`` x ``--seconds`` of 4 kHz speech-like audio (default 200 x 18 s = 1 h; kept in
``--data`` for re-use), then times, each in a fresh process with a fresh output folder, end to
end (Python and Ray start-up included): `speechsr upsample DIR -o OUT`, and `speechsr batch DIR
-o OUT` with each ``--configs`` WORKERSxCPUS (workers x CPUs per worker). Prints hours of audio
per hour of wall time for each, the ratio of each batch run's wall time to the plain command's,
and whether the outputs are byte-identical to the plain command's. Example::

    python benchmarks/bench_batch.py --configs 1x1 2x1 1x2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--files", type=int, default=200, help="generated 4 kHz files")
    p.add_argument("--seconds", type=float, default=18.0, help="length of each file (s)")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "speechsr-bench-batch",
                   help="folder of the generated files (re-used when complete)")
    p.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2"], help="WORKERSxCPUS per batch run")
    return p.parse_args(argv)


def make_archive(folder: Path, n: int, seconds: float) -> Path:
    """``n`` files of ``seconds`` s of the tests' speech-like signal, sox-downsampled to 4 kHz, in ten folders."""
    inputs = folder / f"{n}x{seconds:g}s"
    if inputs.is_dir() and len(list(inputs.rglob("*.wav"))) == n:
        return inputs
    sys.path.insert(0, str(ROOT / "test"))
    from conftest import speech_like  # the tests' signal generator
    from speechsr import audio
    for i in range(n):
        audio.write_audio(inputs / f"part{i % 10}" / f"f{i:04d}.wav",
                          audio.sox_downsample(speech_like(seconds, seed=i), 16000, 4000), 4000, "PCM_16")
    return inputs


def timed(argv: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout of a fresh ``python ARGV...`` process; stops on failure."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed: {res.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0, res.stdout


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.wav"))}


def main(argv=None) -> int:
    args = parse_args(argv)
    configs = [tuple(int(v) for v in c.lower().split("x")) for c in args.configs]
    inputs = make_archive(args.data, args.files, args.seconds)
    hours = args.files * args.seconds / 3600
    print(f"{args.files} files x {args.seconds:g} s = {hours:.2f} h of 4 kHz audio; {os.cpu_count()} CPUs; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as work:
        ref = Path(work) / "upsample"
        plain, _ = timed(["upsample_audio_file.py", str(inputs), "-o", str(ref), "-q"])
        reference = digests(ref)
        print(f"speechsr upsample (one process, {os.cpu_count()} interpreters): {plain:.1f} s, "
              f"{hours * 3600 / plain:.0f} h of audio per hour")
        for workers, cpus in configs:
            out = Path(work) / f"batch-{workers}x{cpus}"
            wall, stdout = timed(["batch_upsample.py", str(inputs), "-o", str(out), "--num-workers", str(workers),
                                  "--cpus-per-worker", str(cpus)])
            job = stdout.split(" in ", 1)[1].split(" s", 1)[0]  # the summary: "... h of audio in S s ..."
            same = digests(out) == reference
            print(f"speechsr batch, {workers} worker(s) x {cpus} CPU: {wall:.1f} s, {hours * 3600 / wall:.0f} h of "
                  f"audio per hour, {wall / plain:.2f}x the plain command's time (the job itself, without Ray's "
                  f"start-up: {job} s, {hours * 3600 / float(job):.0f} h/h); outputs "
                  f"{'byte-identical' if same else 'differ from the plain command'}")
            shutil.rmtree(out)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
