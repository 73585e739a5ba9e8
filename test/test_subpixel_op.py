"""SubpixelShuffle1D custom op and the SubPixel1D layer ([batch, time, channels]).

Tests needing the compiled op build it once per session with ``src/build_ops.sh``
(skipped when g++ is missing and the library is not built).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from speechsr import ops, subpixel
from speechsr.subpixel import (SubPixel1D, active_implementation, subpixel_shuffle,
                               subpixel_shuffle_reference)

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "src" / "build_ops.sh"


def _run_build() -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="session")
def op_module():
    """The loaded op library, built first if needed."""
    proc = _run_build()
    if proc.returncode != 0:
        if shutil.which(os.environ.get("CXX", "g++")) is None:
            pytest.skip("g++ not found: cannot build the SubpixelShuffle1D op "
                        "(run src/build_ops.sh where a C++ compiler is installed)")
        pytest.fail(f"src/build_ops.sh failed:\n{proc.stdout}\n{proc.stderr}")
    subpixel.reset_implementation_cache()
    module = ops.load_op_library()
    assert module is not None, ops.load_error()
    return module


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    monkeypatch.delenv(subpixel.ENV_VAR, raising=False)
    subpixel.reset_implementation_cache()
    yield
    subpixel.reset_implementation_cache()


def _random(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _op_types(fn, spec) -> set[str]:
    graph = tf.function(fn).get_concrete_function(spec).graph
    return {op.type for op in graph.get_operations()}


# --- values -------------------------------------------------------------------------------

def test_reference_follows_kuleshov_order():
    x = _random((2, 3, 6), np.float32)
    r, c_out = 3, 2
    out = subpixel_shuffle_reference(x, r).numpy()
    assert out.shape == (2, 9, 2)
    for b in range(2):
        for w in range(3):
            for i in range(r):
                for c in range(c_out):
                    assert out[b, w * r + i, c] == x[b, w, i * c_out + c]


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(0, 3), width=st.integers(0, 9), r=st.integers(1, 4),
       c_out=st.integers(0, 5), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_op_equals_reference(op_module, batch, width, r, c_out, dtype, seed):
    x = _random((batch, width, c_out * r), dtype, seed)
    expected = subpixel_shuffle_reference(x, r).numpy()
    raw = op_module.subpixel_shuffle1d(x, r=r)
    assert raw.dtype == tf.as_dtype(dtype)
    assert raw.shape == (batch, width * r, c_out)
    np.testing.assert_array_equal(raw.numpy(), expected)
    np.testing.assert_array_equal(subpixel_shuffle(x, r, "op").numpy(), expected)


def test_op_large_tensor_uses_thread_pool_correctly(op_module):
    x = _random((4, 1024, 64), np.float32)
    np.testing.assert_array_equal(op_module.subpixel_shuffle1d(x, r=4).numpy(),
                                  x.reshape(4, 4096, 16))


# --- gradients ----------------------------------------------------------------------------

def test_gradient_numeric_and_equal_to_reference(op_module):
    x = _random((2, 3, 4), np.float64, seed=1)
    theo, numeric = tf.test.compute_gradient(lambda t: op_module.subpixel_shuffle1d(t, r=2), [x])
    np.testing.assert_allclose(theo[0], numeric[0], atol=1e-8)
    ref_theo, _ = tf.test.compute_gradient(lambda t: subpixel_shuffle_reference(t, 2), [x])
    np.testing.assert_array_equal(theo[0], ref_theo[0])

    upstream = _random((2, 6, 2), np.float64, seed=2)
    xt = tf.constant(x)
    grads = []
    for impl in ("op", "reshape"):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = subpixel_shuffle(xt, 2, impl)
        grads.append(tape.gradient(y, xt, output_gradients=tf.constant(upstream)).numpy())
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], upstream.reshape(2, 3, 4))


# --- tf.function / static shapes ------------------------------------------------------------

def test_tf_function_with_unknown_batch_and_width(op_module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, 6], tf.float32)])
    def shuffle(x):
        return subpixel_shuffle(x, 3, "op")

    assert shuffle.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 2]
    for shape in [(1, 5, 6), (3, 2, 6), (0, 4, 6)]:
        x = _random(shape, np.float32)
        np.testing.assert_array_equal(shuffle(x).numpy(),
                                      subpixel_shuffle_reference(x, 3).numpy())


def test_static_shape_inference(op_module):
    def out_shape(shape, r=2):
        return _symbolic_shape(lambda x: op_module.subpixel_shuffle1d(x, r=r), shape)

    assert out_shape([4, 10, 8]) == [4, 20, 4]
    assert out_shape([None, 10, 8], r=4) == [None, 40, 2]
    assert out_shape([None, None, None]) == [None, None, None]
    assert out_shape(None) == [None, None, None]


def _symbolic_shape(fn, shape):
    spec = tf.TensorSpec(shape, tf.float32)
    return tf.function(fn).get_concrete_function(spec).structured_outputs.shape.as_list()


# --- errors -----------------------------------------------------------------------------------

def test_raw_op_rejects_bad_inputs_eagerly(op_module):
    with pytest.raises(tf.errors.InvalidArgumentError, match="divisible by r"):
        op_module.subpixel_shuffle1d(np.zeros((2, 3, 5), np.float32), r=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank 3"):
        op_module.subpixel_shuffle1d(np.zeros((2, 3), np.float32), r=2)


def test_raw_op_shape_function_rejects_bad_static_shapes(op_module):
    with pytest.raises(ValueError, match="divisible by r"):
        _symbolic_shape(lambda x: op_module.subpixel_shuffle1d(x, r=2), [None, 3, 5])
    with pytest.raises(ValueError, match="rank 3"):
        _symbolic_shape(lambda x: op_module.subpixel_shuffle1d(x, r=2), [None, 3])


@pytest.mark.parametrize("impl", ["op", "reshape"])
def test_bad_channels_known_only_at_run_time(op_module, impl):
    fn = tf.function(lambda x: subpixel_shuffle(x, 2, impl),
                     input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(np.zeros((2, 3, 5), np.float32))


@pytest.mark.parametrize("impl", ["op", "reshape"])
def test_wrapper_raises_value_error_for_static_problems(op_module, impl):
    with pytest.raises(ValueError, match="divisible by r"):
        subpixel_shuffle(np.zeros((2, 3, 5), np.float32), 2, impl)
    with pytest.raises(ValueError, match="rank 3"):
        subpixel_shuffle(np.zeros((2, 3), np.float32), 2, impl)
    with pytest.raises(ValueError, match="r must be"):
        subpixel_shuffle(np.zeros((2, 3, 4), np.float32), 0, impl)


def test_layer_argument_and_shape_errors():
    with pytest.raises(ValueError, match="r must be"):
        SubPixel1D(0)
    with pytest.raises(ValueError, match="implementation"):
        SubPixel1D(2, implementation="xla")
    with pytest.raises(ValueError, match="divisible by r"):
        SubPixel1D(2)(keras.Input((None, 5)))


# --- implementation selection -------------------------------------------------------------

def test_env_var_overrides_auto_only(op_module, monkeypatch):
    monkeypatch.setenv(subpixel.ENV_VAR, "reshape")
    assert active_implementation() == "reshape"
    assert active_implementation("op") == "op"
    x = tf.TensorSpec([None, None, 4], tf.float32)
    assert "SubpixelShuffle1D" not in _op_types(lambda t: subpixel_shuffle(t, 2), x)
    monkeypatch.setenv(subpixel.ENV_VAR, "op")
    assert active_implementation() == "op"
    assert active_implementation("reshape") == "reshape"
    assert "SubpixelShuffle1D" in _op_types(lambda t: subpixel_shuffle(t, 2), x)
    monkeypatch.setenv(subpixel.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="SPEECHSR_SUBPIXEL"):
        active_implementation()


def test_auto_prefers_op_and_logs_once(op_module, caplog):
    with caplog.at_level(logging.INFO, logger="speechsr"):
        assert active_implementation() == "op"
        assert active_implementation() == "op"
        assert active_implementation("reshape") == "reshape"
    infos = [r for r in caplog.records if r.name == "speechsr" and r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "compiled op" in infos[0].getMessage()
    assert "_subpixel_shuffle.so" in infos[0].getMessage()


def test_missing_library_falls_back_or_raises(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(ops, "LIBRARY_PATH", tmp_path / "_subpixel_shuffle.so")
    subpixel.reset_implementation_cache()
    assert ops.load_op_library() is None
    assert "build_ops.sh" in ops.load_error()
    with caplog.at_level(logging.INFO, logger="speechsr"):
        assert active_implementation() == "reshape"
    assert any("tf.reshape fallback (op library not built" in r.getMessage()
               for r in caplog.records)
    x = _random((2, 3, 4), np.float32)
    np.testing.assert_array_equal(subpixel_shuffle(x, 2).numpy(), x.reshape(2, 6, 2))
    with pytest.raises(RuntimeError, match="build_ops.sh"):
        subpixel_shuffle(x, 2, "op")
    monkeypatch.setenv(subpixel.ENV_VAR, "op")
    with pytest.raises(RuntimeError, match="SPEECHSR_SUBPIXEL"):
        active_implementation()


def test_stale_stamp_is_not_loaded(op_module, monkeypatch, tmp_path):
    stamp = tmp_path / "stamp"
    stamp.write_text("source_sha256=0\ntensorflow=0.0.1\n")
    monkeypatch.setattr(ops, "STAMP_PATH", stamp)
    ops.reset_cache()
    assert ops.load_op_library() is None
    assert "built for TensorFlow 0.0.1" in ops.load_error()
    stamp.write_text(f"source_sha256=0\ntensorflow={tf.__version__}\n")
    ops.reset_cache()
    assert ops.load_op_library() is None
    assert "changed since" in ops.load_error()


def test_unsupported_dtype(op_module):
    x = np.ones((1, 2, 4), np.float16)
    assert active_implementation(dtype=tf.float16) == "reshape"
    assert subpixel_shuffle(x, 2).dtype == tf.float16
    with pytest.raises(TypeError, match="float32/float64"):
        subpixel_shuffle(x, 2, "op")


def test_build_script_is_incremental(op_module):
    proc = _run_build()
    assert proc.returncode == 0, proc.stderr
    assert "subpixel op up to date" in proc.stdout


# --- Keras layer --------------------------------------------------------------------------------

def test_layer_implementations_agree(op_module):
    x = _random((2, 7, 9), np.float32, seed=3)
    outs = {impl: SubPixel1D(3, implementation=impl)(x).numpy() for impl in ("op", "reshape")}
    np.testing.assert_array_equal(outs["op"], outs["reshape"])
    spec = tf.TensorSpec([None, None, 9], tf.float32)
    assert "SubpixelShuffle1D" in _op_types(SubPixel1D(3, implementation="op"), spec)
    assert "SubpixelShuffle1D" not in _op_types(SubPixel1D(3, implementation="reshape"), spec)


def test_layer_symbolic_shapes():
    assert SubPixel1D(2)(keras.Input((None, 8))).shape == (None, None, 4)
    assert SubPixel1D(4)(keras.Input((7, 8))).shape == (None, 28, 2)
    assert SubPixel1D(2).compute_output_shape((3, None, None)) == (3, None, None)


def _tiny_model(implementation="auto"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 4))
    h = keras.layers.Conv1D(8, 3, padding="same", activation="tanh")(inputs)
    h = SubPixel1D(2, implementation=implementation, name="subpixel")(h)
    outputs = keras.layers.Conv1D(1, 3, padding="same")(h)
    return keras.Model(inputs, outputs)


def test_layer_trains_in_keras_fit(op_module):
    model = _tiny_model("op")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=False)
    before = [w.numpy().copy() for w in model.trainable_weights]
    x = _random((8, 16, 4), np.float32, seed=4)
    y = _random((8, 32, 1), np.float32, seed=5)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # 2 steps
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    for w0, w1 in zip(before, model.trainable_weights):
        assert not np.array_equal(w0, w1.numpy())  # gradients reach the first conv too


def test_layer_saving_round_trip_safe_mode(op_module, tmp_path):
    model = _tiny_model("auto")
    config = model.get_layer("subpixel").get_config()
    assert config["r"] == 2 and config["implementation"] == "auto"
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    layer = loaded.get_layer("subpixel")
    assert isinstance(layer, SubPixel1D)
    assert (layer.r, layer.implementation) == (2, "auto")
    x = _random((2, 5, 4), np.float32, seed=6)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_set_implementation_switches_every_shuffle_of_a_loaded_model(op_module, tmp_path):
    """speechsr.subpixel.set_implementation (``--subpixel``): every shuffle, the sinc
    interpolator's included, switched through public layers; same samples either way."""
    from conftest import perturbed_model, tiny_model_settings
    from speechsr import model_io
    from speechsr.model import SincInterpolation1D
    s = tiny_model_settings(subpixel_implementation="op")
    model_io.save_model(perturbed_model(s, seed=4), tmp_path / "m.keras", s)
    x = np.random.default_rng(0).normal(0, 0.1, (1, 256, 1)).astype(np.float32)
    outputs = {}
    for impl in ("reshape", "op"):
        model, _, _ = model_io.load_model(tmp_path / "m.keras")
        subpixel.set_implementation(model, impl)
        switched = [layer for layer in model.layers if isinstance(layer, (SubPixel1D, SincInterpolation1D))]
        assert len(switched) == s.num_blocks + 3  # up shuffles, top, final, sinc interpolation
        assert all(layer.implementation == impl for layer in switched)
        outputs[impl] = model(x).numpy()
    np.testing.assert_array_equal(outputs["reshape"], outputs["op"])
    with pytest.raises(ValueError, match="implementation"):
        subpixel.set_implementation(model, "fast")
