"""Benchmark: compiled SubpixelShuffle1D op vs tf.reshape ([batch, time, channels]).

Prints median times (inside tf.function, no XLA) for forward and forward+backward on
realistic tensors, the op/reshape ratio, and the op's share of a whole training step of a
small conv model (Conv1D -> SubPixel1D -> Conv1D). Needs the op built
(``bash src/build_ops.sh``). Example::

    nice -n 19 python benchmarks/bench_subpixel_op.py --repeats 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

SHAPES = ((32, 2048, 256, 2), (16, 4096, 64, 4))  # (batch, time, channels, r)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="timed runs per measurement (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    p.add_argument("--step-repeats", type=int, default=8, help="timed training steps per variant")
    p.add_argument("--step-batch", type=int, default=16, help="batch of the training-step model")
    p.add_argument("--step-time", type=int, default=2048, help="time steps of the model input")
    p.add_argument("--step-kernel", type=int, default=3, help="Conv1D kernel size in the model")
    p.add_argument("--threads", type=int, default=0,
                   help="TF intra-op threads (0 = TensorFlow's default)")
    p.add_argument("--skip-step", action="store_true", help="skip the training-step measurement")
    return p.parse_args(argv)


def median_seconds(fn, args, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)  # CPU execution is synchronous: the result is computed on return
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shuffle_fns(tf, subpixel_shuffle, r: int, impl: str):
    @tf.function(jit_compile=False)
    def forward(x):
        return subpixel_shuffle(x, r, impl)

    @tf.function(jit_compile=False)
    def forward_backward(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = subpixel_shuffle(x, r, impl)
        # Return y too, so the forward shuffle is not pruned from the graph.
        return y, tape.gradient(y, x, output_gradients=upstream)

    return forward, forward_backward


def bench_shuffle(tf, subpixel_shuffle, args) -> dict:
    results = {}
    for batch, width, channels, r in SHAPES:
        x = tf.random.normal([batch, width, channels])
        upstream = tf.random.normal([batch, width * r, channels // r])
        print(f"\nshape [{batch}, {width}, {channels}] r={r} float32 "
              f"({x.numpy().nbytes / 2**20:.0f} MiB), median of {args.repeats}")
        for label, call_args in (("forward", (x,)), ("forward+backward", (x, upstream))):
            t = {}
            for impl in ("op", "reshape"):
                fwd, fwd_bwd = shuffle_fns(tf, subpixel_shuffle, r, impl)
                fn = fwd if label == "forward" else fwd_bwd
                t[impl] = median_seconds(fn, call_args, args.repeats, args.warmup)
            ratio = t["op"] / t["reshape"] if t["reshape"] > 0 else float("inf")
            print(f"  {label:<17} op {t['op'] * 1e3:9.3f} ms   reshape {t['reshape'] * 1e3:9.3f} ms"
                  f"   op/reshape {ratio:8.1f}x")
            results[(batch, width, channels, r, label)] = t
    return results


def bench_step(tf, keras, SubPixel1D, subpixel_shuffle, args) -> None:
    b, w, k = args.step_batch, args.step_time, args.step_kernel
    x = tf.random.normal([b, w, 32])
    y = tf.random.normal([b, w * 2, 32])
    step_times = {}
    for impl in ("op", "reshape"):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((None, 32))
        h = keras.layers.Conv1D(256, k, padding="same", activation="relu")(inputs)
        h = SubPixel1D(2, implementation=impl)(h)
        outputs = keras.layers.Conv1D(32, k, padding="same")(h)
        model = keras.Model(inputs, outputs)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)

        @tf.function(jit_compile=False)
        def train_step(xb, yb, model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        step_times[impl] = median_seconds(train_step, (x, y), args.step_repeats,
                                          max(1, args.warmup - 1))

    shuffle_in = tf.random.normal([b, w, 256])
    upstream = tf.random.normal([b, w * 2, 128])
    _, op_fb = shuffle_fns(tf, subpixel_shuffle, 2, "op")
    _, rs_fb = shuffle_fns(tf, subpixel_shuffle, 2, "reshape")
    op_alone = median_seconds(op_fb, (shuffle_in, upstream), args.repeats, args.warmup)
    rs_alone = median_seconds(rs_fb, (shuffle_in, upstream), args.repeats, args.warmup)

    t_op, t_rs = step_times["op"], step_times["reshape"]
    print(f"\ntraining step: Conv1D 32->256 k={k} -> SubPixel1D(2) -> Conv1D 128->32 k={k}, "
          f"input [{b}, {w}, 32], Adam, median of {args.step_repeats}")
    print(f"  step with op      {t_op * 1e3:9.1f} ms")
    print(f"  step with reshape {t_rs * 1e3:9.1f} ms")
    print(f"  difference        {(t_op - t_rs) * 1e3:9.1f} ms = {100 * (t_op - t_rs) / t_op:5.1f}% of "
          "the op step (noisy: difference of two medians)")
    print(f"  shuffle fwd+bwd alone on [{b}, {w}, 256]: op {op_alone * 1e3:.2f} ms "
          f"= {100 * op_alone / t_op:.1f}% of a step; reshape {rs_alone * 1e3:.3f} ms "
          f"= {100 * rs_alone / t_rs:.2f}% of a step")


def main(argv=None) -> int:
    args = parse_args(argv)
    import speechsr  # first: it sets the project's TF environment (oneDNN off, quiet logs)
    import keras
    import tensorflow as tf

    from speechsr import ops
    from speechsr.subpixel import SubPixel1D, subpixel_shuffle

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if ops.load_op_library() is None:
        print(f"SubpixelShuffle1D op not available: {ops.load_error()}", file=sys.stderr)
        return 1
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs, "
          f"intra-op threads {args.threads or 'default'}, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}; "
          f"op library {ops.LIBRARY_PATH}")
    bench_shuffle(tf, subpixel_shuffle, args)
    if not args.skip_step:
        bench_step(tf, keras, SubPixel1D, subpixel_shuffle, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
