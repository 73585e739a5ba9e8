"""The spectral model (model setting ``architecture: "spectral"``, speechsr.spectral).

Tiny networks with perturbed weights (conftest.perturbed_model), so that what the network adds is
loud enough for a seam, an edge effect, a leak below the cut or a runtime difference to show.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import check_streams_and_exports, perturbed_model, speech_like, tiny_model_settings
from speechsr import geometry, model_io, settings, spectral
from speechsr.export import export_model

RATE = 16000


def spectral_settings(input_rate: int = 4000, **changes) -> settings.ModelSettings:
    return tiny_model_settings(**{"architecture": "spectral", "input_rate": input_rate, "spectral_channels": 16,
                                  "spectral_dilations": [1, 2], **changes})


def spectrum_db(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return 20 * np.log10(np.abs(np.fft.rfft(x * np.hanning(len(x))))[(f >= lo) & (f < hi)] + 1e-12)


@pytest.mark.parametrize("input_rate", [4000, 8000])
def test_the_model_adds_only_above_the_cut_and_below_it_is_the_interpolated_input(input_rate):
    from speechsr.model import SincInterpolation1D
    s = spectral_settings(input_rate)
    model = perturbed_model(s, seed=2)
    factor = RATE // input_rate
    x = speech_like(2.0, input_rate, seed=4)[None, :, None]
    y = model(x).numpy()[0, :, 0]
    interpolated = SincInterpolation1D(factor, s.interpolation_taps)(x).numpy()[0, :, 0]
    added = y - interpolated
    nyquist = input_rate / 2
    cut = spectral.cut_bin(factor) * RATE / 512
    assert cut == pytest.approx(nyquist * spectral.CUT_FRACTION, abs=RATE / 512)
    below = spectrum_db(added, 50, cut - 200).max()
    above = spectrum_db(added, nyquist, RATE / 2 - 100)
    assert np.median(above) > below + 40  # the band above is the network's, below it nothing leaks
    assert np.median(above) > np.median(spectrum_db(interpolated, nyquist, RATE / 2 - 100)) + 20


def test_settings_keep_the_envelope_layer_and_odd_factors_off_the_spectral_model():
    base = settings.to_json(spectral_settings())
    with pytest.raises(settings.SettingsError, match="high_band_bands"):
        settings.validate("model", {**base, "high_band_bands": 8}, "test")
    with pytest.raises(settings.SettingsError, match="2, 4 or 8"):
        settings.validate("model", {**base, "input_rate": 16000 // 16}, "test")
    with pytest.raises(settings.SettingsError, match="architecture"):
        settings.validate("model", {**base, "architecture": "transformer"}, "test")
    with pytest.raises(settings.SettingsError, match="spectral_dilations"):
        settings.validate("model", {**base, "spectral_dilations": [0]}, "test")


def test_build_model_names_the_model_by_its_architecture_unless_told():
    from speechsr.model import build_model
    assert build_model(spectral_settings()).name == "speechsr_spectral"
    assert build_model(tiny_model_settings()).name == "speechsr_unet"
    assert build_model(spectral_settings(), name="mine").name == "mine"
    assert build_model(tiny_model_settings(), name="mine").name == "mine"


def test_receptive_context_bounds_what_an_input_sample_changes():
    s = spectral_settings()
    model = perturbed_model(s, seed=1)
    n, center = 4096, 2048
    x = np.random.default_rng(0).normal(0, 0.1, (1, n, 1)).astype(np.float32)
    bumped = x.copy()
    bumped[0, center, 0] += 0.5
    diff = np.abs(model(bumped).numpy()[0, :, 0] - model(x).numpy()[0, :, 0])
    moved = np.nonzero(diff > 1e-7)[0] / 4 - center  # input samples
    context = geometry.receptive_context(s)
    assert np.abs(moved).max() <= context
    assert np.abs(moved).max() > context / 2
    assert geometry.required_multiple(s) == geometry.SPECTRAL_HOP // 4


def test_saved_model_streams_like_one_pass_and_exports_to_litert(tmp_path):
    s = spectral_settings()
    model = perturbed_model(s, seed=3)
    path = tmp_path / "spectral.keras"
    model_io.save_model(model, path, s)
    loaded, loaded_s, _ = model_io.load_model(path)
    assert loaded_s.architecture == "spectral" and loaded.get_layer("spectral").dilations == [1, 2]
    x = speech_like(3.0, 4000, seed=5)
    x = x[:len(x) // 32 * 32]
    np.testing.assert_allclose(loaded(x[None, :, None]).numpy(), model(x[None, :, None]).numpy(), atol=1e-6)
    check_streams_and_exports(loaded, loaded_s, path, x, stream_snr_db=60)


@pytest.mark.slow  # a training run's graph tracing and validation: CI runs it (make test stays near a minute)
def test_train_py_trains_a_spectral_model(tiny_settings_dir):
    from speechsr.training import fit, prepare
    raw = json.loads((tiny_settings_dir / "model_settings.json").read_text())
    raw.update(architecture="spectral", spectral_channels=8, spectral_dilations=[1])
    ms = settings.validate("model", raw, "test")
    ts = settings.apply_overrides(settings.load("training", tiny_settings_dir),
                                  {"epochs": 1, "steps_per_epoch": 2, "patch_length": 512, "mrstft_weight": 1e-3})
    trainer, run = prepare(ms, ts)
    before = [w.copy() for w in trainer.model.get_layer("spectral").get_weights()]
    fit(trainer, run, ms, ts)
    after = trainer.model.get_layer("spectral").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    saved, saved_s, _ = model_io.load_model(run.path / "best.keras")
    assert saved_s.architecture == "spectral"


@pytest.mark.slow  # two LiteRT conversions: CI runs it (make test stays near a minute)
def test_int8_export_quantizes_the_network_and_keeps_the_dft_float(tmp_path):
    s = spectral_settings(spectral_channels=64)
    path = tmp_path / "spectral.keras"
    model_io.save_model(perturbed_model(s, seed=3), path, s)
    int8, float32 = export_model(path, "lite-int8"), export_model(path, "lite")
    assert int8["written"] and 35 <= int8["snr_db"] < float32["snr_db"] - 20  # close, not equal
    network = s.spectral_channels ** 2 * 4 * len(s.spectral_dilations)  # the residual blocks' weights
    assert float32["bytes"] - int8["bytes"] > 0.8 * 3 * network  # quantized: 1 byte each instead of 4
