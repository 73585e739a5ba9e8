"""Faults (issue 12): every script fails loudly on one line, loses nothing, leaves nothing behind.

Full-disk cases mount a small tmpfs (needs root; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import perturbed_model, run_script, speech_like
from speechsr import audio, settings, splicing
from speechsr.splicing import read_manifest, splice_corpus

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def data_settings(base: Path, out: Path, **overrides) -> settings.DataSettings:
    raw = {"input_dir_name_base": str(base), "input_dir_name_dirs": [], "input_data_suffix": [".wav"],
           "output_dir": str(out), "start_time": 0.0, "end_time": 0.0, "splice_duration": 1.0,
           "last_clip": "drop", "sampling_rate": SR, "downsample_rate": 4000, "clip_subtype": "PCM_16",
           "test_fraction": 0.0, "validation_fraction": 0.0, "split_by": "recording", "split_seed": 7}
    raw.update(overrides)
    return settings.validate("data", raw, "test settings")


def settings_dir(tmp_path: Path, data: settings.DataSettings) -> Path:
    d = tmp_path / "settings"
    d.mkdir(exist_ok=True)
    (d / "data_settings.json").write_text(json.dumps(settings.to_json(data)))
    return d


@pytest.fixture()
def small_disk(tmp_path):
    """``mount(kib)`` -> a fresh tmpfs of that size under tmp_path; unmounted afterwards."""
    mounted = []

    def mount(kib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def resize(point: Path, kib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={kib}k", str(point)], check=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six 2-s speech-like recordings at 16 kHz (PCM_16)."""
    base = tmp_path_factory.mktemp("faults") / "corpus"
    base.mkdir()
    for i in range(6):
        sf.write(base / f"r{i}.wav", speech_like(2.0, seed=40 + i), SR, subtype="PCM_16")
    return base


# ------------------------------------------------------------------ 1. full disk while splicing


def test_full_disk_while_splicing_stops_keeps_complete_work_and_resumes(corpus, tmp_path, small_disk,
                                                                          script_main):
    disk = small_disk(160)  # one recording's clips are about 80 KB: a few fit, six do not
    out = disk / "out"
    cfg = settings_dir(tmp_path, data_settings(corpus, out))
    r = script_main("preprocessing/splice_raw_data.py", "--settings", cfg, "--jobs", "1", "--no-progress")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "no space left on device" in r.stderr and str(out) in r.stderr
    recs = [p for p in (out / "clips").iterdir()]
    assert not [p for p in recs if p.name.startswith(".")]  # no half-written recording
    complete = [p for p in recs if read_manifest(p) is not None]
    assert complete and len(complete) == len(recs) < 6  # what is there is complete
    resize(disk, 4096)  # space freed: the rerun resumes
    r = script_main("preprocessing/splice_raw_data.py", "--settings", cfg, "--jobs", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{6 - len(complete)} processed, {len(complete)} reused, 0 skipped" in r.stdout


# ------------------------------------------------------------------ 2. narrowband sources


def test_narrowband_sources_are_skipped_unless_allowed(tmp_path):
    base = tmp_path / "corpus"
    base.mkdir()
    x = speech_like(2.0, seed=3)
    sf.write(base / "wide.wav", x, SR, subtype="PCM_16")
    x8 = audio.resample(x, SR, 8000)
    sf.write(base / "phone8k.wav", x8, 8000, subtype="PCM_16")
    sf.write(base / "phone_as_16k.wav", audio.resample(x8, 8000, SR), SR, subtype="PCM_16")
    sf.write(base / "four_k.wav", audio.resample(x, SR, 4000), 4000, subtype="PCM_16")
    s = splice_corpus(data_settings(base, tmp_path / "out"), jobs=1, progress=False)
    reasons = {sk["recording_id"]: sk["reason"] for sk in s.skipped}
    assert set(reasons) == {"phone8k", "phone_as_16k", "four_k"} and s.processed == 1
    assert "sampled at 8000 Hz" in reasons["phone8k"] and "sampled at 4000 Hz" in reasons["four_k"]
    assert "energy above 4 kHz" in reasons["phone_as_16k"] and "allow_narrowband" in reasons["phone_as_16k"]
    info = json.loads((tmp_path / "out" / "data_info.json").read_text())
    assert {sk["recording_id"] for sk in info["skipped"]} == set(reasons)
    s = splice_corpus(data_settings(base, tmp_path / "out", allow_narrowband=True), jobs=1, progress=False)
    assert not s.skipped and s.processed == 3 and s.reused == 1


def test_high_band_measure_tells_speech_from_phone_audio():
    x = speech_like(3.0, seed=5)
    assert splicing.high_band_db(x, SR) > -40
    assert splicing.high_band_db(audio.resample(audio.resample(x, SR, 8000), 8000, SR), SR) < -60
    assert splicing.high_band_db(np.zeros(SR, np.float32), SR) == float("-inf")


# ------------------------------------------------------------------ 3. workers die with the parent


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or
                    __import__("multiprocessing").get_start_method() != "fork",
                    reason="needs /proc and fork-inherited patching")
