"""Lean runtime (LiteRT export): export, match checks, TF-free imports, equal output, pipes."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import perturbed_model, run_script, speech_like, upsampling_settings
from speechsr import audio, bandlimit, inference, loading, model_io, runtime, settings
from speechsr.export import export_model, snr_db

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "pretrained" / "model.keras"
SHIPPED_FAST = ROOT / "models" / "pretrained-fast" / "model.keras"
SHIPPED_TELEPHONY = ROOT / "models" / "pretrained-telephony" / "model.keras"
SHIPPED_8K = ROOT / "models" / "pretrained-8k" / "model.keras"
EXAMPLE = ROOT / "examples" / "arctic_a0007.wav"
SCRIPT = ROOT / "upsample_audio_file.py"


@pytest.fixture(scope="module")
def tiny_export(tiny_exported, tiny_model):
    """The session's tiny model, exported: (keras path, settings, keras model)."""
    return tiny_exported, tiny_model.settings, tiny_model.model


@pytest.fixture(scope="module")
def example_4k() -> np.ndarray:
    """The bundled ARCTIC utterance at 4 kHz, made by sox as preprocessing makes inputs."""
    x, rate = audio.read_audio(EXAMPLE)
    return audio.sox_downsample(x, rate, 4000)


# ------------------------------------------------------------------ export

@pytest.mark.parametrize("shipped", [SHIPPED, SHIPPED_FAST, SHIPPED_TELEPHONY, SHIPPED_8K],
                         ids=["default", "fast", "telephony", "8k"])
@pytest.mark.parametrize("variant", list(runtime.EXPORTS))
def test_shipped_exports_match_shipped_model(variant, shipped):
    """models/pretrained*/model[.int8].tflite come from their model.keras (else: `make export`).

    The int8 export is optional: `make export` leaves none when its check fails.
    """
    if variant != "lite" and not runtime.exported_path(shipped, variant).exists():
        pytest.skip(f"no {variant} export shipped")
    exported, info = runtime.export_info(shipped, variant)  # raises ExportUnavailable on a hash mismatch
    assert info["source_sha256"] == runtime.file_sha256(shipped)
    assert info["tflite_sha256"] == runtime.file_sha256(exported)
    assert info["model_settings"] == json.loads(shipped.with_suffix(".json").read_text())["model_settings"]
    assert info["variant"] == variant and info["check"]["snr_db"] >= (60 if variant == "lite" else 35)


def test_export_skips_when_current_and_detects_a_changed_model(tiny_export, tmp_path, caplog):
    path, s, _ = tiny_export
    assert export_model(path)["written"] is False  # up to date: nothing redone
    assert runtime.load_lite(path)[1] == s
    # a changed .keras (e.g. a retrained model copied over it) no longer matches its export
    copy = tmp_path / "tiny.keras"
    for suffix in (".keras", ".json", ".tflite"):
        copy.with_suffix(suffix).write_bytes(path.with_suffix(suffix).read_bytes())
    runtime.export_sidecar(copy.with_suffix(".tflite")).write_bytes(
        runtime.export_sidecar(path.with_suffix(".tflite")).read_bytes())
    runtime.export_info(copy)
    exported = copy.with_suffix(".tflite")
    exported.write_bytes(path.with_suffix(".tflite").read_bytes()[:-100])  # e.g. a copy cut short
    with pytest.raises(runtime.ExportUnavailable, match="damaged"):
        runtime.load_lite(copy)
    exported.write_bytes(path.with_suffix(".tflite").read_bytes())
    model_io.save_model(perturbed_model(s, seed=2), copy, s)
    with pytest.raises(runtime.ExportUnavailable, match="another version"):
        runtime.export_info(copy)
    up = settings.load("upsampling")
    with pytest.raises(runtime.ExportUnavailable):
        loading.load_upsampler(copy, up, runtime="lite")
    with caplog.at_level(logging.INFO, logger="speechsr"):
        assert loading.load_upsampler(copy, up, runtime="auto").runtime == "tf"  # falls back, warns
        assert [r.levelno for r in caplog.records if "using TensorFlow" in r.getMessage()] == [logging.WARNING]
        caplog.clear()
        assert loading.load_upsampler(path, up, runtime="auto").runtime == "lite"  # no int8 export: the float32 one
        assert [r.getMessage().split("; ")[-1] for r in caplog.records] == ["trying lite"]


