#!/usr/bin/env python3
"""Benchmark (not a test): training throughput and inference real-time factor of the configured model.

Prints, with the compiled subpixel op and with the tf.reshape fallback:
- training throughput in seconds of audio per wall second (batch of random patches, MSE,
  plus the configured MR-STFT loss), and the share of a step spent waiting on the real
  tf.data pipeline when a clip CSV is given (``--train-csv``);
- inference real-time factor (model seconds per audio second) on 4.096 s windows.
"""

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=str(Path(__file__).resolve().parents[1] / "settings" / "librispeech"),
                   help="settings folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    p.add_argument("--train-csv", help="also measure input wait with this clip CSV (default: the settings' train_csv "
                                       "when it exists)")
    args = p.parse_args()

    import numpy as np
    import tensorflow as tf
    import speechsr  # noqa: F401
    from speechsr import dataset, losses, settings
    from speechsr.model import build_model, conv_flops_per_second
    from speechsr.subpixel import reset_implementation_cache

    ms0 = settings.load("model", args.settings)
    ts = settings.load("training", args.settings)
    factor = ms0.output_rate // ms0.input_rate
    patch_seconds = ts.patch_length / ms0.input_rate
    print(f"TensorFlow {tf.__version__}, {len(tf.config.list_physical_devices('CPU'))} CPU device(s); settings {args.settings}")
    print(f"model: {ms0.num_blocks} blocks, filters {ms0.first_filters}->{ms0.filter_cap}, kernels {ms0.kernel_sizes}; "
          f"{conv_flops_per_second(ms0) / 1e9:.2f} GFLOP per second of audio")
    print(f"training: batch {ts.batch_size} x {ts.patch_length} low-res samples ({patch_seconds:.3f} s), "
          f"mrstft_weight {ts.mrstft_weight}")

    rng = np.random.default_rng(0)
    lr = tf.constant(rng.standard_normal((ts.batch_size, ts.patch_length, 1)).astype("float32") * 0.05)
    hr = tf.constant(rng.standard_normal((ts.batch_size, ts.patch_length * factor, 1)).astype("float32") * 0.05)
    window = tf.constant(rng.standard_normal((4, 16384, 1)).astype("float32") * 0.05)
    for impl in ("op", "reshape"):
        reset_implementation_cache()
        ms = settings.apply_overrides(ms0, {"subpixel_implementation": impl})
        model = build_model(ms)
        opt = tf.keras.optimizers.Adam(1e-4)

        @tf.function(jit_compile=False)
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(losses.combined(y, model(x, training=True), ts.mrstft_weight))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        predict = tf.function(lambda x: model(x, training=False), jit_compile=False)
        step(lr, hr), predict(window)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            float(step(lr, hr))
        step_s = (time.perf_counter() - t0) / args.steps
        t0 = time.perf_counter()
        for _ in range(5):
            predict(window).numpy()
        rtf = (time.perf_counter() - t0) / 5 / (4 * 16384 / ms.input_rate)
        print(f"[{impl:7s}] train step {step_s * 1000:7.1f} ms = {ts.batch_size * patch_seconds / step_s:6.1f} s of audio "
              f"per s; inference RTF {rtf:.4f} ({1 / rtf:.0f}x real time)")

    csv_path = args.train_csv or str(settings.project_path(ts.train_csv))
    if Path(csv_path).is_file():
        ds = dataset.training_dataset(csv_path, factor, ts.patch_length, ts.batch_size, ts.seed, 0,
                                      ts.augment_gain_db, ts.shuffle_buffer)
        it = iter(ds)
        next(it)
        waited, t_all = 0.0, time.perf_counter()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            x, y = next(it)
            waited += time.perf_counter() - t0
            float(step(x, y))
        t_all = time.perf_counter() - t_all
        print(f"input pipeline ({csv_path}): waiting on input {100 * waited / t_all:.1f}% of training time")
    else:
        print(f"input pipeline: skipped ({csv_path} not found; run preprocessing first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
