"""Install it like a tool: the wheel carries package, scripts, settings and shipped models; installed
into a fresh venv outside the repository (no network), `speechsr upsample` and the Python API give
the repository script's samples."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import PROJECT_ROOT
from speechsr import audio
from speechsr.cli import model_card_version

pytestmark = pytest.mark.slow

MODELS = PROJECT_ROOT / "models" / "pretrained"
TELEPHONY = PROJECT_ROOT / "models" / "pretrained-telephony"  # in the wheel: speechsr/models/pretrained_telephony
FAST = PROJECT_ROOT / "models" / "pretrained-fast"  # in the wheel: speechsr/models/pretrained_fast
EIGHT_K = PROJECT_ROOT / "models" / "pretrained-8k"  # in the wheel: speechsr/models/pretrained_8k
EXAMPLE = PROJECT_ROOT / "examples" / "arctic_a0007.wav"
#: What the wheel is built from (pyproject.toml maps the top-level folders into the package).
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "src", "settings", "preprocessing", "models/pretrained",
           "models/pretrained-telephony", "models/pretrained-fast", "models/pretrained-8k"]
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.stamp", "*.egg-info", ".*")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (keeps build/ and egg-info out of the clone)."""
    tree = tmp_path_factory.mktemp("source")
    for name in SOURCES + [p.name for p in PROJECT_ROOT.glob("*.py")]:
        src, dst = PROJECT_ROOT / name, tree / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=JUNK)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", str(tree), "-w", str(dist)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = dist.glob("speechsr-*.whl")
    return path