def test_tiny_export_equals_keras_through_the_upsampler(tiny_export):
    path, s, model = tiny_export
    runner, settings = runtime.load_lite(path)
    x = speech_like(3.0, 4000, seed=3)
    up = upsampling_settings(window_seconds=0.512, overlap_seconds=0.128, batch_size=3)  # 8 windows: a short last batch
    y_tf = inference.Upsampler(model, s, up).upsample(x)
    lite = inference.Upsampler(runner, settings, up)
    y_lite = lite.upsample(x)
    assert lite.runtime == "lite" and lite.model_calls == 3
    assert y_lite.shape == y_tf.shape == (len(x) * 4,)
    assert snr_db(y_tf, y_lite) >= 60


def test_batches_split_over_single_threaded_interpreters_give_each_windows_output(tiny_export):
    path, _, _ = tiny_export
    exported, _ = runtime.export_info(path)
    runner = runtime.LiteRunner(exported, num_threads=2)
    windows = np.stack([speech_like(0.256, 4000, seed=k) for k in range(3)])[:, :, None]
    alone = np.concatenate([runner(w[None]) for w in windows])  # one window: the 2-thread interpreter
    assert runner._parts == []
    together = runner(windows)  # 3 windows: parts of 2 and 1, run at the same time
    assert len(runner._parts) == 2 and together.shape == alone.shape == (3, windows.shape[1] * 4, 1)
    assert np.abs(alone).max() > 0.01
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(runner(windows[::-1]), alone[::-1], atol=1e-5)  # in order, whatever the content


# ------------------------------------------------------------------ shipped model, real speech

def test_runtimes_agree_on_real_speech(example_4k):
    up = settings.apply_overrides(settings.load("upsampling"),
                                            {"window_seconds": 1.024, "overlap_seconds": 0.256, "batch_size": 2})
    lite = loading.load_upsampler(SHIPPED, up, runtime="lite")
    tf_ = loading.load_upsampler(SHIPPED, up, runtime="tf")
    assert (lite.runtime, tf_.runtime) == ("lite", "tf")
    y_lite, y_tf = lite.upsample(example_4k), tf_.upsample(example_4k)
    assert lite.model_calls > 2  # several batches, a short last one
    assert np.abs(y_tf).max() > 0.05
    assert snr_db(y_tf, y_lite) >= 60
    if runtime.exported_path(SHIPPED, "lite-int8").exists():
        int8 = loading.load_upsampler(SHIPPED, up, runtime="lite-int8")
        # int8 weights: close, not equal (the float32 export matches at over 100 dB)
        assert 35 <= snr_db(y_tf, int8.upsample(example_4k)) < 90


def test_lean_path_never_imports_tensorflow(tmp_path, example_4k):
    """upsample_audio_file.py with the lean runtime (the default when the export matches), on input
    whose band edge is not sox-clean, so the input low-pass runs too."""
    src = tmp_path / "call.wav"
    noisy = example_4k + 0.01 * np.random.default_rng(0).standard_normal(example_4k.size).astype(np.float32)
    assert bandlimit.needs_lowpass(noisy, "auto")
    audio.write_audio(src, noisy, 4000, "PCM_16")
    code = ("import runpy, sys\n"
            f"sys.argv = ['upsample_audio_file.py', {str(src)!r}, '-o', {str(tmp_path / 'out.wav')!r}, '-q']\n"
            "try:\n"
            f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'scipy.signal', 'librosa') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    y, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(y) == 4 * len(example_4k)


def test_numpy_kaiser_lowpass_equals_scipy_firwin():
    from scipy.signal import firwin
    for taps, cutoff in ((127, 0.95), (31, 0.5), (9, 0.1)):
        np.testing.assert_allclose(bandlimit.kaiser_lowpass(taps, cutoff), firwin(taps, cutoff, window=("kaiser", 8.0)),
                                   rtol=1e-10, atol=1e-14)


def test_numpy_welch_equals_scipy():
    from scipy.signal import welch
    rng = np.random.default_rng(0)
    for n, nperseg in ((5000, 1024), (1024, 1024), (999, 999), (3001, 1024)):
        x = rng.normal(size=n) + np.sin(0.3 * np.arange(n))
        f_ref, p_ref = welch(x, fs=2.0, nperseg=nperseg)
        f, p = bandlimit.welch_psd(x, nperseg)
        np.testing.assert_allclose(f, f_ref)
        np.testing.assert_allclose(p, p_ref, rtol=1e-9, atol=1e-12 * p_ref.max())


# ------------------------------------------------------------------ pipes

