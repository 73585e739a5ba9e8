"""compose_model.py / speechsr.composition: a model from one model's U-Net and a weighted blend of
other models' high-band layers (how the shipped default was made)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import perturbed_model, speech_like, tiny_model_settings
from speechsr import model_io

HB = {"high_band_bands": 8, "high_band_channels": 8, "high_band_layers": 2}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A wider U-Net without a layer, and two models (another U-Net) with layers played differently."""
    root = tmp_path_factory.mktemp("parts")
    unet_s = tiny_model_settings(first_filters=12, filter_cap=24)
    hb_s = [tiny_model_settings(**HB, high_band_contrast=2.0, high_band_gain_db=-4.0),
            tiny_model_settings(**HB, high_band_contrast=1.0, high_band_gain_db=0.0)]
    paths = {"unet": root / "unet.keras", "a": root / "a.keras", "b": root / "b.keras",
             "wide": root / "wide.keras"}
    model_io.save_model(perturbed_model(unet_s, seed=1), paths["unet"], unet_s, {"epoch": 7})
    for name, s, seed in (("a", hb_s[0], 2), ("b", hb_s[1], 3)):
        model_io.save_model(perturbed_model(s, seed=seed), paths[name], s)
    wide_s = tiny_model_settings(**{**HB, "high_band_channels": 16})
    model_io.save_model(perturbed_model(wide_s, seed=4), paths["wide"], wide_s)
    return paths


def _weights(path, layer):
    model, _, _ = model_io.load_model(path)
    return model.get_layer(layer).get_weights()


def test_composed_model_has_the_unet_of_one_and_the_blended_layer_of_others(parts, script_main, tmp_path):
    out = tmp_path / "composed.keras"
    res = script_main("compose_model.py", "--unet", parts["unet"], "--high-band", parts["a"], parts["b"],
                      "--fractions", "0.7", "0.3", "-o", out)
    assert res.returncode == 0, res.stderr
    model, s, info = model_io.load_model(out)
    unet, unet_s, _ = model_io.load_model(parts["unet"])
    assert (s.first_filters, s.filter_cap) == (unet_s.first_filters, unet_s.filter_cap) == (12, 24)
    assert (s.high_band_contrast, s.high_band_gain_db, s.high_band_bands) == (2.0, -4.0, 8)  # the first source's
    assert info["epoch"] == 7 and [h["fraction"] for h in info["composition"]["high_band"]] == [0.7, 0.3]
    for layer in unet.layers:
        for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    a, b = _weights(parts["a"], "high_band"), _weights(parts["b"], "high_band")
    got = model.get_layer("high_band").get_weights()
    for g, x, y in zip(got, a, b, strict=True):
        np.testing.assert_allclose(g, 0.7 * x + 0.3 * y, atol=1e-6)
    assert any(not np.allclose(g, x) for g, x in zip(got, a))
    x = speech_like(1.0, 4000, seed=2)[:3968]
    y = model(x[None, :, None]).numpy()[0, :, 0]
    assert y.shape == (4 * len(x),) and np.isfinite(y).all()


def test_one_layer_source_is_copied_whole(parts, script_main, tmp_path):
    out = tmp_path / "graft.keras"
    assert script_main("compose_model.py", "--unet", parts["unet"], "--high-band", parts["b"], "-o", out).returncode == 0
    for g, want in zip(_weights(out, "high_band"), _weights(parts["b"], "high_band"), strict=True):
        np.testing.assert_array_equal(g, want)
    assert json.loads(out.with_suffix(".json").read_text())["model_settings"]["high_band_contrast"] == 1.0


