"""The shipped 4x models (default and fast): load in Keras safe mode and beat sinc on the bundled
real speech example."""

from __future__ import annotations

import json
import zipfile

import keras
import pytest

from conftest import PROJECT_ROOT
from speechsr import model_io, settings
from speechsr.evaluation import reference_mode
from speechsr.loading import load_upsampler

PRETRAINED = PROJECT_ROOT / "models" / "pretrained" / "model.keras"
FAST = PROJECT_ROOT / "models" / "pretrained-fast" / "model.keras"
EXAMPLE = PROJECT_ROOT / "examples" / "arctic_a0007.wav"


@pytest.mark.parametrize("path", [PRETRAINED, FAST], ids=["default", "fast"])
def test_shipped_model_loads_in_safe_mode_and_is_small(path):
    assert path.stat().st_size <= 20 * 2**20
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    assert model.output_shape == (None, None, 1)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    assert "lambda" not in json.dumps(config).lower()  # nothing that safe mode would have to trust
    _, ms, info = model_io.load_model(path)
    assert (ms.input_rate, ms.output_rate) == (4000, 16000)
    assert "val_loss" in info


@pytest.mark.parametrize("path", [PRETRAINED, FAST], ids=["default", "fast"])
def test_shipped_model_beats_sinc_on_the_bundled_example(path):
    up = settings.load("upsampling", PROJECT_ROOT / "settings")
    result = reference_mode(EXAMPLE, load_upsampler(path, up))
    m = result["metrics"]
    assert m["model"]["lsd"] < m["sinc"]["lsd"] - 1.0, m
    assert m["model"]["lsd"] < m["spline"]["lsd"], m
    assert m["model"]["snr"] >= m["sinc"]["snr"] - 0.5, m  # the SNR guard of the targets: sinc - 0.5 dB
    assert m["model"]["hf_energy"] > m["sinc"]["hf_energy"] + 30, m  # a restored band, not sinc's silence
    assert len(result["signals"]["model"]) == len(result["signals"]["reference"])


@pytest.mark.parametrize("path", [PRETRAINED, FAST], ids=["default", "fast"])
def test_shipped_model_with_input_from_another_resampler(tmp_path, path):
    """A 4 kHz file made by scipy's resample_poly (content up to Nyquist): on 'auto' (the input
    low-pass that U-Nets trained on sox input need: version 4.0's U-Net lost 0.23 dB here without it)
    both shipped models keep the SNR guard (sinc - 0.5 dB), and the low-pass never costs SNR. The
    spectral default reads the bins up to the input's Nyquist, trained on sox input that rolls off
    there: version 5.0 scored the same either way (14.35 dB, sinc 14.48), version 5.1 needs the
    low-pass (14.16 dB on 'auto', 11.20 off)."""
    import numpy as np
    import scipy.signal
    import soundfile as sf
    from speechsr import audio, baselines, metrics
    from speechsr.files import upsample_file
    ref, rate = audio.read_audio(EXAMPLE)
    ref = audio.resample(ref, rate, 16000)
    ref = ref[:len(ref) - len(ref) % 4]
    low = scipy.signal.resample_poly(ref, 1, 4).astype(np.float32)
    sf.write(tmp_path / "low.wav", low, 4000, subtype="FLOAT")
    snr = {"sinc": metrics.snr(ref, baselines.sinc(low, 4000, 16000))}
    for mode in ("auto", "off"):
        up = settings.apply_overrides(settings.load("upsampling", PROJECT_ROOT / "settings"), {"input_lowpass": mode})
        upsample_file(tmp_path / "low.wav", tmp_path / f"{mode}.wav", load_upsampler(path, up))
        snr[mode] = metrics.snr(ref, sf.read(tmp_path / f"{mode}.wav", dtype="float32")[0])
    assert snr["auto"] >= snr["sinc"] - 0.5, snr
    assert snr["auto"] >= snr["off"] - 0.1, snr


def test_shipped_8k_model_restores_the_band_and_keeps_the_snr_guard():
    """The full-band 8 kHz model on the bundled example made 8 kHz by soxr VHQ: the band above 4 kHz
    restored, LSD far below sinc's, SNR within 1.5 dB of sinc's (its band below the cut is the input's)."""
    from speechsr import audio, baselines, metrics, resamplers, routing
    path = routing.fullband_8k_model_path()
    ref, rate = audio.read_audio(EXAMPLE)
    ref = audio.resample(ref, rate, 16000)
    ref = ref[:len(ref) - len(ref) % 2]
    low = resamplers.downsample(ref, 16000, 8000, "soxr_vhq")
    up = load_upsampler(path, settings.load("upsampling", PROJECT_ROOT / "settings"))
    assert up.settings.architecture == "spectral" and (up.input_rate, up.output_rate) == (8000, 16000)
    y, sinc = up.upsample(low), baselines.sinc(low, 8000, 16000)
    model, base = metrics.spectral(ref, y, 16000, 4000.0), metrics.spectral(ref, sinc, 16000, 4000.0)
    assert model["lsd"] < base["lsd"] - 1.0, (model, base)
    assert model["hf_energy"] > base["hf_energy"] + 30, (model, base)
    assert model["snr"] >= base["snr"] - 1.5, (model, base)
