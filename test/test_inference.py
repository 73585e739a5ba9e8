"""Upsampling engine (windows, cross-fades, streaming), file I/O and the two scripts.

The model is the session's tiny one (conftest: 2 blocks, 8-16 filters, random weight noise so
that a seam or an edge effect would show); the zero-residual one is the same untrained.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import run_script, speech_like, upsampling_settings
from speechsr import audio, bandlimit, settings
from speechsr.evaluation import reference_mode
from speechsr.inference import Upsampler
from speechsr.files import InputBandError, check_input_band, upsample_file
from speechsr.model import build_model, required_multiple

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_settings(tiny_model):
    return tiny_model.settings


@pytest.fixture(scope="module")
def perturbed_model(tiny_model):
    return tiny_model.model


@pytest.fixture(scope="module")
def zero_residual_model(tiny_settings):
    return build_model(tiny_settings)  # final conv initialised to zero: output = sinc interpolation


@pytest.fixture(scope="module")
def upsampler(perturbed_model, tiny_settings):
    return Upsampler(perturbed_model, tiny_settings, upsampling_settings(window_seconds=0.512, overlap_seconds=0.128, batch_size=3))


@pytest.fixture(scope="module")
def model_path(tiny_model):
    return tiny_model.path


def whole_pass(model, x: np.ndarray, s) -> np.ndarray:
    """One model call on the whole signal, zero-padded to the required multiple."""
    m, f = required_multiple(s), s.output_rate // s.input_rate
    padded = np.pad(x, (0, (-len(x)) % m))[None, :, None]
    return model(padded, training=False).numpy()[0, :len(x) * f, 0]


# ------------------------------------------------------------------ engine

def test_fades_are_complementary(upsampler):
    assert np.allclose(upsampler._rise + upsampler._fall, 1.0, atol=1e-7)
    assert np.all(np.diff(upsampler._rise) >= 0)
    m = required_multiple(upsampler.settings)
    assert upsampler.window % m == 0 and upsampler.hop % m == 0


def test_windowed_equals_whole_pass(upsampler, perturbed_model, tiny_settings):
    x = speech_like(5.0, 4000)  # 20000 samples: 13 windows of 2048 (hop 1536), 5 batches
    assert upsampler.num_windows(len(x)) > 6
    y = upsampler.upsample(x)
    ref = whole_pass(perturbed_model, x, tiny_settings)
    keep = (len(x) - upsampler.window) * upsampler.factor  # before the last window's padded edge
    err = np.abs(y[:keep] - ref[:keep]).max() / np.abs(ref).max()
    assert err < 1e-4, f"seam: max relative difference {err:.2e}"


@pytest.mark.parametrize("n", [1, 7, 31, 2047, 2048, 2049, 3585, 6143, 9001])
def test_output_length(upsampler, n):
    x = np.random.default_rng(n).normal(0, 0.1, n).astype(np.float32)
    y = upsampler.upsample(x)
    assert y.shape == (4 * n,) and y.dtype == np.float32
    assert np.all(np.isfinite(y))


def test_streaming_equals_whole_array(upsampler):
    x = speech_like(4.3, 4000, seed=3)
    rng = np.random.default_rng(7)
    cuts = np.cumsum(rng.integers(1, 2500, size=200))
    blocks = np.split(x, cuts[cuts < len(x)])
    streamed = list(upsampler.stream(iter(blocks)))
    assert np.array_equal(np.concatenate(streamed), upsampler.upsample(x))
    assert max(len(b) for b in streamed) <= upsampler.batch_size * upsampler.hop * upsampler.factor + upsampler.window * 4
    assert upsampler._fn.experimental_get_tracing_count() == 1  # batches of 1..3 windows: one trace


def test_no_level_dip_with_zero_residual(zero_residual_model, tiny_settings):
    up = Upsampler(zero_residual_model, tiny_settings,
                   upsampling_settings(window_seconds=0.512, overlap_seconds=0.256, batch_size=2))
    x = speech_like(3.0, 4000, seed=5)
    y = up.upsample(x)
    # the untrained model is pure (linear) sinc interpolation: equal to one pass everywhere
    ref = whole_pass(zero_residual_model, x, tiny_settings)
    assert np.abs(y - ref).max() < 1e-5 * np.abs(ref).max()
    # constant gain across joins: a DC input comes out as the same DC away from the ends
    ones = up.upsample(np.ones(12000, np.float32))
    taps = tiny_settings.interpolation_taps * 4
    assert np.abs(ones[taps:-taps] - 1.0).max() < 1e-4


# ------------------------------------------------------------------ files

def test_upsample_file_writes_16k_wav(tmp_path, upsampler):
    src = tmp_path / "low.wav"
    x = speech_like(2.77, 4000, seed=2)
    sf.write(src, x, 4000, subtype="PCM_16")
    out = tmp_path / "out" / "low_up.wav"
    info = upsample_file(src, out, upsampler, block_seconds=0.3)
    meta = sf.info(out)
    assert (meta.samplerate, meta.frames, meta.subtype) == (16000, 4 * len(x), "PCM_16")
    assert info["output_samples"] == 4 * len(x)
    assert sorted(p.name for p in out.parent.iterdir()) == ["low_up.wav"]  # no temp files


def test_lowpass_stream_equals_whole_signal_convolution_for_any_blocks():
    x = np.random.default_rng(3).standard_normal(3000).astype(np.float32)
    h = bandlimit.lowpass_taps()
    want = np.convolve(x, h)[len(h) // 2:len(h) // 2 + len(x)]  # zero phase, same length
    for cuts in ([], [1, 2, 50], [700, 701, 2999], list(range(0, 3000, 97))):
        got = np.concatenate(list(bandlimit.lowpass_stream(np.split(x, cuts))))
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.concatenate(list(bandlimit.lowpass_stream([x[:40]]))).size == 40  # shorter than the filter
    assert list(bandlimit.lowpass_stream([])) == []


def test_band_edge_detection_tells_sox_input_from_other_resamplers():
    import scipy.signal
    hr = speech_like(3.0, 16000, seed=6)
    sox = audio.sox_downsample(hr, 16000, 4000)
    poly = scipy.signal.resample_poly(hr, 1, 4)
    assert bandlimit.edge_energy_db(sox) < bandlimit.THRESHOLD_DB - 10
    assert bandlimit.edge_energy_db(poly) > bandlimit.THRESHOLD_DB + 5
    assert not bandlimit.needs_lowpass(sox, "auto") and bandlimit.needs_lowpass(poly, "auto")
    assert bandlimit.needs_lowpass(sox, "on") and not bandlimit.needs_lowpass(poly, "off")
    filtered = np.concatenate(list(bandlimit.lowpass_stream([poly])))
    assert bandlimit.edge_energy_db(filtered) < bandlimit.THRESHOLD_DB - 10
    with pytest.raises(settings.SettingsError, match="input_lowpass"):  # modes are checked once, in the settings
        upsampling_settings(input_lowpass="sometimes")


def test_upsample_file_band_limits_only_inputs_with_content_at_the_band_edge(tmp_path, perturbed_model, tiny_settings):
    import scipy.signal
    hr = speech_like(2.0, 16000, seed=7)
    inputs = {"sox": audio.sox_downsample(hr, 16000, 4000), "poly": scipy.signal.resample_poly(hr, 1, 4)}
    outputs = {}
    for mode in ("auto", "off"):
        up = Upsampler(perturbed_model, tiny_settings, upsampling_settings(
            window_seconds=0.512, overlap_seconds=0.128, batch_size=3, input_lowpass=mode))
        for name, x in inputs.items():
            sf.write(tmp_path / f"{name}.wav", x.astype(np.float32), 4000, subtype="FLOAT")
            info = upsample_file(tmp_path / f"{name}.wav", tmp_path / f"{name}_{mode}.wav", up, block_seconds=0.3)
            assert info["input_lowpass"] == (mode == "auto" and name == "poly"), (mode, name)
            outputs[name, mode] = sf.read(tmp_path / f"{name}_{mode}.wav", dtype="float32")[0]
    np.testing.assert_array_equal(outputs["sox", "auto"], outputs["sox", "off"])
    assert outputs["poly", "auto"].shape == outputs["poly", "off"].shape
    assert not np.allclose(outputs["poly", "auto"], outputs["poly", "off"], atol=1e-3)


def test_upsample_file_failure_leaves_nothing(tmp_path, upsampler, monkeypatch):
    src = tmp_path / "low.wav"
    sf.write(src, speech_like(3.0, 4000), 4000, subtype="FLOAT")

    def broken(blocks):
        for b in blocks:
            yield np.zeros(4 * len(b), np.float32)
            raise RuntimeError("boom")

    monkeypatch.setattr(upsampler, "stream", broken)
    with pytest.raises(RuntimeError):
        upsample_file(src, tmp_path / "out.wav", upsampler, block_seconds=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["low.wav"]


def test_input_band_check(tmp_path, tiny_settings, caplog):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "wide.wav", rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    with pytest.raises(InputBandError, match="already has content up to"):
        check_input_band(tmp_path / "wide.wav", tiny_settings)
    sf.write(tmp_path / "tel.wav", rng.normal(0, 0.1, 8000).astype(np.float32), 8000)
    with caplog.at_level(logging.WARNING, logger="speechsr"):
        check_input_band(tmp_path / "tel.wav", tiny_settings)
    assert "low-passed" in caplog.text
    sf.write(tmp_path / "low.wav", rng.normal(0, 0.1, 4000).astype(np.float32), 4000)
    assert check_input_band(tmp_path / "low.wav", tiny_settings) == {"rate": 4000}


def test_reference_mode(tmp_path, upsampler):
    path = tmp_path / "hi.wav"
    sf.write(path, speech_like(2.0, 16000), 16000, subtype="PCM_16")
    res = reference_mode(path, upsampler)
    assert set(res["metrics"]) == {"model", "sinc", "spline"}
    sig = res["signals"]
    assert len(sig["model"]) == len(sig["reference"]) == len(sig["sinc"]) == 4 * len(sig["low_res"])
    assert res["metrics"]["sinc"]["snr"] > 5  # sanity: the low band is most of the energy


# ------------------------------------------------------------------ scripts (main() in-process; one process run)

def one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("script", ["upsample_audio_file.py", "evaluate.py"])
def test_cli_help(script, script_main):
    proc = script_main(script, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {script}") and "--model" in proc.stdout


def test_cli_missing_model(tmp_path, script_main):
    src = tmp_path / "low.wav"
    sf.write(src, speech_like(1.0, 4000), 4000)
    line = one_error_line(script_main("upsample_audio_file.py", src, "--model", tmp_path / "none.keras"))
    assert "train" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["low.wav"]


def test_cli_corrupt_input(tmp_path, model_path, script_main):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt junk that is not audio")
    one_error_line(script_main("upsample_audio_file.py", bad, "--model", model_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav"]


def test_cli_rejects_broadband_input(tmp_path, model_path, script_main):
    src = tmp_path / "wide.wav"
    sf.write(src, speech_like(2.0, 16000), 16000)
    line = one_error_line(script_main("upsample_audio_file.py", src, "--model", model_path))
    assert "already has content" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.wav"]


@pytest.mark.slow  # several seconds of model work or processes: CI runs it (make test stays near a minute)
def test_cli_reference_and_plot(tmp_path, model_path, script_main):
    src = tmp_path / "hi.flac"
    sf.write(src, speech_like(1.5, 16000, seed=4), 16000, subtype="PCM_16")
    png = tmp_path / "figures" / "cmp.png"  # a folder not made yet, as `make demo`'s out/ on a fresh clone
    proc = script_main("upsample_audio_file.py", src, "--reference", "--plot", png, "--model", model_path)
    assert proc.returncode == 0, proc.stderr
    for word in ("model", "sinc", "spline", "SNR", "LSD", "HF energy", "ViSQOL", "P.808", "reference"):
        assert word in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "hi_upsampled.wav"
    assert sf.info(out).samplerate == 16000


def test_evaluate_script(tmp_path, model_path, script_main):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"utt{i}.wav", speech_like(1.5 + i, 16000, seed=10 + i), 16000, subtype="PCM_16")
    out = tmp_path / "results"
    proc = script_main("evaluate.py", "--input", data, "-o", out, "--model", model_path, "-q",
                       "--no-perceptual", "--listen", "1")
    assert proc.returncode == 0, proc.stderr
    assert {"results.md", "results.csv", "results.png", "results.html"} <= {p.name for p in out.iterdir()}
    assert "RTF" in proc.stdout and "| **model** |" in proc.stdout and "HF energy (dB)" in proc.stdout
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].startswith("file,duration_s,model_snr,model_lsd,model_lsd_lf,model_lsd_hf") and len(lines) == 3


def test_evaluate_script_smoke(tmp_path, tiny_exported):
    """evaluate.py as a process, on the LiteRT export of the tiny model (no TensorFlow to import)."""
    sf.write(tmp_path / "utt.wav", speech_like(1.2, 16000, seed=12), 16000, subtype="PCM_16")
    out = tmp_path / "results"
    proc = run_script("evaluate.py", "--input", tmp_path / "utt.wav", "-o", out, "--model", tiny_exported,
                      "--runtime", "lite", "-q", "--no-perceptual", "--listen", "0")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "| **model** |" in proc.stdout and (out / "results.csv").read_text().count("\n") == 2
