"""Benchmark: start-up, end-to-end time, real-time factor (RTF) and peak memory of upsampling.

Per runtime (``--runtimes``, default ``lite tf``: the LiteRT export and TensorFlow; see
``speechsr.runtime``), each figure is printed beside the target of issue 11:

* **one 4-s file end to end**: wall time of ``upsample_audio_file.py in.wav -o out.wav`` as a
  fresh process (Python start, imports, model load, reading, upsampling, writing), target <= 1.5 s;
* **import + model load**: from a fresh process's first ``speechsr`` import to a loaded
  upsampler, target <= 0.5 s (the first model call, which traces / allocates, is shown apart);
* **RTF** on generated speech-like 4 kHz audio of each ``--lengths`` (default 60 s and 600 s),
  start-up excluded (after one warm-up call), through ``speechsr.files.upsample_file``
  (streaming read -> windowed model -> streaming atomic write), target <= 0.006 for the default
  (issue 11 asked 0.004 of the U-Net);
  with the CPU time per audio second beside it (all threads: on a CPU shared with other work
  it shows the compute the wall-clock RTF cannot);
* **peak RSS** of that process (``ru_maxrss``, read before the sinc baseline runs), target < 0.5 GB.

``lite-int8`` (the int8-weight export) can be added to ``--runtimes``.

``--avx2`` repeats everything with ``ONEDNN_MAX_CPU_ISA=AVX2``, which makes TensorFlow's oneDNN
kernels run as on an AVX2-only CPU; LiteRT's XNNPACK has no such switch (it picks its kernels
by CPUID), so its rows there measure the same code as without. Each figure is the median of
``--repeats`` fresh processes (min in brackets): on a shared CPU, run it a few times.

The model is ``--model`` or the upsampling setting 'model'; for TensorFlow, when that file is
missing, an untrained model is built from settings/model_settings.json (same cost). Example::

    nice -n 19 python benchmarks/bench_upsampling.py --lengths 60 600 --avx2
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # the child's start, before any speechsr import

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"e2e_s": 1.5, "startup_s": 0.5, "rtf": 0.006, "rss_gb": 0.5}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="trained .keras model (default: upsampling setting 'model')")
    p.add_argument("--settings", default=None, help="settings directory (default: the project's settings/)")
    p.add_argument("--runtimes", nargs="+", choices=("lite", "lite-int8", "tf"), default=["lite", "tf"])
    p.add_argument("--lengths", type=float, nargs="+", default=[60.0, 600.0], help="audio lengths in seconds")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per figure (median reported)")
    p.add_argument("--avx2", action="store_true", help="also run everything with ONEDNN_MAX_CPU_ISA=AVX2")
    p.add_argument("--window-seconds", type=float, help="override upsampling 'window_seconds'")
    p.add_argument("--batch-size", type=int, help="override upsampling 'batch_size'")
    p.add_argument("--subpixel", choices=("auto", "op", "reshape"), help="subpixel shuffle implementation (tf)")
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)  # internal: one length, JSON out
    p.add_argument("--child-startup", action="store_true", help=argparse.SUPPRESS)  # internal
    p.add_argument("--runtime", default="tf", help=argparse.SUPPRESS)  # internal: the child's runtime
    return p.parse_args(argv)


def write_test_audio(path: Path, seconds: float, rate: int, block_seconds: float = 10.0) -> None:
    """The tests' speech-like signal (test/conftest.py ``speech_like``), written block by block
    (one seed per block) so that memory stays bounded for long files."""
    import soundfile as sf
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from conftest import speech_like
    n, step = int(seconds * rate), int(block_seconds * rate)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for i, a in enumerate(range(0, n, step)):
            f.write(speech_like(min(n - a, step) / rate, rate, seed=i))


def load(args):
    """(upsampler, model note) for the child's runtime."""
    import speechsr  # noqa: F401  (TF environment defaults)
    from speechsr import settings
    from speechsr.inference import Upsampler
    from speechsr.loading import import_tensorflow_quietly, load_upsampler, resolve_model_path
    up = settings.load("upsampling", args.settings, {"window_seconds": args.window_seconds,
                                                     "batch_size": args.batch_size})
    model_path = resolve_model_path(args.model or up.model, from_settings=not args.model)
    if model_path.exists() or args.model or args.runtime == "lite":
        return load_upsampler(model_path, up, args.subpixel, args.runtime), str(model_path), up
    import_tensorflow_quietly()
    from speechsr.model import build_model
    ms = settings.load("model", args.settings)
    if args.subpixel:
        ms = settings.apply_overrides(ms, {"subpixel_implementation": args.subpixel})
    upsampler = Upsampler(build_model(ms), ms, up)
    return upsampler, f"{model_path} missing: untrained model built from settings/model_settings.json", up


def child_startup(args) -> dict:
    """Import + model load in this fresh process, then the first model call."""
    upsampler, note, _ = load(args)
    startup = time.perf_counter() - T_START
    first = upsampler.warmup()
    return {"startup_s": startup, "first_call_s": first, "runtime": upsampler.runtime,
            "tensorflow_imported": "tensorflow" in sys.modules}


