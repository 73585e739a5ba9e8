"""Benchmark: file upsampling real-time factor (RTF) and peak memory, vs the sinc baseline.

For each length (default 60 s and 600 s) a fresh subprocess writes generated speech-like
4 kHz audio to a temporary WAV, upsamples it with ``speechsr.inference.upsample_file``
(streaming read -> windowed model -> streaming atomic write) and reports the RTF
(upsampling seconds / audio seconds, after one warm-up call that traces the model), its peak
RSS (``getrusage(RUSAGE_SELF).ru_maxrss``, read before the baseline runs) and the time of
the sinc baseline (soxr VHQ on the whole array). Targets: RTF <= 0.02, RSS < 1 GB.

The model is ``--model`` or the upsampling setting 'model'; when that file is missing, an
untrained model is built from settings/model_settings.json (same cost). Example::

    nice -n 19 python benchmarks/bench_upsampling.py --lengths 60 600
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RTF, TARGET_RSS_GB = 0.02, 1.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="trained .keras model (default: upsampling setting 'model')")
    p.add_argument("--settings", default=None, help="settings directory (default: the project's settings/)")
    p.add_argument("--lengths", type=float, nargs="+", default=[60.0, 600.0], help="audio lengths in seconds")
    p.add_argument("--window-seconds", type=float, help="override upsampling 'window_seconds'")
    p.add_argument("--batch-size", type=int, help="override upsampling 'batch_size'")
    p.add_argument("--subpixel", choices=("auto", "op", "reshape"), help="subpixel shuffle implementation")
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)  # internal: one length, JSON out
    return p.parse_args(argv)


def write_test_audio(path: Path, seconds: float, rate: int, block_seconds: float = 10.0) -> None:
    """Speech-like audio (gliding harmonics, syllable envelope, noise bursts) written in blocks."""
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(0)
    n, step, phase = int(seconds * rate), int(block_seconds * rate), 0.0
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for a in range(0, n, step):
            t = np.arange(a, min(n, a + step)) / rate
            f0 = 160 + 40 * np.sin(2 * np.pi * 0.7 * t)
            ph = phase + 2 * np.pi * np.cumsum(f0) / rate
            phase = ph[-1]
            voiced = sum(np.sin(k * ph) / k for k in range(1, rate // 400))
            env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
            x = 0.08 * env * voiced + 0.02 * rng.normal(size=t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0.7)
            f.write(np.clip(x, -1, 1).astype(np.float32))


def child(args) -> dict:
    """One length in this process: returns the measurements as a dict."""
    from speechsr import settings
    from speechsr.inference import Upsampler, import_tensorflow_quietly, load_upsampler, resolve_model_path
    up = settings.load("upsampling", args.settings, {"window_seconds": args.window_seconds,
                                                     "batch_size": args.batch_size})
    model_path = resolve_model_path(args.model or up.model, from_settings=not args.model)
    note = str(model_path)
    if model_path.exists() or args.model:
        upsampler = load_upsampler(model_path, up, args.subpixel)
    else:
        import_tensorflow_quietly()
        from speechsr.model import build_model
        ms = settings.load("model", args.settings)
        if args.subpixel:
            ms = settings.apply_overrides(ms, {"subpixel_implementation": args.subpixel})
        upsampler = Upsampler(build_model(ms), ms, up.window_seconds, up.overlap_seconds, up.batch_size)
        note = f"{model_path} missing: untrained model built from settings/model_settings.json"
    from speechsr import audio, baselines
    from speechsr.inference import upsample_file
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        write_test_audio(src, args.child, upsampler.input_rate)
        warmup = upsampler.warmup()
        t0 = time.perf_counter()
        info = upsample_file(src, dst, upsampler, block_seconds=up.block_seconds, check_band=False)
        seconds = time.perf_counter() - t0
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        x, _ = audio.read_audio(src)
        t0 = time.perf_counter()
        baselines.sinc(x, upsampler.input_rate, upsampler.output_rate)
        sinc_seconds = time.perf_counter() - t0
    return {"length_s": args.child, "seconds": seconds, "rtf": seconds / info["seconds"], "warmup_s": warmup,
            "rss_gb": rss_kib * 1024 / 1e9, "sinc_seconds": sinc_seconds, "sinc_rtf": sinc_seconds / info["seconds"],
            "output_samples": info["output_samples"], "model": note, "layout": upsampler.describe(),
            "threads": os.cpu_count()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    results = []
    for length in args.lengths:
        cmd = [sys.executable, __file__, "--child", str(length)]
        for flag, value in (("--model", args.model), ("--settings", args.settings),
                            ("--window-seconds", args.window_seconds), ("--batch-size", args.batch_size),
                            ("--subpixel", args.subpixel)):
            if value is not None:
                cmd += [flag, str(value)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"error: {length:g} s run failed:\n{proc.stderr.strip()}", file=sys.stderr)
            return 2
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"model: {results[0]['model']}")
    print(f"layout: {results[0]['layout']}; {results[0]['threads']} CPU(s)")
    print(f"{'audio':>8} {'upsample':>9} {'RTF':>7} {'peak RSS':>9} {'sinc':>8} {'sinc RTF':>9} {'warm-up':>8}")
    for r in results:
        print(f"{r['length_s']:>7g}s {r['seconds']:>8.2f}s {r['rtf']:>7.4f} {r['rss_gb']:>7.2f}GB "
              f"{r['sinc_seconds']:>7.3f}s {r['sinc_rtf']:>9.5f} {r['warmup_s']:>7.2f}s")
    ok = all(r["rtf"] <= TARGET_RTF and r["rss_gb"] < TARGET_RSS_GB for r in results)
    print(f"targets: RTF <= {TARGET_RTF}, peak RSS < {TARGET_RSS_GB:g} GB -> {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