def test_no_high_band_drops_the_layer_and_keeps_the_unet(parts, script_main, tmp_path):
    """How the U-Net alone of a shipped model is scored (model 1.0 was such a U-Net)."""
    out = tmp_path / "unet_only.keras"
    r = script_main("compose_model.py", "--unet", parts["a"], "--no-high-band", "-o", out)
    assert r.returncode == 0, r.stderr
    model, s, info = model_io.load_model(out)
    source, _, _ = model_io.load_model(parts["a"])
    assert s.high_band_bands == 0 and info["composition"]["high_band"] == []
    assert "high_band" not in [layer.name for layer in model.layers]
    for layer in model.layers:
        for got, want in zip(layer.get_weights(), source.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    bad = script_main("compose_model.py", "--unet", parts["a"], "--no-high-band", "--high-band", parts["b"],
                      "-o", tmp_path / "x.keras")
    assert bad.returncode == 2 and not (tmp_path / "x.keras").exists()


@pytest.mark.parametrize("args, message", [
    (["--fractions", "0.5", "0.6"], "sum to 1"),
    (["--fractions", "1.0"], "1 given for 2"),
    ([], "one per --high-band"),
])
def test_bad_fractions_fail_in_one_line_before_anything_is_written(parts, script_main, tmp_path, args, message):
    out = tmp_path / "x.keras"
    res = script_main("compose_model.py", "--unet", parts["unet"], "--high-band", parts["a"], parts["b"], *args,
                      "-o", out)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_layers_of_different_shapes_or_a_source_without_a_layer_are_refused(parts, script_main, tmp_path):
    out = tmp_path / "x.keras"
    res = script_main("compose_model.py", "--unet", parts["unet"], "--high-band", parts["a"], parts["wide"],
                      "--fractions", "0.5", "0.5", "-o", out)
    assert res.returncode == 2 and "differ in shape" in res.stderr
    res = script_main("compose_model.py", "--unet", parts["a"], "--high-band", parts["unet"], "-o", out)
    assert res.returncode == 2 and "no high-band layer" in res.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_a_spectral_model_is_refused_as_the_unet(parts, script_main, tmp_path):
    s = tiny_model_settings(architecture="spectral", spectral_channels=8, spectral_dilations=[1])
    spectral = tmp_path / "spectral.keras"
    model_io.save_model(perturbed_model(s, seed=5), spectral, s)
    out = tmp_path / "x.keras"
    res = script_main("compose_model.py", "--unet", spectral, "--high-band", parts["a"], "-o", out)
    assert res.returncode == 2 and "not a U-Net" in res.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """Three "snapshots" of one tiny spectral model (same settings, different weights)."""
    root = tmp_path_factory.mktemp("snapshots")
    s = tiny_model_settings(architecture="spectral", spectral_channels=8, spectral_dilations=[1])
    paths = [root / f"epoch_{i:03d}.keras" for i in (2, 4, 6)]
    for i, path in enumerate(paths):
        model_io.save_model(perturbed_model(s, seed=10 + i), path, s, {"epoch": 2 * (i + 1)})
    return paths


@pytest.mark.parametrize("fractions", [None, [0.5, 0.25, 0.25]])
def test_average_is_the_weighted_mean_of_every_weight(snapshots, script_main, tmp_path, fractions):
    out = tmp_path / "soup.keras"
    extra = ["--fractions", *map(str, fractions)] if fractions else []
    res = script_main("compose_model.py", "--average", *snapshots, *extra, "-o", out)
    assert res.returncode == 0, res.stderr
    f = fractions or [1 / 3] * 3
    sources = [model_io.load_model(p)[0].get_weights() for p in snapshots]
    model, s, info = model_io.load_model(out)
    got = model.get_weights()
    assert len(got) == len(sources[0]) > 0
    for i, w in enumerate(got):
        np.testing.assert_allclose(w, sum(fi * src[i] for fi, src in zip(f, sources)), rtol=1e-5, atol=1e-7)
    assert s == model_io.load_model(snapshots[0])[1] and info["epoch"] == 6
    assert [a["fraction"] for a in info["average"]] == pytest.approx(f)
    x = speech_like(0.5, 4000, seed=1)[None, :, None]
    assert np.isfinite(model(x).numpy()).all()


def test_average_refuses_other_settings_one_model_and_layer_flags(snapshots, parts, script_main, tmp_path):
    out = tmp_path / "x.keras"
    res = script_main("compose_model.py", "--average", snapshots[0], parts["a"], "-o", out)
    assert res.returncode == 2 and "model settings differ" in res.stderr
    res = script_main("compose_model.py", "--average", snapshots[0], "-o", out)
    assert res.returncode == 2 and "two or more" in res.stderr
    res = script_main("compose_model.py", "--average", *snapshots, "--no-high-band", "-o", out)
    assert res.returncode == 2 and "whole models" in res.stderr
    res = script_main("compose_model.py", "--unet", parts["unet"], "-o", out)
    assert res.returncode == 2 and "--no-high-band" in res.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()
