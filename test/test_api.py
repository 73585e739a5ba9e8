"""The Python API (speechsr.upsample / upsample_file / load_model) and the `speechsr` command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import speechsr
from conftest import PROJECT_ROOT, speech_like, tiny_model_settings
from speechsr import api, model_io, settings
from speechsr.model import build_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny perturbed model on disk and upsampling settings with short windows and blocks."""
    s = tiny_model_settings()
    model = build_model(s)
    rng = np.random.default_rng(3)
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype(np.float32))
    path = tmp_path_factory.mktemp("api") / "tiny.keras"
    model_io.save_model(model, path, s)
    up = settings.apply_overrides(settings.load("upsampling"), {
        "window_seconds": 0.512, "overlap_seconds": 0.128, "batch_size": 3, "block_seconds": 0.3})
    return path, up


@pytest.mark.parametrize("rate, channels", [(4000, 1), (8000, 2), (11025, 1)])
def test_array_gives_the_file_samples_at_any_rate(tmp_path, tiny, rate, channels):
    path, up = tiny
    model = speechsr.load_model(path, up)
    x = speech_like(2.3, rate, seed=rate)
    pcm = np.round(np.stack([x, 0.5 * x][:channels], axis=1) * 32767).astype(np.int16)
    sf.write(tmp_path / "in.wav", pcm, rate, subtype="PCM_16")
    info = model.upsample_file(tmp_path / "in.wav", tmp_path / "out.wav", subtype="FLOAT")
    from_file, file_rate = sf.read(tmp_path / "out.wav", dtype="float32")
    y, out_rate = model.upsample(pcm if channels > 1 else pcm[:, 0], rate)  # int16 samples, as read
    assert (out_rate, file_rate) == (16000, 16000)
    assert y.dtype == np.float32 and y.size == info["output_samples"] == 4 * info["input_samples"]
    assert np.array_equal(y, from_file)  # several blocks and windows: same samples as the command line
    y2, _ = speechsr.upsample(sf.read(tmp_path / "in.wav", dtype="float32")[0], rate, model=model)
    assert np.array_equal(y2, y)  # float samples as soundfile reads them


def test_module_functions_load_a_model_once(tmp_path, tiny):
    path, _ = tiny
    api._cache.clear()
    x = speech_like(0.5, 4000)
    y1, _ = speechsr.upsample(x, 4000, model=path)
    y2, _ = speechsr.upsample(x, 4000, model=str(path))
    assert len(api._cache) == 1 and np.array_equal(y1, y2)
    (model,) = api._cache.values()
    assert model.path == path and repr(model).startswith("speechsr.Model(")
    api._cache.clear()


def test_bad_arrays_raise_value_error(tiny):
    model = speechsr.load_model(tiny[0], tiny[1])
    for bad, rate in ((np.zeros((2, 3, 4)), 4000), (np.array([0.0, np.nan]), 4000), (np.zeros(10), 0),
                      (np.zeros(10, np.uint8), 4000)):
        with pytest.raises(ValueError):
            model.upsample(bad, rate)
    assert model.upsample(np.zeros(0, np.float32), 4000)[0].size == 0


def test_pretrained_resolves_the_shipped_model():
    up = settings.load("upsampling")
    assert settings.project_path(up.model) == PROJECT_ROOT / "models" / "pretrained" / "model.keras"
    assert not settings.INSTALLED and settings.DEFAULT_SETTINGS_DIR == PROJECT_ROOT / "settings"


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)


def test_import_is_light_and_the_command_dispatches_to_the_scripts():
    proc = run("-c", "import sys, speechsr; speechsr.__dir__(); "
                     "assert not {'tensorflow', 'keras', 'numpy'} & set(sys.modules), sorted(sys.modules)")
    assert proc.returncode == 0, proc.stderr
    proc = run("-m", "speechsr", "--version")
    assert proc.returncode == 0 and proc.stdout.startswith(f"speechsr {speechsr.__version__}\nmodel: pretrained ")
    proc = run("-m", "speechsr", "upsample", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: speechsr upsample [-h] [-o OUTPUT]")
    proc = run("-m", "speechsr", "split", "--by", "nonsense")
    assert proc.returncode == 2 and "speechsr split: error: argument --by" in proc.stderr
    proc = run("-m", "speechsr", "nonsense")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown command 'nonsense'")