def wav_bytes(x: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def test_pipe_stdin_to_stdout_equals_file_mode(tmp_path, example_4k, script_main):
    src = tmp_path / "call.wav"
    audio.write_audio(src, example_4k, 4000, "PCM_16")
    file_out = tmp_path / "file.wav"
    assert script_main(SCRIPT.name, src, "-o", file_out, "-q").returncode == 0
    proc = run_script(SCRIPT, "-", "-o", "-", input=src.read_bytes(), text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout[:4] == b"RIFF" and proc.stderr == b""  # stdout carries nothing but the WAV
    y, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    ref, _ = sf.read(file_out, dtype="float32")
    assert rate == 16000 and len(y) == len(ref) == 4 * len(example_4k)
    assert snr_db(ref, y) >= 60
    # and sox reads the streamed WAV (the documented `| sox -t wav - out.flac`)
    flac = tmp_path / "out.flac"
    sox = subprocess.run(["sox", "-t", "wav", "-", str(flac)], input=proc.stdout, capture_output=True)
    assert sox.returncode == 0 and sox.stderr == b"", sox.stderr
    assert sf.info(flac).frames == len(y)


def test_pipe_streams_first_output_before_input_ends(example_4k):
    """Output arrives while stdin is still open: after one window plus a block, not at the end."""
    x = np.tile(example_4k, 3)  # 12 s; header with unknown length, as sox writes to a pipe
    data = wav_bytes(x, 4000)
    header, samples = data[:44], data[44:]
    header = header[:4] + (0x7FFFF000 + 36).to_bytes(4, "little") + header[8:40] + (0x7FFFF000).to_bytes(4, "little")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "-", "--runtime", "lite"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        window_bytes = 2 * int(4000 * 4.096)
        proc.stdin.write(header + samples[:window_bytes + 2 * 4000])  # one window + 1 s
        proc.stdin.flush()
        got = b""
        deadline = time.monotonic() + 120  # a hang guard only: output must come before more input
        while len(got) <= 44 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1.0)[0]:
                got += os.read(proc.stdout.fileno(), 1 << 20)
            assert proc.poll() is None, proc.stderr.read().decode()
        assert len(got) > 44  # the header and upsampled samples, with most of the input unsent
        proc.stdin.write(samples[window_bytes + 2 * 4000:])
        proc.stdin.close()
        rest, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(60) == 0, err.decode()
    finally:
        proc.kill()
    y, rate = sf.read(io.BytesIO(got + rest), dtype="float32")
    assert rate == 16000 and len(y) == 4 * len(x)


def test_pipe_arguments_are_checked(script_main, monkeypatch):
    proc = script_main(SCRIPT.name, "-", "-o", "-", "--reference")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "--reference" in proc.stderr
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"not audio")))
    proc = script_main(SCRIPT.name, "-", "-o", "-")
    assert proc.returncode == 2 and proc.stderr.startswith("error: <stdin>"), proc.stderr
    assert proc.stdout == ""  # no WAV header written before the error


# ------------------------------------------------------------------ export_model.py

def test_export_script_exports_then_skips_a_current_export(tiny_model, tmp_path, script_main):
    path = tmp_path / "m.keras"
    for suffix in (".keras", ".json"):
        path.with_suffix(suffix).write_bytes(tiny_model.path.with_suffix(suffix).read_bytes())
    r = script_main("export_model.py", path, "--variants", "lite")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {path.with_suffix('.tflite')}") and "matches m.keras" in r.stdout
    assert runtime.export_info(path)[1]["source_sha256"] == runtime.file_sha256(path)
    # as a process: the export is current, so nothing is redone (and TensorFlow never loads)
    r = run_script("export_model.py", path, "--variants", "lite")
    assert r.returncode == 0 and r.stdout == f"{path.with_suffix('.tflite')} is up to date\n", r.stderr
    # the default: the float32 export, and the int8 one only where it exists already
    r = script_main("export_model.py", path)
    assert r.returncode == 0 and r.stdout == f"{path.with_suffix('.tflite')} is up to date\n", r.stderr
    assert not runtime.exported_path(path, "lite-int8").exists()
    r = script_main("export_model.py", path, "--variants", "lite-int8")
    assert r.returncode == 0 and r.stdout.startswith(f"wrote {path.with_suffix('.int8.tflite')}"), r.stderr
    r = script_main("export_model.py", path)
    assert r.returncode == 0 and r.stdout == (f"{path.with_suffix('.tflite')} is up to date\n"
                                              f"{path.with_suffix('.int8.tflite')} is up to date\n"), r.stderr
    r = script_main("export_model.py", tmp_path / "absent.keras")
    assert r.returncode == 2 and r.stderr == f"error: {tmp_path / 'absent.keras'}: no trained model (with its " \
        ".json sidecar) there\n"
