#!/usr/bin/env python3
"""Benchmark (not a test): the real training step (speechsr.training.Trainer's) and inference RTF.

For the configured model and training settings, with the compiled subpixel op and with the
tf.reshape fallback, prints:
- the training step of :class:`speechsr.training.Trainer` (the one ``train.py`` runs: the
  configured losses, GAN step when on, optimizer, strategy) on one fixed batch: ms per step and
  seconds of audio trained per wall second;
- the same steps fed by the real tf.data pipeline (``speechsr.training.epoch_dataset``): the share of
  the time spent waiting on input;
- inference real-time factor (model seconds per audio second) on 4.096 s windows.

Clips: the settings' ``train_csv`` / ``validation_csv`` (or ``--train-csv``) when they exist, else a
generated corpus of speech-like clips (test/conftest.py's ``speech_like``) in a temporary folder.
Run folders go to a temporary folder. Example::

    nice -n 19 python benchmarks/bench_training.py --settings settings/librispeech --steps 10
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--settings", default=str(ROOT / "settings" / "librispeech"), help="settings folder")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    p.add_argument("--train-csv", help="clip CSV to train from (default: the settings' train_csv when it exists, "
                                       "else generated clips)")
    p.add_argument("--variants", nargs="+", choices=("op", "reshape"), default=["op", "reshape"],
                   help="subpixel implementations to time")
    return p.parse_args(argv)


def generated_corpus(folder: Path, ms, ts) -> dict:
    """Speech-like clip pairs (conftest.write_clip_corpus) long enough for one patch, two batches' worth."""
    sys.path.insert(0, str(ROOT / "test"))
    from conftest import write_clip_corpus
    if (ms.input_rate, ms.output_rate) != (4000, 16000):
        raise SystemExit(f"error: generated clips are 4 kHz -> 16 kHz; the model is {ms.input_rate} -> "
                         f"{ms.output_rate} Hz: pass --train-csv")
    clip_seconds = math.ceil(ts.patch_length / ms.input_rate * 10) / 10
    per_recording = 4
    recordings = 1 + math.ceil(2 * ts.batch_size / per_recording)  # the first one is the validation split
    return write_clip_corpus(folder, recordings, per_recording, clip_seconds)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import speechsr  # noqa: F401  (TF environment defaults)
    from speechsr.loading import import_tensorflow_quietly
    import_tensorflow_quietly()
    import tensorflow as tf
    from speechsr import settings
    from speechsr.model import conv_flops_per_second
    from speechsr.subpixel import reset_implementation_cache
    from speechsr.training import epoch_dataset, prepare, steps_per_epoch

    ms0 = settings.load("model", args.settings)
    ts0 = settings.load("training", args.settings)
    patch_seconds = ts0.patch_length / ms0.input_rate
    print(f"TensorFlow {tf.__version__}, {len(tf.config.list_physical_devices('CPU'))} CPU device(s); "
          f"settings {args.settings}")
    print(f"model: {ms0.num_blocks} blocks, filters {ms0.first_filters}->{ms0.filter_cap}, kernels {ms0.kernel_sizes}; "
          f"{conv_flops_per_second(ms0) / 1e9:.2f} GFLOP per second of audio")
    print(f"training: batch {ts0.batch_size} x {ts0.patch_length} low-res samples ({patch_seconds:.3f} s); "
          f"loss weights mse {ts0.mse_weight}, mrstft {ts0.mrstft_weight}, mel {ts0.mel_weight}, "
          f"adversarial {ts0.adversarial_weight}")

    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        tmp = Path(tmp)
        train_csv = Path(args.train_csv) if args.train_csv else settings.project_path(ts0.train_csv)
        validation_csv = settings.project_path(ts0.validation_csv)
        if train_csv.is_file() and (args.train_csv or validation_csv.is_file()):
            source = str(train_csv)
            validation_csv = validation_csv if validation_csv.is_file() else train_csv
        else:
            source = f"generated speech-like clips ({train_csv} not found)"
            csvs = generated_corpus(tmp / "clips", ms0, ts0)
            train_csv, validation_csv = csvs["train"], csvs["validation"]
        print(f"clips: {source}")
        window = tf.constant(np.random.default_rng(0).standard_normal((4, 16384, 1)).astype("float32") * 0.05)
        for impl in args.variants:
            reset_implementation_cache()
            ms = settings.apply_overrides(ms0, {"subpixel_implementation": impl})
            ts = settings.apply_overrides(ts0, {
                "train_csv": str(train_csv), "validation_csv": str(validation_csv), "models_dir": str(tmp / "runs"),
                "run_name": impl, "init_from": None, "steps_per_epoch": args.steps + 2})
            trainer, _ = prepare(ms, ts)
            epoch = lambda: iter(epoch_dataset(trainer.strategy, ms, ts, 0, 0, steps_per_epoch(ts)))  # noqa: E731
            batches = epoch()
            batch = next(batches)
            trainer.step(batch), trainer.step(batch)  # trace and warm up
            t0 = time.perf_counter()
            for _ in range(args.steps):
                trainer.step(batch)
            step_s = (time.perf_counter() - t0) / args.steps
            waited, t_all = 0.0, time.perf_counter()
            for _ in range(args.steps):
                t0 = time.perf_counter()
                b = next(batches, None)
                if b is None:
                    batches = epoch()
                    b = next(batches)
                waited += time.perf_counter() - t0
                trainer.step(b)
            t_all = time.perf_counter() - t_all
            predict = tf.function(lambda x: trainer.model(x, training=False), jit_compile=False)
            predict(window)
            t0 = time.perf_counter()
            for _ in range(5):
                predict(window).numpy()
            rtf = (time.perf_counter() - t0) / 5 / (4 * 16384 / ms.input_rate)
            print(f"[{impl:7s}] train step {step_s * 1000:7.1f} ms = {ts.batch_size * patch_seconds / step_s:6.1f} s "
                  f"of audio per s; fed by tf.data: waiting on input {100 * waited / t_all:.1f}% of the time; "
                  f"inference RTF {rtf:.4f} ({1 / rtf:.0f}x real time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
