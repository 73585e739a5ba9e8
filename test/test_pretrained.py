"""The shipped model: loads in Keras safe mode and beats sinc on the bundled real speech example."""

from __future__ import annotations

import json
import zipfile

import keras

from conftest import PROJECT_ROOT
from speechsr import model_io, settings
from speechsr.inference import load_upsampler, reference_mode

PRETRAINED = PROJECT_ROOT / "models" / "pretrained" / "model.keras"
EXAMPLE = PROJECT_ROOT / "examples" / "arctic_a0007.wav"


def test_shipped_model_loads_in_safe_mode_and_is_small():
    assert PRETRAINED.stat().st_size <= 20 * 2**20
    model = keras.saving.load_model(PRETRAINED, compile=False, safe_mode=True)
    assert model.output_shape == (None, None, 1)
    config = json.loads(zipfile.ZipFile(PRETRAINED).read("config.json"))
    assert "lambda" not in json.dumps(config).lower()  # nothing that safe mode would have to trust
    _, ms, info = model_io.load_model(PRETRAINED)
    assert (ms.input_rate, ms.output_rate) == (4000, 16000)
    assert "val_loss" in info


def test_shipped_model_beats_sinc_on_the_bundled_example():
    up = settings.load("upsampling", PROJECT_ROOT / "settings")
    result = reference_mode(EXAMPLE, load_upsampler(PRETRAINED, up))
    m = result["metrics"]
    assert m["model"]["lsd"] < m["sinc"]["lsd"] - 1.0, m
    assert m["model"]["lsd"] < m["spline"]["lsd"], m
    assert m["model"]["snr"] >= m["sinc"]["snr"], m  # not worse than sinc in SNR
    assert len(result["signals"]["model"]) == len(result["signals"]["reference"])
