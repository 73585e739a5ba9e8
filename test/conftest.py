"""Shared test helpers: the signal generator (also used by benchmarks/), tiny model settings and
one session-wide tiny model, a tiny generated clip-pair corpus, and the two ways to run a script:
:func:`run_script` (a fresh Python process: one smoke test per script, and what needs a real
process) and the ``script_main`` fixture (the script's ``main(argv)`` in this process: error paths).

Tests marked ``slow`` (killing processes, tf.distribute, the wheel install, perceptual metrics in
worker processes) are skipped unless ``--slow`` is given, ``-m`` selects markers, or ``CI`` is set
(``.ci/run``, on CI machines that set ``CI=true``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import speechsr  # noqa: F401  (TF environment defaults)
from speechsr import audio, settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


# ------------------------------------------------------------------ the slow marker

def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run tests marked slow (CI=true in the environment does the same)")


def pytest_collection_modifyitems(config, items):
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if config.getoption("--slow") or config.getoption("markexpr") or ci:
        return
    skip = pytest.mark.skip(reason="slow: run with --slow (or -m slow); CI runs them")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------ signals


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Harmonic voice (f0 ~ 100-170 Hz with vibrato, harmonics up to 7 kHz, syllable envelope)
    plus fricative-like noise bursts: energy across 0-8 kHz, float32 [time], peak 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f0 = 130 + rng.uniform(-20, 20) + 25 * np.sin(2 * np.pi * 0.7 * t) + 4 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = np.zeros_like(t)
    for k in range(1, 60):
        x += np.where(k * f0 < min(7000, rate / 2), np.sin(k * phase + rng.uniform(0, 6.3)) / k ** 0.7, 0.0)
    x *= 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t) ** 2  # syllable envelope
    burst = int(0.06 * rate)
    for start in np.arange(rng.uniform(0.1, 0.4), seconds - 0.1, 0.6):  # fricative-like bursts
        i = int(start * rate)
        x[i:i + burst] += rng.normal(0, 1.0, len(x[i:i + burst]))
    return (0.6 * x / np.max(np.abs(x))).astype(np.float32)


# ------------------------------------------------------------------ models

def tiny_model_settings(**changes) -> settings.ModelSettings:
    base = settings.load("model", PROJECT_ROOT / "settings")
    tiny = {"num_blocks": 2, "first_filters": 8, "filter_cap": 16, "kernel_sizes": [9], "interpolation_taps": 8}
    return settings.apply_overrides(base, {**tiny, **changes})


def upsampling_settings(**changes) -> settings.UpsamplingSettings:
    """The default upsampling settings with ``changes`` (e.g. window_seconds, batch_size)."""
    return settings.apply_overrides(settings.load("upsampling", PROJECT_ROOT / "settings"), changes)


def check_streams_and_exports(loaded, loaded_s: settings.ModelSettings, path: Path, x: np.ndarray,
                              stream_snr_db: float) -> None:
    """The saved 4x model at ``path`` (``loaded``, its settings ``loaded_s``): windowed upsampling of
    ``x`` (4 kHz ``[time]``, a multiple of 32 samples) matches one pass over the whole array to
    ``stream_snr_db`` away from the file's zero-padded ends, and its LiteRT export matches that
    to 60 dB."""
    from speechsr import inference, runtime
    from speechsr.export import export_model, snr_db
    n = len(x)
    whole = loaded(x[None, :, None]).numpy()[0, :, 0]
    up = upsampling_settings(window_seconds=1.024, overlap_seconds=0.512, batch_size=2)
    streamed = inference.Upsampler(loaded, loaded_s, up).upsample(x)
    inner = slice(4000, 4 * n - 4000)
    assert snr_db(whole[inner], streamed[inner]) >= stream_snr_db
    res = export_model(path)
    assert res["written"] and res["snr_db"] >= 60
    runner, lite_s = runtime.load_lite(path)
    assert snr_db(streamed, inference.Upsampler(runner, lite_s, up).upsample(x)) >= 60


def perturbed_model(s: settings.ModelSettings, seed: int):
    """A freshly built model of settings ``s`` with N(0, 0.05) noise on every weight, so that a seam,
    an edge effect or a runtime difference shows (untrained, the model is plain sinc interpolation)."""
    from speechsr.model import build_model
    model = build_model(s)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype(np.float32))
    return model


@dataclasses.dataclass(frozen=True)
class TinyModel:
    """The session's tiny model: its settings, the perturbed Keras model and where it is saved
    (``tiny.keras`` + ``tiny.json`` sidecar, no LiteRT export beside it: copy it before exporting)."""
    settings: settings.ModelSettings
    model: object
    path: Path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    from speechsr import model_io
    s = tiny_model_settings()
    model = perturbed_model(s, seed=1)
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.keras"
    model_io.save_model(model, path, s)
    return TinyModel(s, model, path)


@pytest.fixture(scope="session")
def tiny_exported(tiny_model, tmp_path_factory) -> Path:
    """A copy of the tiny model with its float32 LiteRT export beside it (``runtime="lite"``)."""
    from speechsr.export import export_model
    path = tmp_path_factory.mktemp("tiny_exported") / "tiny.keras"
    for suffix in (".keras", ".json"):
        path.with_suffix(suffix).write_bytes(tiny_model.path.with_suffix(suffix).read_bytes())
    res = export_model(path)
    assert res["written"] and res["snr_db"] >= 60
    return path


# ------------------------------------------------------------------ scripts

def run_script(script: str | os.PathLike, *args, cwd=PROJECT_ROOT, timeout: float = 300, text: bool = True,
               **kwargs) -> subprocess.CompletedProcess:
    """Run ``script`` (a path relative to the project root, or absolute) with ``args`` in a fresh
    Python process; output captured (text unless ``text=False``)."""
    path = Path(script) if Path(script).is_absolute() else PROJECT_ROOT / script
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=cwd, capture_output=True, text=text,
                          timeout=timeout, **kwargs)


@pytest.fixture()
def script_main(capsys, monkeypatch):
    """``script_main("train.py", *args, cwd=None)``: the script's ``main(argv)`` in this process ->
    a CompletedProcess (returncode, stdout, stderr) as :func:`run_script` gives.

    As in a fresh process: ``sys.argv[0]`` is the script's name, the script's own
    ``logging.basicConfig`` takes effect (its log lines land in stderr), argparse exits become
    return codes. The SIGTERM handler and logging set-up are restored afterwards.
    """
    from speechsr import cli

    def call(script: str, *args, cwd=None) -> subprocess.CompletedProcess:
        module = cli.load_script(script)
        argv = [str(a) for a in args]
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", [Path(script).name, *argv])
        root, ours = logging.getLogger(), logging.getLogger("speechsr")
        saved = root.handlers[:], root.level, ours.level, signal.getsignal(signal.SIGTERM)
        root.handlers = []  # the script's basicConfig sets up its stderr handler, as in a fresh process
        capsys.readouterr()
        try:
            code = module.main(argv)
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            for handler in root.handlers:
                handler.flush()
            root.handlers = saved[0]
            root.setLevel(saved[1])
            ours.setLevel(saved[2])
            signal.signal(signal.SIGTERM, saved[3])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess([Path(script).name, *argv], code, out, err)

    return call


# ------------------------------------------------------------------ clip corpora


def write_clip_corpus(root: Path, n_recordings: int = 4, clips_per_recording: int = 3,
                      clip_seconds: float = 0.5) -> dict:
    """Clip pairs + train/validation CSVs in preprocessing's layout; returns the CSV paths."""
    rows = []
    for r in range(n_recordings):
        rec = f"rec{r}"
        x = speech_like(clip_seconds * clips_per_recording, seed=r)
        lr = audio.sox_downsample(x, 16000, 4000)
        n_hr, n_lr = int(clip_seconds * 16000), int(clip_seconds * 4000)
        for i in range(clips_per_recording):
            base = root / "clips" / rec / f"{rec}_{i:05d}"
            audio.write_audio(f"{base}.hr.wav", x[i * n_hr:(i + 1) * n_hr], 16000, "PCM_16")
            audio.write_audio(f"{base}.lr.wav", lr[i * n_lr:(i + 1) * n_lr], 4000, "PCM_16")
            rows.append((rec, f"clips/{rec}/{rec}_{i:05d}.hr.wav", f"clips/{rec}/{rec}_{i:05d}.lr.wav", clip_seconds))
    out = {}
    for name, part in (("train", rows[clips_per_recording:]), ("validation", rows[:clips_per_recording])):
        path = root / f"{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["recording_id", "high_res", "low_res", "duration_s"])
            w.writerows(part)
        out[name] = path
    return out


@pytest.fixture(scope="session")
def clip_corpus(tmp_path_factory) -> dict:
    return write_clip_corpus(tmp_path_factory.mktemp("clips"))


@pytest.fixture()
def tiny_settings_dir(tmp_path, clip_corpus) -> Path:
    """A settings folder with a tiny model and a few-step training run into tmp_path/models."""
    d = tmp_path / "settings"
    d.mkdir()
    ms = settings.to_json(tiny_model_settings())
    ts = settings.to_json(settings.load("training", PROJECT_ROOT / "settings"))
    ts.update(train_csv=str(clip_corpus["train"]), validation_csv=str(clip_corpus["validation"]),
              models_dir=str(tmp_path / "models"), run_name="tiny", batch_size=3, epochs=3, steps_per_epoch=30,
              patch_length=512, learning_rate=1e-3, warmup_steps=0, validation_max_clips=3,
              shuffle_buffer=16, checkpoint_every_steps=2, mrstft_weight=0.0)
    (d / "model_settings.json").write_text(json.dumps(ms))
    (d / "training_settings.json").write_text(json.dumps(ts))
    return d
