"""The Python API (speechsr.upsample / upsample_file / load_model) and the `speechsr` command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import speechsr
from conftest import PROJECT_ROOT, speech_like
from speechsr import api, cli, settings


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """The session's tiny model on disk and upsampling settings with short windows and blocks."""
    up = settings.apply_overrides(settings.load("upsampling"), {
        "window_seconds": 0.512, "overlap_seconds": 0.128, "batch_size": 3, "block_seconds": 0.3})
    return tiny_model.path, up


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


def test_fast_name_loads_the_shipped_fast_model():
    fast = speechsr.load_model("fast")
    assert fast.path == PROJECT_ROOT / "models" / "pretrained-fast" / "model.keras"
    assert (fast.input_rate, fast.output_rate) == (4000, 16000)
    x = np.sin(np.arange(4000) * 0.3).astype(np.float32) * 0.1
    y, rate = speechsr.upsample(x, 4000, model="fast")
    assert rate == 16000 and y.size == 4 * x.size and np.all(np.isfinite(y))


def test_import_is_light_and_the_command_runs_as_a_process():
    code = ("import sys, speechsr; speechsr.__dir__(); "
            "assert not {'tensorflow', 'keras', 'numpy'} & set(sys.modules), sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "speechsr", "nonsense"], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown command 'nonsense'")


def speechsr_command(capsys, *argv) -> tuple[int, str, str]:
    """``speechsr ARGV...`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse: --help, usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_dispatches_to_the_scripts(capsys):
    code, out, _ = speechsr_command(capsys, "--version")
    assert code == 0 and out.startswith(f"speechsr {speechsr.__version__}\nmodel: pretrained ")
    assert "\nruntime: LiteRT (model.int8.tflite, exported from this model)\n" in out  # auto's first choice
    code, out, _ = speechsr_command(capsys, "upsample", "--help")
    assert code == 0 and out.startswith("usage: speechsr upsample [-h] [-o OUTPUT]")
    code, _, err = speechsr_command(capsys, "split", "--by", "nonsense")
    assert code == 2 and "speechsr split: error: argument --by" in err
    code, _, err = speechsr_command(capsys, "nonsense")
    assert code == 2 and err.startswith("error: unknown command 'nonsense'")


def test_ambiguous_arrays_bad_rates_and_bad_models_are_value_errors(tiny):
    model = speechsr.load_model(tiny[0], tiny[1])
    x = speech_like(0.5, 4000)
    with pytest.raises(ValueError, match=r"shape \(6, 2000\) .* looks like \[channels, time\]"):
        model.upsample(np.tile(x, (6, 1)), 4000)  # [channels, time]: was taken as 2000 channels of 6 samples
    assert model.upsample(np.tile(x, (6, 1)).T, 4000)[0].size == 4 * x.size  # [time, channels] is fine
    with pytest.raises(ValueError, match="int64 samples have no PCM scale"):
        model.upsample(np.round(x * 32767).astype(np.int64), 4000)  # was scaled by 2^63: near-silence
    for rate in ("abc", None, float("nan"), float("inf"), "4000", True, 4000.5, -4000):
        for call in (lambda r: model.upsample(x, r), lambda r: speechsr.upsample(x, r, model=model),
                     lambda r: speechsr.upsample(x, r)):
            with pytest.raises(ValueError, match="rate must be a positive integer in Hz"):
                call(rate)
    assert model.upsample(x, 4000.0)[0].size == 4 * x.size
    for bad in (None, 3):
        with pytest.raises(ValueError, match="model must be 'pretrained'"):
            speechsr.load_model(bad)
        with pytest.raises(ValueError, match="model must be 'pretrained'"):
            speechsr.upsample(x, 4000, model=bad)


def test_huge_samples_keep_their_level(tmp_path, script_main):
    """Samples far beyond full scale (a FLOAT WAV at 5e36) run at unit peak and are scaled back:
    the output is finite and at the input's level, by the API and the command (the spectral
    default's STFT power and the U-Net's activations overflowed float32 there before)."""
    loud = (speech_like(0.5, 4000) * 5e36).astype(np.float32)
    for name in ("pretrained", "fast"):
        y, _ = speechsr.load_model(name).upsample(loud, 4000)
        assert np.isfinite(y).all() and 0.5 < np.abs(y).max() / np.abs(loud).max() < 2.0, name
    sf.write(tmp_path / "loud.wav", loud, 4000, subtype="FLOAT")
    r = script_main("upsample_audio_file.py", tmp_path / "loud.wav", "--model", "fast",
                    "-o", tmp_path / "out.wav")
    assert r.returncode == 0, r.stderr
    y, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 16000 and np.isfinite(y).all() and 0.5 < np.abs(y).max() / np.abs(loud).max() < 2.0


def test_non_finite_output_is_one_line_and_writes_nothing(tmp_path, script_main, monkeypatch):
    """Output that is still not finite (scaled back beyond float32) is refused: one line naming the
    file and the input's peak, nothing written, never NaN; the API raises NonFiniteOutput."""
    from speechsr import inference
    real_run = inference.Upsampler._run
    monkeypatch.setattr(inference.Upsampler, "_run", lambda self, w: real_run(self, w) * np.inf)
    x = speech_like(0.5, 4000)
    with pytest.raises(inference.NonFiniteOutput, match=r"^the model's output is not finite \(input peak 0\.595\)$"):
        speechsr.load_model("fast").upsample(x, 4000)
    sf.write(tmp_path / "in.wav", x, 4000, subtype="FLOAT")
    r = script_main("upsample_audio_file.py", tmp_path / "in.wav", "--model", "fast")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'in.wav'}: the model's output is not finite (input peak "), last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # nothing written


def test_array_output_is_filled_in_place_not_joined(tiny):
    import tracemalloc
    model = speechsr.load_model(tiny[0], tiny[1])
    x = speech_like(30.0, 4000)
    model.upsample(x[:4000], 4000)  # traced once
    tracemalloc.start()
    try:
        y, _ = model.upsample(x, 4000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert y.size == 4 * x.size
    assert peak < 1.3 * y.nbytes, peak / y.nbytes  # was 2x: the blocks, then their concatenation