def test_kill_9_of_splice_script_takes_its_workers_along(corpus, tmp_path):
    cfg = settings_dir(tmp_path, data_settings(corpus, tmp_path / "out"))
    driver = ("import runpy, sys, time\n"
              "from speechsr import splicing\n"
              "real = splicing._splice\n"
              "def slow(*a, **k):\n"
              "    time.sleep(60)  # a long recording: the worker is busy when its parent dies\n"
              "    return real(*a, **k)\n"
              "splicing._splice = slow\n"
              f"sys.argv = ['splice_raw_data.py', '--settings', {str(cfg)!r}, '--jobs', '2', '--no-progress']\n"
              f"runpy.run_path({str(ROOT / 'preprocessing' / 'splice_raw_data.py')!r}, run_name='__main__')\n")
    parent = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(_children(parent.pid)) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
        workers = _children(parent.pid)
        assert len(workers) >= 2, parent.stderr.read() if parent.poll() is not None else "no workers"
        time.sleep(0.5)  # workers initialised and busy
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "orphaned workers outlived the killed parent"
    finally:  # never leave processes behind, even when the test fails
        for w in set(workers + _children(parent.pid)):
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
    # the rerun cleans what the killed run left and completes
    r = run_script("preprocessing/splice_raw_data.py", "--settings", cfg, "--no-progress")
    assert r.returncode == 0 and "6 processed" in r.stdout, r.stderr
    assert not [p for p in (tmp_path / "out" / "clips").iterdir() if p.name.startswith(".")]


def _descendants(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        out += [child, *_descendants(child)]
    return out


def _kill_all(pids) -> None:
    for p in pids:
        if _alive(p):
            os.kill(p, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or
                    __import__("multiprocessing").get_start_method() != "fork",
                    reason="needs /proc and fork-inherited patching")
@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_interrupted_splice_stops_at_once_keeping_complete_recordings(corpus, tmp_path, how):
    cfg = settings_dir(tmp_path, data_settings(corpus, tmp_path / "out"))
    driver = ("import runpy, sys, time\n"
              "from speechsr import splicing\n"
              "real = splicing._writing\n"
              "def slow(target, write):  # every recording but r0 takes 20 s: queued work when interrupted\n"
              "    real(target, write)\n"
              "    if target.suffix == '.wav' and not target.name.startswith('r0_'):\n"
              "        time.sleep(5)\n"
              "splicing._writing = slow\n"
              f"sys.argv = ['splice_raw_data.py', '--settings', {str(cfg)!r}, '--jobs', '2', '--no-progress']\n"
              f"runpy.run_path({str(ROOT / 'preprocessing' / 'splice_raw_data.py')!r}, run_name='__main__')\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    clips = tmp_path / "out" / "clips"
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while read_manifest(clips / "r0") is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        workers = _descendants(proc.pid)
        assert read_manifest(clips / "r0") is not None and workers, proc.communicate()[1][-2000:]
        time.sleep(0.5)  # the next recordings are being written
        assert [p.name for p in clips.iterdir() if p.name.startswith(".")]  # half-written, in .partial folders
        stopped = time.monotonic()
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:  # the terminal sends Ctrl-C's SIGINT to the whole process group
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - stopped
        assert proc.returncode == 130 and took < 5, (took, err[-2000:])
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted: rerun")
        assert sorted(p.name for p in clips.iterdir()) == ["r0"]  # nothing spliced after the interrupt
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)]
    finally:
        _kill_all(workers + _descendants(proc.pid))
        if proc.poll() is None:
            proc.kill()


def _spawned(pid: int) -> list[int]:
    """Descendants of ``pid`` started by multiprocessing's spawn (pool workers)."""
    def cmdline(p):
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            return b""
    return [p for p in _descendants(pid) if b"spawn_main" in cmdline(p)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_evaluate_workers_die_with_it_and_sigterm_stops_it_at_once(tiny_model, tmp_path, how):
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(3):  # 20 s each: a worker scores one for 10 s or more
        sf.write(refs / f"f{i}.wav", speech_like(20.0, seed=i), SR, subtype="PCM_16")
    out = tmp_path / "res" / "tiny"
    proc = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), "--input", str(refs), "--model",
                             str(tiny_model.path), "--runtime", "tf", "-o", str(out), "--jobs", "2", "--listen",
                             "0", "-q"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    left: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(_spawned(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(_spawned(proc.pid)) == 2, proc.communicate()[1][-2000:] if proc.poll() is not None else "none"
        time.sleep(2)  # the workers are scoring
        left = _descendants(proc.pid)  # the workers and multiprocessing's resource tracker
        stopped = time.monotonic()
        proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=60)
        if how == "SIGTERM":
            took = time.monotonic() - stopped
            assert proc.returncode == 130 and took < 5, (took, err[-2000:])
            assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
            assert not (tmp_path / "res").exists()  # no results: no empty output folder either
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in left if _alive(p)], "processes outlived evaluate.py"
    finally:
        _kill_all(left + _descendants(proc.pid))
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------ 4. bad train CSVs; 10. --resume


def _training(tiny_settings_dir: Path, **changes):
    ms = settings.load("model", tiny_settings_dir)
    ts = settings.apply_overrides(settings.load("training", tiny_settings_dir), changes)
    return ms, ts


def _swapped(line: str) -> str:
    rec, hr, lr, duration = line.split(",")
    return ",".join([rec, lr, hr, duration])


@pytest.mark.parametrize("fault", ["missing clip", "empty", "header only", "fewer clips than a batch",
                                   "swapped columns", "negative duration"])
def test_bad_train_csv_fails_before_the_run_folder_exists(tiny_settings_dir, clip_corpus, tmp_path, fault):
    from speechsr.training import TrainingError, prepare
    good = clip_corpus["train"].read_text().splitlines()
    bad = tmp_path / "bad" / "train.csv"
    bad.parent.mkdir()
    text = {"missing clip": "\n".join(good[:2] + [good[2].replace(".hr.wav", "_gone.hr.wav")]) + "\n",
            "empty": "", "header only": good[0] + "\n",
            "fewer clips than a batch": "\n".join(good[:2]) + "\n",
            "swapped columns": "\n".join(good[:1] + [_swapped(line) for line in good[1:]]) + "\n",
            "negative duration": "\n".join(good[:3] + [good[3].rsplit(",", 1)[0] + ",-0.5"] + good[4:]) + "\n",
            }[fault]
    bad.write_text(text.replace("clips/", str(clip_corpus["train"].parent / "clips") + "/"))
    ms, ts = _training(tiny_settings_dir, train_csv=str(bad))
    with pytest.raises(TrainingError) as e:
        prepare(ms, ts)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    if fault == "swapped columns":
        assert "high_res clip" in str(e.value) and "sampled at 4000 Hz, the model's output rate is 16000" in str(e.value)
    if fault == "negative duration":
        assert f"{bad}:4: duration_s must be a positive number" in str(e.value)
    assert not (tmp_path / "models" / "tiny").exists()  # so a retry with a fixed CSV just works


