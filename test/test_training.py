"""The U-Net and train.py: shapes, overfitting, best model, resume after SIGKILL, tf.distribute."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import PROJECT_ROOT, run_script, speech_like, tiny_model_settings
from speechsr import audio, losses, metrics, model_io, settings
from speechsr.model import build_model, conv_flops_per_second, required_multiple, sinc_interpolation_kernel

TRAIN = [sys.executable, str(PROJECT_ROOT / "train.py")]


def run_train(args) -> subprocess.CompletedProcess:
    return run_script("train.py", *args)


@pytest.mark.parametrize("blocks", [1, 3, 5])
def test_output_is_factor_times_input_for_several_depths(blocks):
    s = tiny_model_settings(num_blocks=blocks)
    m = build_model(s)
    assert required_multiple(s) == 2 ** (blocks + 1)
    for n in (required_multiple(s), 3 * required_multiple(s)):
        assert m(np.zeros((2, n, 1), np.float32)).shape == (2, 4 * n, 1)


def test_untrained_model_is_sinc_interpolation_close_to_soxr():
    """Zero-initialised final conv: the model starts as its fixed interpolator, near soxr sinc."""
    from speechsr.baselines import sinc
    s = tiny_model_settings(interpolation_taps=32)
    x = speech_like(1.0)
    lr = audio.sox_downsample(x, 16000, 4000)[:4000 // 8 * 8]
    y = build_model(s)(lr[None, :, None]).numpy()[0, :, 0]
    ref = sinc(lr, 4000, 16000)
    assert metrics.snr(ref[400:-400], y[400:-400]) > 30


def test_interpolation_kernel_passes_samples_through():
    k = sinc_interpolation_kernel(4, 16)
    np.testing.assert_allclose(k[16, 0, 0], 1.0, atol=1e-6)  # phase 0 is the sample itself
    np.testing.assert_allclose(k.sum(axis=0), 1.0, atol=1e-6)


def test_flops_grow_with_width():
    assert conv_flops_per_second(tiny_model_settings(first_filters=16, filter_cap=32)) > \
        3 * conv_flops_per_second(tiny_model_settings())


def test_model_overfits_one_clip():
    """Loss falls by 10x within a few dozen steps on one clip (the model can learn)."""
    keras.utils.set_random_seed(0)
    t = np.arange(2048) / 16000  # a 200 Hz 'voice' with harmonics up to 5.8 kHz
    x = (0.2 * sum(np.sin(2 * np.pi * 200 * k * t + k) / k for k in range(1, 30))).astype(np.float32)
    lr = audio.sox_downsample(x, 16000, 4000)
    m = build_model(tiny_model_settings(first_filters=16, filter_cap=32))
    opt = keras.optimizers.Adam(3e-3)
    xb, yb = tf.constant(lr[None, :, None]), tf.constant(x[None, :, None])

    @tf.function(jit_compile=False)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(losses.mse(yb, m(xb, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, m.trainable_variables), m.trainable_variables))
        return loss

    first = float(step())
    last = min(float(step()) for _ in range(50))
    assert last < first / 10, (first, last)


def test_lowpass_bank_passes_low_band_stops_high_band_and_keeps_identity():
    from scipy.signal import freqz
    from speechsr.dataset import lowpass_bank
    bank = lowpass_bank(0.75)
    assert bank.shape == (8, 63) and np.allclose(bank, bank[:, ::-1])  # symmetric: zero phase
    assert bank[-1, 31] == 1 and np.count_nonzero(bank[-1]) == 1  # the last one is the identity
    _, h = freqz(bank[0], worN=[0.5 * np.pi, 0.9 * np.pi])  # half and 0.9 of Nyquist
    assert abs(abs(h[0]) - 1) < 0.01 and abs(h[1]) < 0.01


def test_training_dataset_lowpass_augmentation_changes_only_the_input(clip_corpus):
    from speechsr.dataset import training_dataset
    ms = tiny_model_settings()
    ts = settings.apply_overrides(settings.load("training", PROJECT_ROOT / "settings"), {
        "patch_length": 512, "batch_size": 3, "seed": 1, "augment_gain_db": 0.0, "shuffle_buffer": 512})

    def batches(lowpass_min):
        ds = training_dataset(clip_corpus["train"], ms, settings.apply_overrides(ts, {"augment_lowpass_min": lowpass_min}),
                              epoch=0)
        return [(lr.numpy()[..., 0], hr.numpy()) for lr, hr in ds]

    def band(x, lo, hi):  # energy between lo and hi (fractions of Nyquist), summed over the batch
        spec = np.abs(np.fft.rfft(x, axis=-1)) ** 2
        f = np.linspace(0, 1, spec.shape[-1])
        return spec[..., (f >= lo) & (f < hi)].sum()

    plain, augmented = batches(0.0), batches(0.5)
    assert len(plain) == len(augmented) == 3
    for (lr0, hr0), (lr1, hr1), (lr2, _) in zip(plain, augmented, batches(0.5)):
        np.testing.assert_array_equal(hr0, hr1)  # the target is untouched
        np.testing.assert_array_equal(lr1, lr2)  # deterministic for (seed, epoch)
        assert band(lr1, 0.0, 0.3) == pytest.approx(band(lr0, 0.0, 0.3), rel=0.05)
    high = [band(lr, 0.6, 0.9) for lr, _ in plain], [band(lr, 0.6, 0.9) for lr, _ in augmented]
    assert sum(high[1]) < 0.8 * sum(high[0])


def test_mrstft_loss_is_zero_for_equal_signals_and_positive_otherwise():
    y = tf.constant(speech_like(0.5)[None, :, None])
    assert float(losses.mrstft(y, y)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.mrstft(y, 0.5 * y)[0]) > 0.1


def test_mel_loss_is_zero_for_equal_signals_and_grows_with_a_missing_band():
    y = tf.constant(speech_like(0.5, 16000, seed=2)[None, :, None])
    assert float(losses.mel_l1(y, y)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.mel_l1(y, 0.5 * y)[0]) == pytest.approx(np.log(2), rel=0.05)  # -6 dB everywhere


def test_discriminators_and_gan_losses():
    from speechsr import adversarial
    d = adversarial.build_discriminators([2, 3], [[256, 64]], channels=4, patch_samples=2048)
    real = tf.constant(speech_like(0.128, 16000, seed=3)[None, :, None].repeat(2, axis=0))
    outs = d(real)
    assert len(outs) == 3 and all(len(features) == 5 for _, features in outs)
    ones = [(tf.ones_like(logits), features) for logits, features in outs]
    zeros = [(tf.zeros_like(logits), features) for logits, features in outs]
    np.testing.assert_allclose(adversarial.discriminator_loss(ones, zeros).numpy(), [0.0, 0.0])  # perfect D
    np.testing.assert_allclose(adversarial.generator_loss(zeros).numpy(), [3.0, 3.0])  # fooled no one
    np.testing.assert_allclose(adversarial.feature_matching_loss(outs, outs).numpy(), [0.0, 0.0])
    assert float(adversarial.feature_matching_loss(outs, d(0.5 * real))[0]) > 0


def test_settings_written_before_a_key_existed_still_load(tmp_path):
    raw = settings.to_json(settings.load("training", PROJECT_ROOT / "settings"))
    for key in ("mel_weight", "adversarial_weight", "discriminator_periods", "mse_weight"):
        raw.pop(key)
    (tmp_path / "training_settings.json").write_text(json.dumps(raw))
    ts = settings.load("training", tmp_path)
    assert (ts.mel_weight, ts.adversarial_weight, ts.mse_weight) == (0.0, 0.0, 1.0)
    assert ts.discriminator_periods == [2, 3, 5, 7, 11]
    raw["train_csv"] = None
    (tmp_path / "training_settings.json").write_text(json.dumps(raw))
    with pytest.raises(settings.SettingsError, match="train_csv"):
        settings.load("training", tmp_path)


def test_train_keeps_best_model_and_loss_files(tiny_settings_dir, tmp_path, script_main):
    r = script_main("train.py", "--settings", tiny_settings_dir, "--set", "steps_per_epoch=4")
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "models" / "tiny"
    assert r.stdout.startswith(f"done: {run}/best.keras (best val_loss ")
    train_loss = [float(v) for v in (run / "train_loss.txt").read_text().split()]
    val_loss = [float(v) for v in (run / "val_loss.txt").read_text().split()]
    assert len(train_loss) == len(val_loss) == 3
    info = json.loads((run / "best.json").read_text())
    assert info["val_loss"] == pytest.approx(min(val_loss), rel=1e-6)
    assert info["epoch"] == 1 + int(np.argmin(val_loss))
    model, ms, _ = model_io.load_model(run / "best.keras")
    assert model.count_params() == build_model(ms).count_params()
    assert (run / "tensorboard").is_dir() and any((run / "tensorboard").iterdir())
    assert not list(run.rglob("*.part*"))
    # the run folder is protected from an accidental restart
    again = script_main("train.py", "--settings", tiny_settings_dir)
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.parametrize("flags, expected", [
    (["--set", "batch_sise=3"], "batch_sise"),
    (["--train-csv", "nope.csv"], "nope.csv"),
    (["--set", "patch_length=500"], "multiple of 8"),
    (["--init-from", "absent.keras"], "absent.keras' not found"),
    (["--set", "augment_lowpass_min=1.0"], "augment_lowpass_min"),
])
def test_bad_settings_and_missing_csv_fail_before_work(tiny_settings_dir, tmp_path, script_main, flags, expected):
    r = script_main("train.py", "--settings", tiny_settings_dir, *flags, cwd=tmp_path)
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "models").exists()  # failed before the run folder


def test_init_from_copies_weights_and_refuses_another_architecture(tiny_settings_dir, tmp_path):
    from speechsr.training import TrainingError, prepare
    ms = settings.load("model", tiny_settings_dir)
    ts = settings.load("training", tiny_settings_dir)
    source = build_model(ms)
    rng = np.random.default_rng(0)
    source.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in source.get_weights()])
    model_io.save_model(source, tmp_path / "source.keras", ms)

    fine_tune = settings.apply_overrides(ts, {"init_from": str(tmp_path / "source.keras"), "run_name": "ft"})
    trainer, _ = prepare(ms, fine_tune)
    for got, want in zip(trainer.model.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TrainingError, match="differ from model_settings.json in first_filters"):
        prepare(settings.apply_overrides(ms, {"first_filters": 4}), settings.apply_overrides(fine_tune, {"run_name": "ft2"}))


def test_init_from_is_needed_by_a_new_run_only(tiny_settings_dir, tmp_path):
    """A resumed run takes its weights from its checkpoint: the model it started from may have moved."""
    from speechsr.training import TrainingError, check_inputs
    ms = settings.load("model", tiny_settings_dir)
    gone = settings.apply_overrides(settings.load("training", tiny_settings_dir),
                                    {"init_from": str(tmp_path / "moved.keras")})
    with pytest.raises(TrainingError, match="moved.keras' not found"):
        check_inputs(ms, gone)
    check_inputs(ms, gone, resume=True)


@pytest.mark.slow  # several seconds of model work or processes: CI runs it (make test stays near a minute)
def test_train_script_smoke_summary_prints_parameters_and_flops(tiny_settings_dir):
    """train.py as a process (training itself runs in-process above, and as a process in the slow
    SIGKILL / Ctrl-C tests): settings, TensorFlow import, model build, exit code 0."""
    r = run_train(["--settings", str(tiny_settings_dir), "--summary"])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode == 0 and "parameters:" in r.stdout and "GFLOP per second of audio" in r.stdout


def _wait_for(predicate, timeout, proc):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


GAN_FLAGS = ["--set", "adversarial_weight=1.0", "--set", "feature_matching_weight=2.0", "--set", "mel_weight=1.0",
             "--set", "gan_start_step=10", "--set", "discriminator_periods=[2, 3]",
             "--set", "discriminator_stft_sizes=[256]", "--set", "discriminator_channels=4"]


@pytest.mark.slow
@pytest.mark.parametrize("adversarial", [False, True], ids=["reconstruction", "gan"])
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_settings_dir, tmp_path, adversarial):
    """Kill -9 mid-epoch, --resume: same epochs, same losses as a run never interrupted (with the
    GAN on: discriminators, their optimizer and the GAN loss tallies are in the checkpoint too)."""
    extra = GAN_FLAGS if adversarial else []
    ref = run_train(["--settings", str(tiny_settings_dir), "--run-name", "ref", "--epochs", "3"] + extra)
    assert ref.returncode == 0, ref.stderr[-2000:]

    run = tmp_path / "models" / "tiny"
    args = ["--settings", str(tiny_settings_dir), "--epochs", "3", "--set", "checkpoint_every_steps=5"] + extra
    proc = subprocess.Popen(TRAIN + args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # epoch 1 = 6 step checkpoints + 1 at its end; kill during epoch 2, after a mid-epoch checkpoint
    mid_epoch = lambda: (run / "train_loss.txt").exists() and _ckpt_count(run) >= 8  # noqa: E731
    assert _wait_for(mid_epoch, 240, proc), "training never reached epoch 2"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len((run / "train_loss.txt").read_text().split()) < 3

    resumed = run_train(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stderr
    got = [float(v) for v in (run / "train_loss.txt").read_text().split()]
    want = [float(v) for v in (tmp_path / "models" / "ref" / "train_loss.txt").read_text().split()]
    assert len(got) == 3
    np.testing.assert_allclose(got, want, rtol=1e-3)
    if adversarial:
        history = lambda name: list(csv.DictReader((tmp_path / "models" / name / "history.csv").open()))  # noqa: E731
        got_d = [float(r["d_loss"]) for r in history("tiny")]
        want_d = [float(r["d_loss"]) for r in history("ref")]
        assert want_d[0] > 0  # the discriminators trained (steps 10-29 of 30 in epoch 1)
        np.testing.assert_allclose(got_d, want_d, rtol=1e-3)


def _ckpt_count(run) -> int:
    text = (run / "checkpoints" / "checkpoint").read_text()
    numbers = [int(line.split("ckpt-")[1].strip('"\n')) for line in text.splitlines() if "model_checkpoint_path" in line]
    return max(numbers, default=0)


DISTRIBUTED_SCRIPT = """
import sys, tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
sys.argv = ["train.py"] + sys.argv[1:]
import runpy; runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tiny_settings_dir, tmp_path):
    r = subprocess.run([sys.executable, "-c", DISTRIBUTED_SCRIPT, "--settings", str(tiny_settings_dir),
                        "--strategy", "mirrored", "--epochs", "2"],
                       capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 replica(s)" in r.stderr and "CPU:1" in r.stderr  # both logical devices took part
    assert len((tmp_path / "models" / "tiny" / "val_loss.txt").read_text().split()) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multiworker_strategy_with_two_local_workers(tiny_settings_dir, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(TRAIN + ["--settings", str(tiny_settings_dir), "--strategy", "multiworker",
                                               "--epochs", "2"],
                                      cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    run = tmp_path / "models" / "tiny"
    assert len((run / "val_loss.txt").read_text().split()) == 2  # written once, by the chief
    assert (run / "best.keras").is_file()


def test_preparing_a_run_writes_nothing_and_overwrite_empties_the_folder_only_in_fit(tiny_settings_dir):
    from speechsr.training import TrainingError, fit, prepare
    ms = settings.load("model", tiny_settings_dir)
    ts = settings.apply_overrides(settings.load("training", tiny_settings_dir), {"epochs": 1, "steps_per_epoch": 2})
    run = settings.project_path(ts.models_dir) / ts.run_name
    trainer, folder = prepare(ms, ts)
    assert not run.exists()  # building model, optimizer and strategy touches no disk
    fit(trainer, folder, ms, ts)
    assert (run / "best.keras").is_file() and (run / "settings" / "training_settings.json").is_file()
    with pytest.raises(TrainingError, match="exists"):
        prepare(ms, ts)
    (run / "marker").write_text("old run")
    again = prepare(ms, ts, overwrite=True)
    assert (run / "marker").is_file()  # still there until fit()
    fit(*again, ms, ts)
    assert not (run / "marker").exists() and (run / "best.keras").is_file()


def _tiny_trainer(ms, ts, gan=False):
    from speechsr import training
    strategy = training.make_strategy("default")
    keras.utils.set_random_seed(0)
    model = training.build_training_model(ms, ts, strategy)
    optimizer = training.build_optimizer(ts, 10, model, strategy)
    loss = lambda y, y_hat: losses.mse(y, y_hat)  # noqa: E731
    return training.Trainer(model, optimizer, strategy, loss, global_batch_size=2,
                            gan=training.build_gan(ms, ts, strategy) if gan else None)


@pytest.mark.parametrize("gan", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["reconstruction", "gan"])
def test_trainer_steps_without_touching_disk_and_its_checkpoint_restores_the_state(tmp_path, monkeypatch, gan):
    monkeypatch.chdir(tmp_path)
    ms = tiny_model_settings()
    ts = settings.apply_overrides(settings.load("training", PROJECT_ROOT / "settings"), {
        "patch_length": 256, "learning_rate": 1e-3, "lr_schedule": "constant", "warmup_steps": 0,
        "adversarial_weight": 1.0 if gan else 0.0, "discriminator_periods": [2], "discriminator_stft_sizes": [256],
        "discriminator_channels": 4})
    trainer = _tiny_trainer(ms, ts, gan)
    hr = np.stack([speech_like(0.064, seed=s) for s in (1, 2)])[..., None]
    lr = np.stack([audio.sox_downsample(x[:, 0], 16000, 4000) for x in hr])[..., None]
    before = [w.copy() for w in trainer.model.get_weights()]
    loss = trainer.step((tf.constant(lr), tf.constant(hr)))
    assert np.isfinite(loss) and int(trainer.optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, trainer.model.get_weights(), strict=True))
    if gan:
        assert float(trainer.gan_sums.numpy()[0]) > 0  # the discriminator loss was tallied
    val_loss, y_hat = trainer.validation_step(lr[0, :, 0], hr[0, :, 0])
    assert y_hat.shape == (hr.shape[1],) and np.isfinite(val_loss)
    assert not list(tmp_path.iterdir())  # stepping and validating wrote nothing

    trainer.epoch.assign(3)
    trainer.save(tmp_path / "ckpt")
    fresh = _tiny_trainer(ms, ts, gan)
    assert fresh.restore(tmp_path / "nothing") is None
    assert fresh.restore(tmp_path / "ckpt") is not None
    assert int(fresh.epoch.numpy()) == 3 and int(fresh.optimizer.iterations.numpy()) == 1
    for got, want in zip(fresh.model.get_weights(), trainer.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    if gan:
        for got, want in zip(fresh.gan.discriminators.get_weights(), trainer.gan.discriminators.get_weights(),
                             strict=True):
            np.testing.assert_array_equal(got, want)


def test_run_folder_writes_and_reads_history_and_guards_the_folder(tmp_path):
    from speechsr.training import RunFolder, TrainingError
    ms = tiny_model_settings()
    ts = settings.load("training", PROJECT_ROOT / "settings")
    run = RunFolder(tmp_path / "run")
    run.check(ms, ts)
    assert run.history() == [] and not (tmp_path / "run").exists()
    run.start(ms, ts)
    assert json.loads((tmp_path / "run" / "settings" / "model_settings.json").read_text()) == settings.to_json(ms)
    record = lambda epoch, loss: {"epoch": epoch, "train_loss": loss, "val_loss": loss / 2}  # noqa: E731
    run.write_history(record(1, 0.5))
    run.write_history(record(2, 0.25))
    run.write_history(record(3, 0.2))
    rows = run.write_history(record(2, 0.125))  # a resumed run redoes epoch 2: later epochs go
    assert [(int(r["epoch"]), float(r["train_loss"])) for r in rows] == [(1, 0.5), (2, 0.125)]
    assert run.history() == rows
    assert (tmp_path / "run" / "train_loss.txt").read_text().split() == ["0.5", "0.125"]
    assert (tmp_path / "run" / "val_loss.txt").read_text().split() == ["0.25", "0.0625"]
    assert (tmp_path / "run" / "curves.png").is_file()
    with pytest.raises(TrainingError, match="exists"):
        RunFolder(tmp_path / "run").check(ms, ts)
    with pytest.raises(TrainingError, match="no checkpoint"):
        RunFolder(tmp_path / "run").check(ms, ts, resume=True)
    RunFolder(tmp_path / "run").check(ms, ts, overwrite=True)  # allowed; emptied only by start()
    assert run.history() == rows