def child(args) -> dict:
    """One length in this process: returns the measurements as a dict."""
    upsampler, note, up = load(args)
    from speechsr import audio, baselines
    from speechsr.files import upsample_file
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        write_test_audio(src, args.child, upsampler.input_rate)
        warmup = upsampler.warmup()
        t0, c0 = time.perf_counter(), time.process_time()
        info = upsample_file(src, dst, upsampler, block_seconds=up.block_seconds, check_band=False)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        x, _ = audio.read_audio(src)
        t0 = time.perf_counter()
        baselines.sinc(x, upsampler.input_rate, upsampler.output_rate)
        sinc_seconds = time.perf_counter() - t0
    return {"length_s": args.child, "seconds": seconds, "rtf": seconds / info["seconds"], "warmup_s": warmup,
            "cpu_rtf": cpu_seconds / info["seconds"],
            "rss_gb": rss_kib * 1024 / 1e9, "sinc_seconds": sinc_seconds, "sinc_rtf": sinc_seconds / info["seconds"],
            "output_samples": info["output_samples"], "model": note, "layout": upsampler.describe(),
            "threads": os.cpu_count()}


def run_child(args, extra: list[str], env: dict) -> dict:
    cmd = [sys.executable, __file__, *extra]
    for flag, value in (("--model", args.model), ("--settings", args.settings),
                        ("--window-seconds", args.window_seconds), ("--batch-size", args.batch_size),
                        ("--subpixel", args.subpixel)):
        if value is not None:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(extra)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def end_to_end(args, runtime: str, env: dict, src: Path, out: Path) -> float:
    """Wall seconds of ``upsample_audio_file.py src -o out`` as a fresh process."""
    cmd = [sys.executable, str(ROOT / "upsample_audio_file.py"), str(src), "-o", str(out), "-q",
           "--runtime", runtime]
    if args.model:
        cmd += ["--model", args.model]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"upsample_audio_file.py failed:\n{proc.stderr.strip()}")
    return wall


def measure(args, runtime: str, env: dict) -> dict:
    """Median and min of each figure over ``args.repeats`` fresh processes."""
    samples: dict[str, list] = {"e2e_s": [], "startup_s": [], "first_call_s": []}
    lengths: dict[float, list] = {length: [] for length in args.lengths}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "call.wav"
        write_test_audio(src, 4.0, 4000)
        for _ in range(args.repeats):
            samples["e2e_s"].append(end_to_end(args, runtime, env, src, Path(tmp) / "out.wav"))
            start = run_child(args, ["--child-startup", "--runtime", runtime], env)
            if start["runtime"] != runtime:
                raise RuntimeError(f"asked for runtime {runtime}, got {start['runtime']}")
            samples["startup_s"].append(start["startup_s"])
            samples["first_call_s"].append(start["first_call_s"])
    for _ in range(args.repeats):
        for length in args.lengths:
            lengths[length].append(run_child(args, ["--child", str(length), "--runtime", runtime], env))
    return {"samples": samples, "lengths": lengths}


def fmt(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} (min {min(values):.{digits}f})"


def report(label: str, res: dict) -> list[str]:
    """Table rows: figure | measured (median, min) | target | met."""
    rows = []

    def row(figure, values, digits, target_key, unit=""):
        target = TARGETS[target_key]
        ok = statistics.median(values) <= target if target_key != "rss_gb" else statistics.median(values) < target
        op = "<" if target_key == "rss_gb" else "<="
        rows.append(f"| {label} | {figure} | {fmt(values, digits)}{unit} | {op} {target:g}{unit} | "
                    f"{'yes' if ok else 'no'} |")

    row("one 4-s file at the model's input rate, wall time end to end", res["samples"]["e2e_s"], 2, "e2e_s", " s")
    row("import + model load", res["samples"]["startup_s"], 2, "startup_s", " s")
    rows.append(f"| {label} | first model call (trace / allocate) | {fmt(res['samples']['first_call_s'], 2)} s | — | — |")
    for length, runs in res["lengths"].items():
        row(f"RTF, {length:g}-s file (start-up excluded)", [r["rtf"] for r in runs], 4, "rtf")
        rows.append(f"| {label} | CPU seconds per audio second, {length:g}-s file (all threads) | "
                    f"{fmt([r['cpu_rtf'] for r in runs], 4)} | — | — |")
        row(f"peak RSS, {length:g}-s file", [r["rss_gb"] for r in runs], 2, "rss_gb", " GB")
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child_startup:
        print(json.dumps(child_startup(args)))
        return 0
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    configs = [("", dict(os.environ))]
    if args.avx2:
        configs.append(("AVX2", {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}))
    rows, layout = [], None
    for isa, env in configs:
        for runtime in args.runtimes:
            try:
                res = measure(args, runtime, env)
            except RuntimeError as e:
                print(f"error: {runtime}: {e}", file=sys.stderr)
                return 2
            label = runtime + (f", {isa}" if isa else "")
            rows += report(label, res)
            first = next(iter(res["lengths"].values()))[0]
            layout = f"model: {first['model']}; layout: {first['layout'].rsplit(', runtime', 1)[0]}; " \
                     f"{first['threads']} CPU(s); sinc baseline RTF {first['sinc_rtf']:.5f}"
            print(f"done: {label}", file=sys.stderr)
    print(layout)
    print(f"median of {args.repeats} fresh processes (min in brackets)")
    print("| runtime | figure | measured | target | met |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