def test_train_script_bad_csv_is_one_line_and_leaves_no_run_folder(tiny_settings_dir, clip_corpus, tmp_path,
                                                                     script_main):
    bad = tmp_path / "header_only.csv"
    bad.write_text(clip_corpus["train"].read_text().splitlines()[0] + "\n")
    r = script_main("train.py", "--settings", tiny_settings_dir, "--train-csv", bad, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "lists no clips" in r.stderr
    assert not (tmp_path / "models" / "tiny").exists()


def test_train_script_swapped_csv_columns_are_one_line_and_leave_no_run_folder(tiny_settings_dir, clip_corpus,
                                                                                tmp_path, script_main):
    lines = clip_corpus["train"].read_text().splitlines()
    swapped = tmp_path / "swapped.csv"
    folder = str(clip_corpus["train"].parent / "clips") + "/"
    swapped.write_text("\n".join(lines[:1] + [_swapped(line) for line in lines[1:]]).replace("clips/", folder) + "\n")
    r = script_main("train.py", "--settings", tiny_settings_dir, "--train-csv", swapped, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: train_csv: {swapped}: high_res clip") and "columns swapped" in last
    assert not (tmp_path / "models" / "tiny").exists()


def test_resume_with_changed_hyperparameters_is_refused(tiny_settings_dir, tmp_path):
    from speechsr.training import TrainingError, prepare
    ms, ts = _training(tiny_settings_dir)
    run = tmp_path / "models" / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    (run / "settings").mkdir()
    (run / "settings" / "model_settings.json").write_text(json.dumps(settings.to_json(ms)))
    saved = {**settings.to_json(ts), "learning_rate": ts.learning_rate / 10}
    (run / "settings" / "training_settings.json").write_text(json.dumps(saved))
    with pytest.raises(TrainingError, match="learning_rate") as e:
        prepare(ms, ts, resume=True)
    assert "--settings" in str(e.value)
    assert json.loads((run / "settings" / "training_settings.json").read_text()) == saved  # not overwritten


# ------------------------------------------------------------------ upsampling: the tiny model (conftest)


def low_res_file(path: Path, seconds: float, seed: int = 0) -> Path:
    x = audio.sox_downsample(speech_like(seconds, seed=seed), SR, 4000)
    sf.write(path, x, 4000, subtype="PCM_16")
    return path


UPSAMPLE = "upsample_audio_file.py"


# ------------------------------------------------------------------ 6. full disk while upsampling


def test_full_disk_while_upsampling_a_folder_reports_each_file_and_goes_on(tiny_model, tmp_path, small_disk,
                                                                            script_main):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        low_res_file(inputs / f"f{i}.wav", 1.0, seed=i)  # 32 KB of 16 kHz PCM_16 output each
    disk = small_disk(48)
    r = script_main(UPSAMPLE, inputs, "-o", disk, "--model", tiny_model.path, "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and "2 of 3 files failed" in errors[-1]  # one line per file, and a total
    for line, name in zip(errors, ("f1_upsampled.wav", "f2_upsampled.wav")):
        assert str(disk / name) in line and "no space left on device" in line
    assert sorted(p.name for p in disk.iterdir()) == ["f0_upsampled.wav"]  # complete, no .part left
    assert sf.info(disk / "f0_upsampled.wav").frames == 16000


# ------------------------------------------------------------------ 7. broken model files


@pytest.mark.parametrize("fault", ["empty sidecar object", "invalid sidecar JSON", "truncated .keras"])
def test_broken_model_files_are_named_with_the_cause(tiny_model, tmp_path, fault):
    from speechsr import model_io
    src = tiny_model.path
    path = tmp_path / "m.keras"
    data = src.read_bytes()
    path.write_bytes(data[:len(data) // 2] if fault == "truncated .keras" else data)
    side = {"empty sidecar object": "{}", "invalid sidecar JSON": '{"model_settings": ',
            "truncated .keras": src.with_suffix(".json").read_text()}[fault]
    path.with_suffix(".json").write_text(side)
    with pytest.raises(ValueError) as e:
        model_io.load_model(path)
    msg = str(e.value)
    named = path if fault == "truncated .keras" else path.with_suffix(".json")
    assert msg.startswith(f"{named}: ") and "\n" not in msg
    assert {"empty sidecar object": "no 'model_settings'", "invalid sidecar JSON": "not valid JSON",
            "truncated .keras": "truncated or corrupt"}[fault] in msg
    assert "File not found" not in msg


# ------------------------------------------------------------------ 8. window bound; 10. output checks


@pytest.mark.parametrize("flags, expected", [
    (["--window-seconds", "1e9"], "window_seconds 1e+09 is too long"),
    (["-o", "out.mp3"], "out.mp3: cannot write '.mp3' files"),
    (["--plot", "call.wav/fig.png"], "call.wav/fig.png: cannot write the figure"),  # a file, not a folder
])
def test_upsample_refuses_impossible_requests_before_any_work(tmp_path, flags, expected, script_main):
    src = low_res_file(tmp_path / "call.wav", 0.5)
    r = script_main(UPSAMPLE, src, "--model", tmp_path / "absent.keras", *flags, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and expected in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call.wav"]  # nothing written


def test_upsampling_settings_bound_the_window():
    up = settings.load("upsampling", ROOT / "settings")
    with pytest.raises(settings.SettingsError, match="window_seconds 1e\\+09 is too long"):
        settings.apply_overrides(up, {"window_seconds": 1e9})
    with pytest.raises(settings.SettingsError, match="too much audio"):
        settings.apply_overrides(up, {"window_seconds": 60.0, "batch_size": 100})


# ------------------------------------------------------------------ 9. NaN input, leaking warnings


def test_nan_input_is_named_and_short_reference_warns_once_without_library_warnings(tiny_model, tmp_path, caplog):
    import warnings
    from speechsr.evaluation import reference_mode
    from speechsr.files import upsample_file
    from speechsr.loading import load_upsampler
    up = settings.load("upsampling")
    upsampler = load_upsampler(tiny_model.path, up)
    x = np.full(4000, 0.1, np.float32)
    x[1234] = np.nan
    bad = tmp_path / "nan.wav"
    sf.write(bad, x, 4000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=f"^{bad}: contains NaN or infinite samples$"):
        upsample_file(bad, tmp_path / "out.wav", upsampler)
    assert not list(tmp_path.glob("*out*"))
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(400, np.float32), SR, subtype="PCM_16")  # silent and shorter than an FFT
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy/scipy/librosa warning would leak to the terminal
        res = reference_mode(short, upsampler)
    assert set(res["metrics"]) == {"model", "sinc", "spline"}
    assert "shorter than one 2048-sample LSD frame" in caplog.text


# ------------------------------------------------------------------ 10. interruptions, stale temporaries


@pytest.mark.slow
def test_sigterm_while_upsampling_is_one_line_and_leaves_nothing(tiny_model, tmp_path):
    src = low_res_file(tmp_path / "long.wav", 1.0)
    x, _ = sf.read(src, dtype="float32")
    sf.write(src, np.tile(x, 900), 4000, subtype="PCM_16")  # 15 minutes
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / UPSAMPLE), str(src), "-o", str(out / "long.wav"),
                             "--model", str(tiny_model.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(".long.*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert not list(out.iterdir())


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = audio._host()
    stale = tmp_path / f".song.{host}-pid{dead.pid}.k3j9.part.wav"
    stale.write_bytes(b"half a file")
    running = tmp_path / f".other.{host}-pid{os.getpid()}.x1.part.wav"  # a live writer's: kept
    running.write_bytes(b"in progress")
    remote = tmp_path / f".song.{host}x-pid{dead.pid}.k3j9.part.wav"  # another machine's: kept
    remote.write_bytes(b"in progress elsewhere")
    audio.write_audio(tmp_path / "song.wav", np.zeros(100, np.float32), SR)
    assert not stale.exists() and running.exists() and remote.exists() and (tmp_path / "song.wav").is_file()


def test_truncated_wav_is_read_with_a_warning(tmp_path, caplog):
    full = tmp_path / "full.wav"
    sf.write(full, speech_like(3.0, seed=9), SR, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "corpus" / "cut.wav"
    cut.parent.mkdir()
    cut.write_bytes(data[:len(data) // 2])
    x, _ = audio.read_audio(cut)
    assert abs(len(x) - 1.5 * SR) < 100 and "cut.wav: truncated" in caplog.text
    s = splice_corpus(data_settings(cut.parent, tmp_path / "out"), jobs=1, progress=False)
    assert s.processed == 1 and "truncated" in s.warnings[0]["warning"]
    info = json.loads((tmp_path / "out" / "data_info.json").read_text())
    assert info["warnings"][0]["recording_id"] == "cut"


def test_unreadable_file_says_permission_denied(tmp_path):
    if os.geteuid() != 0:
        f = tmp_path / "locked.wav"
        sf.write(f, np.zeros(100, np.float32), SR)
        f.chmod(0)
        with pytest.raises(audio.AudioError) as e:
            audio.audio_info(f)
        assert str(e.value) == f"{f}: cannot open (permission denied)"
        return
    # root reads anything: check in a forked child that has become an ordinary user, on a file
    # in a folder it can search (pytest's tmp_path lies in a folder private to root)
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        f = Path(folder) / "locked.wav"
        sf.write(f, np.zeros(100, np.float32), SR)
        f.chmod(0)
        msg = _audio_info_as_nobody(f)
    assert msg == f"{f}: cannot open (permission denied)"


def _audio_info_as_nobody(f: Path) -> str:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on
        try:
            os.setuid(65534)
            audio.audio_info(f)
            os.write(write, b"read it")
        except BaseException as e:  # noqa: BLE001
            os.write(write, str(e).encode())
        finally:
            os._exit(0)
    os.close(write)
    msg = os.read(read, 4096).decode()
    os.waitpid(pid, 0)
    os.close(read)
    return msg


def test_evaluation_mean_uses_the_same_rows_for_snr_and_lsd():
    from speechsr import evaluation

    def row(name, snr, lsd):
        r = {"file": name, "duration_s": 1.0, "model_seconds": 0.1}
        for m in evaluation.METHODS:
            r.update({f"{m}_{k}": 0.5 for k in evaluation.SPECTRAL}, **{f"{m}_snr": snr, f"{m}_lsd": lsd})
        return r

    s = evaluation.summary([row("a", 10.0, 1.0), row("b", float("inf"), 3.0), row("c", 20.0, float("nan"))])
    assert s["model_snr"] == 10.0 and s["model_lsd"] == 1.0  # rows b and c left out of both
    assert s["model_snr_missing"] == 2 and s["model_lsd_missing"] == 2


# ------------------------------------------------------------------ 5. one path rule for every script


def test_evaluate_resolves_the_settings_test_csv_against_the_project_root(tmp_path, script_main):
    cfg = tmp_path / "settings"
    cfg.mkdir()
    for name in ("model", "upsampling", "training"):
        (cfg / f"{name}_settings.json").write_text((ROOT / "settings" / f"{name}_settings.json").read_text())
    raw = json.loads((ROOT / "settings" / "data_settings.json").read_text())
    raw["output_dir"] = "data/no-such-split-for-this-test"
    (cfg / "data_settings.json").write_text(json.dumps(raw))
    r = script_main("evaluate.py", "--settings", cfg, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{ROOT / 'data' / 'no-such-split-for-this-test' / 'test.csv'}: test CSV not found" in r.stderr


@pytest.mark.slow
def test_ctrl_c_in_training_is_one_line_and_resumable(tiny_settings_dir, tmp_path):
    run = tmp_path / "models" / "tiny"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--settings", str(tiny_settings_dir),
                             "--epochs", "100000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "checkpoint").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted: add --resume")
    assert not list(run.rglob("*.part*"))


def test_an_error_raised_after_sigterm_counts_as_the_interruption(monkeypatch):
    from speechsr import cli
    from speechsr import signals
    monkeypatch.setattr(signals, "_requested", False)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # the handler silences these
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    assert cli.interrupted(KeyboardInterrupt()) and not cli.interrupted(TypeError("x"))
    signals.check()  # no stop requested: nothing happens
    with pytest.raises(KeyboardInterrupt):
        signals._handler(signal.SIGTERM, None)
    assert cli.interrupted(TypeError("raised by a C extension while the handler ran"))
    with pytest.raises(KeyboardInterrupt):  # swallowed once (inside TensorFlow), raised again at a safe point
        signals.check()


def test_shared_cli_checks_are_one_line_errors(tmp_path):
    from speechsr import cli
    from speechsr.audio import AudioError
    cli.check_minimum("--jobs", None, 1)  # not given: fine
    with pytest.raises(ValueError, match=r"^--jobs must be >= 1, got 0$"):
        cli.check_minimum("--jobs", 0, 1)
    cli.check_output_folder(tmp_path / "new" / "deep")
    assert (tmp_path / "new" / "deep").is_dir()  # made before any work
    (tmp_path / "file").write_text("x")
    with pytest.raises(AudioError, match=r"file/sub: cannot create output folder") as e:
        cli.check_output_folder(tmp_path / "file" / "sub")
    assert "\n" not in str(e.value)
    with pytest.raises(AudioError, match="file not found"):
        cli.check_readable([tmp_path / "absent.wav"])
    (tmp_path / "m.keras").write_bytes(b"")
    with pytest.raises(ValueError, match=r"m.keras: no trained model \(with its .json sidecar\) there"):
        cli.check_model_files([tmp_path / "m.keras"])


def test_a_model_and_its_sidecar_are_replaced_together_or_not_at_all(tiny_model, tmp_path, monkeypatch):
    import errno
    from speechsr import model_io
    path = tmp_path / "m.keras"
    model_io.save_model(tiny_model.model, path, tiny_model.settings, {"epoch": 1})
    before = path.read_bytes(), path.with_suffix(".json").read_text()

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", full_disk)
    other = perturbed_model(tiny_model.settings, seed=9)  # other weights: other bytes
    with pytest.raises(OSError, match="No space"):
        model_io.save_model(other, path, tiny_model.settings, {"epoch": 2})
    monkeypatch.undo()
    assert (path.read_bytes(), path.with_suffix(".json").read_text()) == before  # the old pair, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.keras"]  # no temporaries left


# ------------------------------------------------------------------ issue 27: settings files and values


def _settings_copy(tmp_path: Path, **data_changes) -> Path:
    """A copy of the default settings folder, data settings pointed at tmp_path."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for kind, name in settings.SETTINGS_FILES.items():
        (cfg / name).write_text((ROOT / "settings" / name).read_text())
    raw = json.loads((cfg / "data_settings.json").read_text())
    raw.update(input_dir_name_base=str(tmp_path / "corpus"), output_dir=str(tmp_path / "out"), **data_changes)
    (cfg / "data_settings.json").write_text(json.dumps(raw))
    return cfg


@pytest.mark.parametrize("script, args, expected", [
    (UPSAMPLE, ["--set", "block_seconds=Infinity"], "'block_seconds' must be a finite number"),
    ("preprocessing/splice_raw_data.py", ["--splice-duration", "inf"], "'splice_duration' must be a finite"),
    ("preprocessing/splice_raw_data.py", ["--start-time", "inf"], "'start_time' must be a finite number"),
    ("preprocessing/splice_raw_data.py", ["--end-time", "nan"], "'end_time' must be a finite number (below 2**63 in size), got NaN"),
    ("preprocessing/splice_raw_data.py", ["--set", "splice_duration=1e999"], "'splice_duration' must be a finite"),
])
def test_non_finite_numbers_are_refused_at_load(tmp_path, script, args, expected, script_main):
    cfg = _settings_copy(tmp_path)
    inputs = [low_res_file(tmp_path / "call.wav", 0.5)] if script == UPSAMPLE else []
    r = script_main(script, *inputs, "--settings", cfg, *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and expected in r.stderr


def test_non_finite_number_in_a_settings_file_is_named(tmp_path):
    cfg = _settings_copy(tmp_path)
    path = cfg / "upsampling_settings.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(raw).replace(f'"block_seconds": {json.dumps(raw["block_seconds"])}',
                                            '"block_seconds": 1e999'))  # json reads 1e999 as inf
    with pytest.raises(settings.SettingsError, match=f"^{path}: key 'block_seconds' must be a finite number"):
        settings.load("upsampling", cfg)


@pytest.mark.parametrize("fault, cause", [("invalid UTF-8", "not valid UTF-8 (byte 0xff"),
                                          ("nested 100,000 deep", "not valid JSON (nested too deeply)")])
@pytest.mark.parametrize("script", ["train.py", UPSAMPLE, "evaluate.py", "preprocessing/splice_raw_data.py",
                                    "preprocessing/test_train_split.py"])
def test_unreadable_settings_file_is_one_line_naming_it(tmp_path, script, fault, cause, script_main):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for name in settings.SETTINGS_FILES.values():
        (cfg / name).write_bytes(b'{"model": "\xff"}' if fault == "invalid UTF-8" else b"[" * 100_000)
    inputs = [low_res_file(tmp_path / "call.wav", 0.5)] if script == UPSAMPLE else []
    r = script_main(script, *inputs, "--settings", cfg, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith(f"error: {cfg}/") and f"_settings.json: {cause}" in r.stderr


# ------------------------------------------------------------------ issue 27: memory, exit codes, leftovers


def test_one_model_call_is_bounded_and_out_of_memory_is_never_a_blank_error(capsys):
    from speechsr import cli
    up = settings.load("upsampling", ROOT / "settings")
    settings.apply_overrides(up, {"window_seconds": 600.0, "batch_size": 1})  # one long window: fine
    with pytest.raises(settings.SettingsError, match="600 x batch_size 6 is too much audio"):
        settings.apply_overrides(up, {"window_seconds": 600.0, "batch_size": 6})  # reached 8.7 GB
    assert cli.failure_exit_code(MemoryError(), (ValueError,), "interrupted") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory: lower window_seconds or batch_size") and err.count("\n") == 1
    assert cli.failure_exit_code(ValueError(""), (ValueError,), "interrupted") == 2
    assert capsys.readouterr().err == "error: ValueError\n"


def test_build_op_without_a_compiler_exits_2(tmp_path, monkeypatch, capfd):
    from speechsr import cli
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "subpixel_shuffle.cc").write_text("// the op's source\n")
    monkeypatch.setattr(settings, "PACKAGE_DIR", tmp_path)  # a package whose op is not built yet
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    assert cli.main(["build-op"]) == 2
    assert "compiler not found" in capfd.readouterr().err
    assert sorted(p.name for p in (tmp_path / "ops").iterdir()) == ["subpixel_shuffle.cc"]


def test_evaluate_with_a_broken_model_leaves_no_output_folder(tiny_model, tmp_path, script_main):
    bad = tmp_path / "bad.keras"
    data = tiny_model.path.read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    bad.with_suffix(".json").write_text(tiny_model.path.with_suffix(".json").read_text())
    ref = tmp_path / "ref.wav"
    sf.write(ref, speech_like(0.5), SR, subtype="PCM_16")
    r = script_main("evaluate.py", "--input", ref, "--model", bad, "--runtime", "tf", "-o", tmp_path / "res" / "bad",
                    "--no-perceptual", "--listen", "0", "-q", cwd=tmp_path)
    assert r.returncode == 2 and "truncated or corrupt" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "res").exists()  # neither the output folder nor the parent it made


def test_splice_with_every_input_skipped_says_so_and_exits_2(tmp_path, script_main):
    base = tmp_path / "corpus"
    base.mkdir()
    for i in range(2):
        sf.write(base / f"short{i}.wav", speech_like(0.5, seed=i), SR, subtype="PCM_16")  # under one clip
    cfg = settings_dir(tmp_path, data_settings(base, tmp_path / "out"))
    r = script_main("preprocessing/splice_raw_data.py", "--settings", cfg, "--jobs", "1", "--no-progress")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "2 skipped" in r.stdout and "too short" in r.stdout  # the reasons are still listed
    assert r.stderr.strip() == (f"error: no clips written: all 2 recordings were skipped (reasons in "
                                f"{tmp_path / 'out' / 'data_info.json'})")
    assert len(json.loads((tmp_path / "out" / "data_info.json").read_text())["skipped"]) == 2


# ------------------------------------------------------------------ issue 27: names the disk cannot take


def test_recording_whose_clip_names_are_too_long_is_skipped_and_listed(tmp_path, script_main):
    base = tmp_path / "corpus"
    for depth in (120, 160):  # ids of 225 and 265 bytes: clip names of 238 (fits) and 278 bytes
        folder = base / ("a" * depth) / ("b" * 100)
        folder.mkdir(parents=True)
        sf.write(folder / "x.wav", speech_like(2.0, seed=depth), SR, subtype="PCM_16")
    folder = base / ("c" * 140) / ("b" * 100)  # id of 245 bytes: the partial folder fits, clip names do not
    folder.mkdir(parents=True)
    sf.write(folder / "x.wav", speech_like(2.0, seed=1), SR, subtype="PCM_16")
    cfg = settings_dir(tmp_path, data_settings(base, tmp_path / "out"))
    for run in range(2):  # a rerun goes the same way instead of failing again
        r = script_main("preprocessing/splice_raw_data.py", "--settings", cfg, "--jobs", "1", "--no-progress")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert f"3 found, {1 - run} processed, {run} reused, 2 skipped" in r.stdout
    info = json.loads((tmp_path / "out" / "data_info.json").read_text())
    reasons = {sk["recording_id"][:1]: sk["reason"] for sk in info["skipped"]}
    assert set(reasons) == {"a", "c"} and all("file name too long" in v for v in reasons.values())
    assert "278 bytes" in reasons["a"] and "takes 255" in reasons["a"]
    assert not [p for p in (tmp_path / "out" / "clips").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ issue 27: SPHERE headers


def _sphere(path: Path, seconds: float = 2.0, **fields) -> Path:
    """A 16 kHz NIST SPHERE file whose header's integer ``fields`` are replaced (same header size)."""
    import re
    sf.write(path, speech_like(seconds, seed=2), SR, subtype="PCM_16", format="NIST")
    data = path.read_bytes()
    head = data[:1024].decode("ascii")
    for key, value in fields.items():
        head = re.sub(rf"{key} -i -?\d+", f"{key} -i {value}", head)
    path.write_bytes(head.ljust(1024)[:1024].encode("ascii") + data[1024:])
    return path


@pytest.mark.parametrize("field, value", [("sample_rate", 0), ("sample_rate", -16000), ("channel_count", 0)])
def test_sphere_header_with_an_impossible_field_names_it(tmp_path, field, value):
    bad = _sphere(tmp_path / "bad.sph", **{field: value})
    with pytest.raises(audio.AudioError) as e:
        audio.read_audio(bad)
    assert str(e.value) == (f"{bad}: not a readable audio file (SPHERE header field {field} is {value}, "
                            "must be above 0)")


def test_sphere_sample_count_that_disagrees_with_the_data_warns(tmp_path, caplog):
    base = tmp_path / "corpus"
    base.mkdir()
    more = _sphere(base / "more.sph", sample_count=64000)  # the header promises 4 s, the file holds 2 s
    less = _sphere(base / "less.sph", sample_count=100)
    _sphere(base / "right.sph")
    x, _ = audio.read_audio(more)
    assert len(x) == 2 * SR
    assert f"{more}: its SPHERE header's sample_count announces 64000 samples but the file holds 32000" in caplog.text
    s = splice_corpus(data_settings(base, tmp_path / "out", input_data_suffix=[".sph"]), jobs=1, progress=False)
    assert s.processed == 3 and [w["recording_id"] for w in s.warnings] == ["less", "more"]
    assert f"{less}: its SPHERE header's sample_count announces 100 samples" in s.warnings[0]["warning"]


# ------------------------------------------------------------------ issue 27: outputs that name inputs


def _tree(folder: Path) -> dict:
    """Every file under ``folder`` (links not followed) -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("case", ["plot is the input", "plot is the output", "plot is a link to the input",
                                  "reference plot is the input", "output is a hard link to the input",
                                  "input named like another's output", "earlier output in the input folder"])
def test_no_output_may_replace_an_input_or_another_output(tmp_path, case, script_main):
    src = low_res_file(tmp_path / "p.wav", 0.5)
    args = {"plot is the input": [src, "-o", "out.wav", "--plot", "p.wav"],
            "plot is the output": [src, "-o", "out.wav", "--plot", "out.wav"],
            "plot is a link to the input": [src, "-o", "out.wav", "--plot", "link.png"],
            "reference plot is the input": [src, "--reference", "--plot", "p.wav"],
            "output is a hard link to the input": [src, "-o", "hard.wav"],
            "input named like another's output": [src, "p_upsampled.wav", "-o", "."],
            "earlier output in the input folder": [tmp_path, "-o", tmp_path]}[case]
    if case == "plot is a link to the input":
        (tmp_path / "link.png").symlink_to(src)
    if case == "output is a hard link to the input":
        os.link(src, tmp_path / "hard.wav")
    if case in ("input named like another's output", "earlier output in the input folder"):
        low_res_file(tmp_path / "p_upsampled.wav", 0.5, seed=1)
    before = _tree(tmp_path)
    r = script_main(UPSAMPLE, *args, "--model", tmp_path / "absent.keras", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "would overwrite the" in r.stderr, r.stderr
    assert _tree(tmp_path) == before  # nothing written, nothing replaced


@pytest.mark.parametrize("case", ["/dev/zero", "fifo", "folder named x.wav", "folder into -o x.wav"])
def test_misleading_causes_are_named_for_what_they_are(tmp_path, case, script_main):
    if case == "fifo":
        os.mkfifo(tmp_path / "f.wav")
    if case.startswith("folder"):
        (tmp_path / "x.wav").mkdir()
        low_res_file(tmp_path / "x.wav" / "a.wav", 0.5)
    args, expected = {"/dev/zero": (["/dev/zero"], "/dev/zero: not a regular file (a character device)"),
                      "fifo": ([tmp_path / "f.wav"], "f.wav: not a regular file (a FIFO)"),
                      "folder named x.wav": ([tmp_path / "x.wav"], "x.wav is a folder: give an output folder"),
                      "folder into -o x.wav": ([tmp_path / "x.wav", "-o", tmp_path / "y.wav"],
                                               "y.wav: " + str(tmp_path / "x.wav") + " is a folder: -o names an "
                                               "output folder, not a file")}[case]
    r = script_main(UPSAMPLE, *args, "--model", tmp_path / "absent.keras", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and expected in r.stderr, r.stderr
    assert not (tmp_path / "y.wav").exists()


# ------------------------------------------------------------------ issue 27: link loops


def test_link_loops_and_linked_files_are_walked_once(tmp_path, tiny_model, script_main):
    base = tmp_path / "corpus"
    (base / "sub").mkdir(parents=True)
    sf.write(base / "a.wav", speech_like(1.2, seed=1), SR, subtype="PCM_16")
    sf.write(base / "sub" / "b.wav", speech_like(1.2, seed=2), SR, subtype="PCM_16")
    (base / "loop").symlink_to(".")          # ln -s . loop: the whole tree again, 40 times deep
    (base / "again.wav").symlink_to("a.wav")  # the same file under another name
    found = audio.walk_audio_files(base)
    assert [f.relative_to(base).as_posix() for f in found] == ["a.wav", "sub/b.wav"]
    s = splice_corpus(data_settings(base, tmp_path / "out"), jobs=1, progress=False)
    assert s.processed == 2 and not s.skipped
    from speechsr.corpus import find_recordings
    assert len(find_recordings(base, ["*"], [".wav"])) == 2  # 'loop' and 'sub' both match: b.wav once
    low = tmp_path / "low"
    (low / "sub").mkdir(parents=True)
    low_res_file(low / "a.wav", 0.3)
    low_res_file(low / "sub" / "b.wav", 0.3, seed=1)
    (low / "loop").symlink_to(".")
    r = script_main(UPSAMPLE, low, "-o", tmp_path / "up", "--model", tiny_model.path, "-q")
    assert r.returncode == 0, r.stderr
    written = sorted(p.relative_to(tmp_path / "up").as_posix() for p in (tmp_path / "up").rglob("*.wav"))
    assert written == ["a_upsampled.wav", "sub/b_upsampled.wav"]


# ------------------------------------------------------------------ issue 27: names that are not UTF-8


def test_file_names_that_are_not_utf8_are_read_and_written(tmp_path):
    src = Path(os.fsdecode(os.fsencode(tmp_path) + b"/call\xff\xfe.wav"))
    low_res_file(tmp_path / "call.wav", 0.5).rename(src)
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/new\xff/out\xfe.wav"))
    r = run_script(UPSAMPLE, src, "-o", out, "--model", "pretrained", "--runtime", "lite")  # lean: no TensorFlow
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "wrote " in r.stdout and "out\\udcfe.wav" in r.stdout  # escaped, not an encoding error
    assert sf.info(os.fsencode(out)).frames == 4 * 2000
    assert sorted(os.listdir(os.fsencode(out.parent))) == [b"out\xfe.wav"]


# ------------------------------------------------------------------ issue 27: short and failing streams


@pytest.mark.parametrize("case", ["truncated into a pipe", "truncated into a file", "truncated file on stdin",
                                  "header only", "empty stdin",
                                  "full disk on stdout", "broken pipe on stdout"])
def test_short_streams_and_failing_stdout_are_named(tmp_path, case, script_main, monkeypatch):
    import io
    wav = io.BytesIO()
    sf.write(wav, speech_like(2.0, 4000, seed=3), 4000, subtype="PCM_16", format="WAV")  # header: 2 s
    data = {"header only": wav.getvalue()[:44], "empty stdin": b""}.get(case, wav.getvalue()[:44 + 4000])  # 0.5 s
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)  # a stream that ends there, as `cat cut.wav |` gives
    if case == "truncated file on stdin":  # `< cut.wav`
        os.close(read)
        (tmp_path / "cut.wav").write_bytes(data)
        read = os.open(tmp_path / "cut.wav", os.O_RDONLY)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(open(read, "rb")))
    if case in ("truncated into a pipe", "broken pipe on stdout"):
        read_out, write_out = os.pipe()
        out = open(write_out, "wb")
        if case == "broken pipe on stdout":
            os.close(read_out)  # the reader is gone
    else:
        out = open("/dev/full" if case == "full disk on stdout" else tmp_path / "out.wav", "wb")
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    try:
        r = script_main(UPSAMPLE, "-", "-o", "-", "--model", "pretrained", "-q")
    finally:
        out.close()
    expected = {"truncated into a pipe": "<stdout>: its WAV header announces 2.00 s but 0.50 s were written",
                "header only": "<stdin>: contains no audio samples (its header announces 2.00 s)",
                "empty stdin": "<stdin>: stdin is empty",
                "full disk on stdout": "<stdout>: cannot write (no space left on device)",
                "broken pipe on stdout": "<stdout>: cannot write (broken pipe)"}.get(case)
    assert "Traceback" not in r.stderr
    if case.startswith("truncated into"):
        assert "<stdin>: truncated: its header announces 2.00 s of audio but the stream held 0.50 s" in r.stderr
    if case == "truncated file on stdin":
        assert "<stdin>: truncated: its header announces 16000 bytes of audio but the file holds 4000" in r.stderr
    if expected:
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: {expected}"), r.stderr
    if case == "truncated into a pipe":
        with open(read_out, "rb") as f:
            assert len(f.read()) == 44 + 2 * 8000  # all the data, under a header that could not be fixed
    if case in ("truncated into a file", "truncated file on stdin"):
        written = (tmp_path / "out.wav").read_bytes()
        assert r.returncode == 0 and len(written) == 44 + 2 * 8000, r.stderr
        assert written[40:44] == (2 * 8000).to_bytes(4, "little")  # the header rewritten to the data
        assert sf.info(tmp_path / "out.wav").frames == 8000
    if case == "header only":
        assert (tmp_path / "out.wav").read_bytes() == b""  # not even a header


def test_a_stop_swallowed_mid_stream_ends_the_run_and_writes_nothing(monkeypatch, tmp_path):
    """TensorFlow may swallow the KeyboardInterrupt of a SIGTERM; the stream loop and the atomic
    rename raise it again, so the run stops after the block and no output is put in place."""
    from speechsr import files, signals
    monkeypatch.setattr(signals, "_requested", False)

    class SwallowingUpsampler:
        def stream(self, blocks):
            for b in blocks:
                signals._requested = True  # the handler ran, its raise was lost inside a C callback
                yield np.repeat(b, 4)

    written = []

    class ListWriter:
        write = written.append

    blocks = iter([np.zeros(100, np.float32)] * 5)
    with pytest.raises(KeyboardInterrupt):
        files.stream_to_writer(SwallowingUpsampler(), blocks, ListWriter(), "FLOAT", files.new_stream_counts(), 0.0)
    assert len(written) == 1  # stopped after the first block, not at the end of the input
    with pytest.raises(KeyboardInterrupt):
        audio.write_audio(tmp_path / "out.wav", np.zeros(100, np.float32), SR)
    assert not list(tmp_path.iterdir())