def test_wheel_carries_package_scripts_settings_and_models_within_budget(wheel):
    import speechsr
    assert wheel.name.startswith(f"speechsr-{speechsr.__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as z:
        sizes = {i.filename: i.file_size for i in z.infolist()}
        entry_points = z.read(f"speechsr-{speechsr.__version__}.dist-info/entry_points.txt").decode()
    package = PROJECT_ROOT / "src" / "speechsr"
    expected = [f"speechsr/{p.relative_to(package)}" for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    expected += [f"speechsr/models/pretrained/{p.name}" for p in MODELS.iterdir() if p.is_file()]
    expected += [f"speechsr/models/pretrained_telephony/{p.name}" for p in TELEPHONY.iterdir() if p.is_file()]
    expected += [f"speechsr/models/pretrained_fast/{p.name}" for p in FAST.iterdir() if p.is_file()]
    expected += [f"speechsr/models/pretrained_8k/{p.name}" for p in EIGHT_K.iterdir() if p.is_file()]
    expected += [f"speechsr/default_settings/{p.relative_to(PROJECT_ROOT / 'settings')}"
                 for p in (PROJECT_ROOT / "settings").rglob("*.json")]
    expected += ["speechsr/ops/subpixel_shuffle.cc", "speechsr/_scripts/src/build_ops.sh",
                 "speechsr/_scripts/upsample_audio_file.py", "speechsr/_scripts/batch_upsample.py",
                 "speechsr/_scripts/evaluate.py",
                 "speechsr/_scripts/train.py", "speechsr/_scripts/preprocessing/splice_raw_data.py",
                 "speechsr/_scripts/preprocessing/test_train_split.py"]
    missing = sorted(set(expected) - set(sizes))
    assert not missing, f"not in the wheel (add new subpackages to pyproject.toml's packages): {missing}"
    assert not [n for n in sizes if n.endswith(".so")]  # pure wheel: the op is built where it runs
    assert "speechsr = speechsr.cli:main" in entry_points
    models = sum(p.stat().st_size for d in (MODELS, TELEPHONY, FAST, EIGHT_K) for p in d.iterdir() if p.is_file())
    rest = sum(s for n, s in sizes.items() if not n.startswith(("speechsr/models/pretrained/",
                                                                "speechsr/models/pretrained_telephony/",
                                                                "speechsr/models/pretrained_fast/",
                                                                "speechsr/models/pretrained_8k/")))
    assert rest <= 2**20 and wheel.stat().st_size <= models + 2**20, (rest, wheel.stat().st_size, models)


def test_installed_wheel_command_and_api_equal_repository_script(wheel, tmp_path):
    # a fresh venv outside the repository; dependencies visible from the project's venv via a .pth
    # (appended to sys.path after the venv's own site-packages, its .pth files not run)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python, command = venv / "bin" / "python", venv / "bin" / "speechsr"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    work = tmp_path / "work"  # the installed tool runs here, outside the repository
    work.mkdir()
    x, rate = audio.read_audio(EXAMPLE)
    sf.write(work / "low.wav", audio.sox_downsample(x, rate, 4000), 4000, subtype="PCM_16")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "SPEECHSR_SUBPIXEL")}

    def start(*args):
        return subprocess.Popen([str(a) for a in args], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finish(proc):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        return out

    version = finish(start(command, "--version"))
    card = model_card_version(MODELS / "model.keras")
    assert version.splitlines()[0] == f"speechsr {__import__('speechsr').__version__}"
    assert f"model: pretrained {card} ({site}/speechsr/models/pretrained/model.keras" in version
    assert "tf.reshape path" in version  # no compiled op in the wheel: the reshape path runs

    snippet = (
        "import numpy as np, soundfile as sf, speechsr\n"
        "print(speechsr.__file__)\n"
        "x, rate = sf.read('low.wav', dtype='float32')\n"
        "speechsr.upsample_file('low.wav', 'api.wav')\n"  # the command line's runtime (LiteRT if exported)
        "model = speechsr.load_model('pretrained', runtime='tf')\n"  # TensorFlow, no compiled op here
        "y, out_rate = speechsr.upsample(x, rate, model=model)\n"
        "assert out_rate == 16000 and model.runtime == 'tf'\n"
        "np.save('api_tf.npy', y)\n")
    cli, api = start(command, "upsample", "low.wav", "-o", "cli.wav", "-q"), start(python, "-c", snippet)
    fast = start(command, "upsample", "low.wav", "-o", "fast.wav", "-q", "--model", "fast")  # the packaged fast model

    try:  # meanwhile the repository script, from the clone, in this process (TensorFlow is loaded)
        script = runpy.run_path(str(PROJECT_ROOT / "upsample_audio_file.py"))
        assert script["main"]([str(work / "low.wav"), "-o", str(work / "script.wav"), "-q"]) == 0
        assert script["main"]([str(work / "low.wav"), "-o", str(work / "script_tf.wav"), "-q", "--runtime", "tf"]) == 0
        assert script["main"]([str(work / "low.wav"), "-o", str(work / "script_fast.wav"), "-q", "--model", "fast"]) == 0
        finish(cli)
        finish(fast)
        assert finish(api).strip().startswith(str(venv))  # the installed package ran, not the clone's
    finally:
        for proc in (cli, api, fast):
            if proc.poll() is None:
                proc.kill()
    expected, _ = sf.read(work / "script.wav", dtype="float32")
    assert expected.size == 4 * sf.info(work / "low.wav").frames
    for name in ("cli.wav", "api.wav"):
        got, got_rate = sf.read(work / name, dtype="float32")
        assert got_rate == 16000 and np.array_equal(got, expected), name
    fast_clone, fast_wheel = (sf.read(work / n, dtype="float32")[0] for n in ("script_fast.wav", "fast.wav"))
    assert np.array_equal(fast_wheel, fast_clone) and not np.array_equal(fast_wheel, expected)
    # the array through TensorFlow (reshape shuffle, no op built) = the script's TensorFlow run (op)
    y = np.load(work / "api_tf.npy")
    sf.write(work / "api_tf.wav", np.clip(y, -1, 1), 16000, subtype="PCM_16")  # as the script writes
    assert np.array_equal(sf.read(work / "api_tf.wav", dtype="float32")[0],
                          sf.read(work / "script_tf.wav", dtype="float32")[0])
