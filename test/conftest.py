"""Shared fixtures: tiny model/training settings and a tiny generated clip-pair corpus."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import speechsr  # noqa: F401  (TF environment defaults)
from speechsr import audio, settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


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


def tiny_model_settings(**changes) -> settings.ModelSettings:
    base = settings.load("model", PROJECT_ROOT / "settings")
    tiny = {"num_blocks": 2, "first_filters": 8, "filter_cap": 16, "kernel_sizes": [9], "interpolation_taps": 8}
    return settings.apply_overrides(base, {**tiny, **changes})


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
