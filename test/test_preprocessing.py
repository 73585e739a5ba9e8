"""Preprocessing: corpus discovery, splicing into aligned clip pairs, resume, splits, scripts.

Every test builds its own small corpus of speech-like signals in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import run_script, speech_like
from speechsr import audio, settings, splicing
from speechsr.corpus import CorpusError, find_recordings
from speechsr.splicing import clip_names, clip_params, read_manifest, splice_corpus
from speechsr.split import SplitError, concatenate_csvs, read_split_csv, write_splits

ROOT = Path(__file__).resolve().parents[1]
SR, DR = 16000, 4000


def data_settings(base: Path, out: Path, **overrides) -> settings.DataSettings:
    raw = {"input_dir_name_base": str(base), "input_dir_name_dirs": [], "input_data_suffix": [".wav", ".flac"],
           "output_dir": str(out), "start_time": 0.0, "end_time": 0.0, "splice_duration": 1.0,
           "last_clip": "drop", "sampling_rate": SR, "downsample_rate": DR, "clip_subtype": "PCM_16",
           "test_fraction": 0.0, "validation_fraction": 0.0, "split_by": "recording", "split_seed": 7}
    raw.update(overrides)
    return settings.validate("data", raw, "test settings")


def band_energy(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(f >= lo) & (f < hi)].sum())


def clip_pair(out: Path, rid: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    hr_name, lr_name = clip_names(rid, i)
    hr, hr_rate = sf.read(out / "clips" / rid / hr_name, dtype="float32")
    lr, lr_rate = sf.read(out / "clips" / rid / lr_name, dtype="float32")
    assert (hr_rate, lr_rate) == (SR, DR)
    return hr, lr


# ------------------------------------------------------------------------------------ corpora


@pytest.fixture(scope="module")
def tedlium(tmp_path_factory) -> Path:
    """TEDLIUM_release2/{train,dev,test}/sph/*.sph, NIST PCM_16 at 16 kHz."""
    base = tmp_path_factory.mktemp("ted") / "TEDLIUM"
    lengths = {"train": [7.3, 6.0], "dev": [5.5], "test": [4.2]}
    seed = 0
    for part, secs in lengths.items():
        folder = base / "TEDLIUM_release2" / part / "sph"
        folder.mkdir(parents=True)
        for j, s in enumerate(secs):
            seed += 1
            sf.write(folder / f"Talk{part.title()}{j}.sph", speech_like(s, seed=seed), SR, format="NIST",
                     subtype="PCM_16")
    (base / "TEDLIUM_release2" / "train" / "stm").mkdir()
    (base / "TEDLIUM_release2" / "train" / "stm" / "TalkTrain0.stm").write_text("not audio\n")
    return base


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """wav (16 kHz mono, 44.1 kHz stereo), flac (one in a speaker folder), a corrupt and a short file."""
    base = tmp_path_factory.mktemp("plain") / "corpus"
    (base / "spk1").mkdir(parents=True)
    sf.write(base / "a_mono.wav", speech_like(3.4, seed=11), SR, subtype="PCM_16")
    x = speech_like(3.0, rate=44100, seed=12)
    sf.write(base / "b_stereo.WAV", np.stack([x, 0.5 * x], axis=1), 44100, subtype="PCM_24")
    sf.write(base / "c.flac", speech_like(2.5, seed=13), SR, subtype="PCM_16")
    sf.write(base / "spk1" / "d.flac", speech_like(2.0, seed=14), SR, subtype="PCM_16")
    (base / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" + os.urandom(2000))
    sf.write(base / "short.flac", speech_like(0.6, seed=15), SR, subtype="PCM_16")
    (base / "notes.txt").write_text("ignored\n")
    return base


# ------------------------------------------------------------------------------------ corpus


def test_find_recordings_tedlium_layout(tedlium):
    dirs = ["TEDLIUM_release*/train/sph", "TEDLIUM_release*/dev/sph", "TEDLIUM_release*/test/sph"]
    recs = find_recordings(tedlium, dirs, [".SPH"])
    assert [r.id for r in recs] == ["TEDLIUM_release2__dev__sph__TalkDev0", "TEDLIUM_release2__test__sph__TalkTest0",
                                    "TEDLIUM_release2__train__sph__TalkTrain0",
                                    "TEDLIUM_release2__train__sph__TalkTrain1"]
    assert all(r.path.is_absolute() and r.path.is_file() for r in recs)
    assert [r.id for r in find_recordings(tedlium, ["TEDLIUM_release*/dev/sph"], [".sph"])] == [
        "TEDLIUM_release2__dev__sph__TalkDev0"]
    assert len(find_recordings(tedlium, [], [".sph"])) == 4
    with pytest.raises(CorpusError, match="corpus folder not found"):
        find_recordings(tedlium / "missing", [], [".sph"])
    with pytest.raises(CorpusError, match="no .flac files"):
        find_recordings(tedlium, [], [".flac"])
    with pytest.raises(CorpusError, match="no folder matches"):
        find_recordings(tedlium, ["nothing*/here"], [".sph"])


def test_find_recordings_plain_ids(plain):
    ids = [r.id for r in find_recordings(plain, [], [".wav", ".flac"])]
    assert ids == ["a_mono", "b_stereo", "c", "corrupt", "short", "spk1__d"]


# ------------------------------------------------------------------------------------ splicing


@pytest.fixture(scope="module")
def ted_run(tedlium, tmp_path_factory):
    out = tmp_path_factory.mktemp("ted_out") / "clips_out"
    s = data_settings(tedlium, out, input_dir_name_dirs=["TEDLIUM_release*/*/sph"], input_data_suffix=[".sph"],
                      start_time=1.0, end_time=-1.0)
    return s, splice_corpus(s, jobs=2, progress=False)


def test_tedlium_clip_counts_and_lengths(ted_run):
    s, summary = ted_run
    out = Path(s.output_dir)
    # trimmed lengths 5.3, 4.0, 3.5, 2.2 s -> 5 + 4 + 3 + 2 clips of 1 s (partial clips dropped)
    expected = {"TEDLIUM_release2__train__sph__TalkTrain0": 5, "TEDLIUM_release2__train__sph__TalkTrain1": 4,
                "TEDLIUM_release2__dev__sph__TalkDev0": 3, "TEDLIUM_release2__test__sph__TalkTest0": 2}
    assert (summary.found, summary.processed, summary.reused, summary.skipped) == (4, 4, 0, [])
    assert summary.clips == 14 and summary.total_duration_s == pytest.approx(14.0)
    for rid, n in expected.items():
        m = read_manifest(out / "clips" / rid)
        assert m["clips"] == n
        assert sorted(p.name for p in (out / "clips" / rid).iterdir()) == sorted(
            [name for i in range(n) for name in clip_names(rid, i)] + [f"{rid}.done.json"])
        for i in range(n):
            hr, lr = clip_pair(out, rid, i)
            assert (len(hr), len(lr)) == (SR, DR)
            assert sf.info(out / "clips" / rid / clip_names(rid, i)[0]).subtype == "PCM_16"
    info = json.loads((out / "data_info.json").read_text())
    assert info["recordings"] == {"found": 4, "processed": 4, "reused": 0, "skipped": 0}
    assert info["clips"] == 14 and info["total_clip_duration_s"] == pytest.approx(14.0)
    assert info["settings"]["start_time"] == 1.0 and info["sampling_rate"] == SR and info["downsample_rate"] == DR
    assert info["sox_version"].startswith("SoX") and info["throughput_x_realtime"] > 0
    assert not list((out / "clips").glob(".*"))


def test_trimming_first_clip_is_source_from_start_time(ted_run, tedlium):
    s, _ = ted_run
    src, _ = audio.read_audio(tedlium / "TEDLIUM_release2/train/sph/TalkTrain0.sph", rate=SR)
    rid = "TEDLIUM_release2__train__sph__TalkTrain0"
    for i in (0, 4):
        hr, _ = clip_pair(Path(s.output_dir), rid, i)
        np.testing.assert_array_equal(hr, src[(1 + i) * SR:(2 + i) * SR])


def test_low_res_twin_has_no_energy_above_2khz(ted_run):
    s, _ = ted_run
    out = Path(s.output_dir)
    for rid in ("TEDLIUM_release2__train__sph__TalkTrain0", "TEDLIUM_release2__dev__sph__TalkDev0"):
        for i in range(2):
            hr, lr = clip_pair(out, rid, i)
            up = soxr.resample(lr, DR, SR, quality="VHQ")
            high_hr = band_energy(hr, SR, 2100, 8000)
            assert high_hr > 0.05 * band_energy(hr, SR, 0, 8000)  # the source does have a high band
            assert 10 * np.log10(band_energy(up, SR, 2100, 8000) / high_hr) < -40
            assert 10 * np.log10(band_energy(up, SR, 2100, 8000) / band_energy(up, SR, 0, 8000)) < -40
            # the pass band is kept: 0-1.8 kHz energy of the twin matches the source's
            assert band_energy(up, SR, 50, 1800) == pytest.approx(band_energy(hr, SR, 50, 1800), rel=0.05)


def test_low_res_twin_is_aligned_with_high_res(ted_run):
    s, _ = ted_run
    out = Path(s.output_dir)
    max_lag = 48
    for rid in ("TEDLIUM_release2__train__sph__TalkTrain1", "TEDLIUM_release2__test__sph__TalkTest0"):
        for i in range(2):
            hr, lr = clip_pair(out, rid, i)
            low = soxr.resample(soxr.resample(hr, SR, DR, quality="VHQ"), DR, SR, quality="VHQ")
            up = soxr.resample(lr, DR, SR, quality="VHQ")
            core = slice(2000, len(hr) - 2000)
            xc = [float(np.dot(low[core], np.roll(up, -lag)[core])) for lag in range(-max_lag, max_lag + 1)]
            assert int(np.argmax(xc)) - max_lag == 0
            assert np.corrcoef(low[core], up[core])[0, 1] > 0.99


def test_absolute_end_time_and_padding(tedlium, tmp_path):
    dirs = ["TEDLIUM_release2/train/sph"]
    s = data_settings(tedlium, tmp_path / "a", input_dir_name_dirs=dirs, input_data_suffix=[".sph"],
                      start_time=1.0, end_time=4.5)  # 3.5 s kept
    assert splice_corpus(s, jobs=2, progress=False).clips == 3 + 3
    s = data_settings(tedlium, tmp_path / "p", input_dir_name_dirs=dirs, input_data_suffix=[".sph"],
                      start_time=1.0, end_time=-1.0, last_clip="pad")  # 5.3 s and 4.0 s kept
    summary = splice_corpus(s, jobs=2, progress=False)
    assert summary.clips == 6 + 4
    rid = "TEDLIUM_release2__train__sph__TalkTrain0"
    hr, lr = clip_pair(tmp_path / "p", rid, 5)
    assert np.abs(hr[int(0.3 * SR):]).max() == 0 and np.abs(hr[:int(0.3 * SR)]).max() > 0.01
    assert np.abs(lr[int(0.32 * DR):]).max() < 1e-3
    assert read_manifest(tmp_path / "p" / "clips" / rid)["padded_s"] == pytest.approx(0.7)


def test_speed_factors_add_faster_and_slower_copies_of_each_recording(tmp_path):
    base = tmp_path / "corpus"
    base.mkdir()
    t = np.arange(int(4.0 * SR)) / SR
    sf.write(base / "tone.wav", 0.3 * np.sin(2 * np.pi * 500 * t), SR, subtype="PCM_16")  # 4 s of 500 Hz
    s = data_settings(base, tmp_path / "out", speed_factors=[1.0, 0.8, 1.25], allow_narrowband=True)  # a pure tone
    summary = splice_corpus(s, jobs=1, progress=False)
    assert summary.clips == 4 + 5 + 3  # 4 s, 5 s and 3.2 s of audio, whole 1-s clips
    m = read_manifest(tmp_path / "out" / "clips" / "tone")
    assert m["clips"] == 12 and m["params"]["speed_factors"] == [1.0, 0.8, 1.25]

    def pitch(i: int) -> float:
        hr, lr = clip_pair(tmp_path / "out", "tone", i)
        assert len(hr) == SR and len(lr) == DR
        return float(np.argmax(np.abs(np.fft.rfft(hr)))) * SR / len(hr)  # 1-s clips: 1 Hz bins
    assert [pitch(0), pitch(4), pitch(9)] == pytest.approx([500, 400, 625], abs=1)
    # manifests of runs without speed factors keep their parameters (earlier runs stay valid)
    assert "speed_factors" not in clip_params(data_settings(base, tmp_path / "o"))


def test_plain_folder_corrupt_and_short_are_skipped(plain, tmp_path):
    s = data_settings(plain, tmp_path / "out")
    summary = splice_corpus(s, jobs=2, progress=False)
    info = json.loads((tmp_path / "out" / "data_info.json").read_text())
    skipped = {sk["recording_id"]: sk["reason"] for sk in info["skipped"]}
    assert set(skipped) == {"corrupt", "short"}
    assert "corrupt.wav" in skipped["corrupt"] and "\n" not in skipped["corrupt"]
    assert skipped["short"].startswith("too short: 0.60 s")
    # 3.4 s -> 3, 3.0 s at 44.1 kHz stereo -> 3, 2.5 s -> 2, 2.0 s -> 2
    counts = {r["recording_id"]: r["clips"] for r in summary.results if r["status"] == "done"}
    assert counts == {"a_mono": 3, "b_stereo": 3, "c": 2, "spk1__d": 2}
    assert info["recordings"] == {"found": 6, "processed": 4, "reused": 0, "skipped": 2}
    hr, lr = clip_pair(tmp_path / "out", "b_stereo", 2)
    assert (len(hr), len(lr)) == (SR, DR) and np.abs(hr).max() > 0.05


def test_resume_after_interrupted_run(plain, tmp_path):
    out = tmp_path / "out"
    s = data_settings(plain, out)
    splice_corpus(s, jobs=2, progress=False)
    clips = out / "clips"
    mtimes = {p: p.stat().st_mtime_ns for p in clips.rglob("*") if p.is_file()}
    # interrupted run: one recording's final folder missing, its half-written .partial left behind,
    # and another recording missing one clip file (incomplete)
    shutil.rmtree(clips / "c")
    (clips / ".c.partial").mkdir()
    (clips / ".c.partial" / "c_00000.hr.wav").write_bytes(b"half")
    (clips / "spk1__d" / clip_names("spk1__d", 1)[1]).unlink()
    summary = splice_corpus(s, jobs=2, progress=False)
    assert (summary.processed, summary.reused, len(summary.skipped)) == (2, 2, 2)
    assert not (clips / ".c.partial").exists() and read_manifest(clips / "c")["clips"] == 2
    assert read_manifest(clips / "spk1__d")["clips"] == 2
    for p, t in mtimes.items():
        if p.parent.name in ("a_mono", "b_stereo"):
            assert p.stat().st_mtime_ns == t, p
    # other clip parameters: every recording is redone, old clips replaced
    summary = splice_corpus(data_settings(plain, out, splice_duration=0.5), jobs=2, progress=False)
    assert (summary.processed, summary.reused) == (5, 0)  # "short" (0.6 s) now gives one clip
    assert read_manifest(clips / "c")["clips"] == 5 and sf.info(clips / "c" / "c_00000.hr.wav").frames == SR // 2
    assert read_manifest(clips / "a_mono")["clips"] == 6 and len(list((clips / "a_mono").iterdir())) == 13


# ------------------------------------------------------------------------------------ split


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """10 recordings of 1.2-2.4 s spliced into 0.5 s clips."""
    base = tmp_path_factory.mktemp("many") / "corpus"
    base.mkdir()
    for i in range(10):
        sf.write(base / f"rec{i:02d}.flac", speech_like(1.2 + 0.13 * i, seed=100 + i), SR, subtype="PCM_16")
    out = base.parent / "out"
    splice_corpus(data_settings(base, out, splice_duration=0.5), jobs=2, progress=False)
    return out


def split(out: Path, test: float, validation: float, seed: int, by: str = "recording", csv_dir=None):
    """write_splits of the clips under ``out`` with these data settings."""
    return write_splits(data_settings(out, out, test_fraction=test, validation_fraction=validation, split_seed=seed,
                                      split_by=by), csv_dir)


def read_ids(csv_path: Path) -> list[str]:
    return [r["recording_id"] for r in read_split_csv(csv_path)]


def test_split_by_recording_grouped_and_deterministic(many, tmp_path):
    summary = split(many, 0.2, 0.1, seed=3, csv_dir=tmp_path)
    assert summary.recordings == {"train": 7, "validation": 1, "test": 2}
    ids = {name: set(read_ids(tmp_path / f"{name}.csv")) for name in ("train", "validation", "test")}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])
    assert not (ids["validation"] & ids["test"]) and len(set.union(*ids.values())) == 10
    first = {n: (tmp_path / f"{n}.csv").read_bytes() for n in ids}
    split(many, 0.2, 0.1, seed=3, csv_dir=tmp_path)
    assert first == {n: (tmp_path / f"{n}.csv").read_bytes() for n in ids}
    split(many, 0.2, 0.1, seed=4, csv_dir=tmp_path / "other")
    assert set(read_ids(tmp_path / "other" / "test.csv")) != ids["test"]  # seed matters
    lines = first["train"].decode().splitlines()
    assert lines[0] == "recording_id,high_res,low_res,duration_s"
    rid, hr, lr, dur = lines[1].split(",")
    assert not os.path.isabs(hr) and "\\" not in hr and hr.endswith("_00000.hr.wav") and dur == "0.5"
    assert lines[1:] == sorted(lines[1:])
    rows = read_split_csv(tmp_path / "train.csv")
    assert all(os.path.isabs(r["high_res"]) and os.path.isfile(r["low_res"]) for r in rows)
    assert sum(summary.clips.values()) == sum(read_manifest(p)["clips"] for p in (many / "clips").iterdir())


def test_concatenate_csvs_keeps_order_and_repeats_with_paths_relative_to_the_output(many, tmp_path):
    split(many, 0.2, 0.1, seed=3, csv_dir=tmp_path / "a")
    train, test = tmp_path / "a" / "train.csv", tmp_path / "a" / "test.csv"
    out = tmp_path / "combined" / "all.csv"
    n = concatenate_csvs([train, train, test], out)
    def rows_of(csv_path):  # clip paths normalised: the two CSVs reach the clips from other folders
        return [{**r, "high_res": os.path.normpath(r["high_res"]), "low_res": os.path.normpath(r["low_res"])}
                for r in read_split_csv(csv_path)]
    rows, parts = rows_of(out), [rows_of(train), rows_of(test)]
    assert n == len(rows) == 2 * len(parts[0]) + len(parts[1])
    assert rows == parts[0] + parts[0] + parts[1]
    hr = out.read_text().splitlines()[1].split(",")[1]
    assert hr.startswith("../") and "\\" not in hr, hr  # relative to the output's folder, POSIX
    with pytest.raises(SplitError, match="split CSV not found"):
        concatenate_csvs([train, tmp_path / "missing.csv"], tmp_path / "never.csv")
    assert not (tmp_path / "never.csv").exists()


def test_split_by_clip_and_zero_fraction(many, tmp_path):
    total = sum(read_manifest(p)["clips"] for p in (many / "clips").iterdir())
    summary = split(many, 0.25, 0.0, seed=1, by="clip", csv_dir=tmp_path)
    assert summary.clips == {"train": total - round(0.25 * total), "validation": 0, "test": round(0.25 * total)}
    assert (tmp_path / "validation.csv").read_text() == "recording_id,high_res,low_res,duration_s\n"
    assert read_split_csv(tmp_path / "validation.csv") == []
    assert set(read_ids(tmp_path / "train.csv")) & set(read_ids(tmp_path / "test.csv"))  # clips mix


def test_split_bad_fractions(many, tmp_path):
    with pytest.raises(ValueError, match="test_fraction 0.01 of 10 recordings rounds to 0"):
        split(many, 0.01, 0.0, seed=1, csv_dir=tmp_path)
    with pytest.raises(ValueError, match="leaves no recordings for training"):
        split(many, 0.5, 0.45, seed=1, csv_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_read_split_csv_errors(many, tmp_path):
    with pytest.raises(SplitError, match="not found"):
        read_split_csv(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SplitError, match="expected header"):
        read_split_csv(tmp_path / "bad.csv")
    split(many, 0.2, 0.0, seed=1, csv_dir=tmp_path)
    text = (tmp_path / "train.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(text[:2] + ["x,y"]) + "\n")
    with pytest.raises(SplitError, match=r"short.csv:3: expected 4 fields"):
        read_split_csv(tmp_path / "short.csv")
    (tmp_path / "missing.csv").write_text("\n".join(text[:2] + [text[2].replace(".hr.wav", ".xx.wav")]) + "\n")
    with pytest.raises(SplitError, match="1 clip file"):
        read_split_csv(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------ scripts


SPLICE, SPLIT = "preprocessing/splice_raw_data.py", "preprocessing/test_train_split.py"


@pytest.mark.parametrize("name", [SPLICE, SPLIT])
def test_script_help(name, script_main):
    r = script_main(name, "--help")
    assert r.returncode == 0 and r.stdout.startswith(f"usage: {Path(name).name}") and "--settings" in r.stdout


def test_scripts_end_to_end_and_errors(plain, tmp_path, script_main):
    """Both scripts as processes once (splice, then split), then their other paths in-process."""
    cfg = tmp_path / "settings"
    cfg.mkdir()
    raw = settings.to_json(data_settings(plain, tmp_path / "out", validation_fraction=0.25))
    (cfg / "data_settings.json").write_text(json.dumps(raw))
    r = run_script(SPLICE, "--settings", cfg, "--jobs", "2", "--no-progress", "--splice-duration", "0.5")
    assert r.returncode == 0, r.stderr
    assert "5 processed" in r.stdout and "1 skipped" in r.stdout and "real time" in r.stdout
    r = run_script(SPLIT, "--settings", cfg, "--set", "splice_duration=0.5", "--csv-dir", tmp_path / "csv")
    assert r.returncode == 0, r.stderr
    assert "validation" in r.stdout and len(read_split_csv(tmp_path / "csv" / "validation.csv")) > 0
    # the split takes the clips as spliced: no need to repeat the splice flags
    first = (tmp_path / "csv" / "validation.csv").read_bytes()
    r = script_main(SPLIT, "--settings", cfg, "--csv-dir", tmp_path / "csv")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "csv" / "validation.csv").read_bytes() == first
    # recordings spliced with different settings cannot be mixed: a clear error, no traceback
    manifest = sorted((tmp_path / "out" / "clips").glob("*/*.done.json"))[-1]
    m = json.loads(manifest.read_text())
    m["params"]["splice_duration"] = 1.0
    manifest.write_text(json.dumps(m))
    r = script_main(SPLIT, "--settings", cfg)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "other settings" in r.stderr

    r = script_main(SPLICE, "--settings", cfg, "--input-dir", tmp_path / "absent")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "corpus folder not found" in r.stderr
    raw["bogus_key"] = 1
    (cfg / "data_settings.json").write_text(json.dumps(raw))
    for name in (SPLICE, SPLIT):
        r = script_main(name, "--settings", cfg)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        assert "data_settings.json" in r.stderr and "bogus_key" in r.stderr


@pytest.mark.skipif(__import__("multiprocessing").get_start_method() != "fork",
                    reason="injects the crash through a fork-inherited monkeypatch")
def test_crashing_worker_is_skipped_and_run_finishes(plain, tmp_path, monkeypatch):
    real = audio.read_audio

    def crash_on_c(path, *args, **kwargs):
        if Path(path).name == "c.flac":
            os._exit(3)  # like a segfault in a decoder: the worker process dies
        return real(path, *args, **kwargs)

    monkeypatch.setattr(audio, "read_audio", crash_on_c)
    summary = splice_corpus(data_settings(plain, tmp_path / "out"), jobs=2, progress=False)
    reasons = {sk["recording_id"]: sk["reason"] for sk in summary.skipped}
    assert set(reasons) == {"c", "corrupt", "short"} and "crashed" in reasons["c"]
    assert summary.processed == 3 and summary.clips == 3 + 3 + 2


@pytest.mark.skipif(__import__("multiprocessing").get_start_method() != "fork",
                    reason="injects the crash through a fork-inherited monkeypatch")
def test_work_finished_before_a_crash_counts_as_processed(plain, tmp_path, monkeypatch):
    """A worker that wrote c's clips and then died: c is complete, made in this run, not 'reused'."""
    real, marker = splicing.splice_recording, tmp_path / "crashed_once"

    def finish_c_then_die(rid, *args):
        result = real(rid, *args)
        if rid == "c" and not marker.exists():
            marker.touch()
            os._exit(3)  # the clips are in place but the report never reaches the parent
        return result

    monkeypatch.setattr(splicing, "splice_recording", finish_c_then_die)
    summary = splice_corpus(data_settings(plain, tmp_path / "out"), jobs=2, progress=False)
    assert marker.exists()
    assert {sk["recording_id"] for sk in summary.skipped} == {"corrupt", "short"}
    assert (summary.processed, summary.reused, summary.clips) == (4, 0, 3 + 3 + 2 + 2)
    assert read_manifest(tmp_path / "out" / "clips" / "c") is not None


def test_one_audio_walker_for_corpora_and_upsample_folders(tmp_path):
    from speechsr.audio import collect_audio_files, walk_audio_files
    for rel in ("b/x.WAV", "a/y.flac", "a/.hidden.wav", ".git/z.wav", "out/old.wav", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert walk_audio_files(tmp_path, exclude=[tmp_path / "out"]) == [tmp_path / "a/y.flac", tmp_path / "b/x.WAV"]
    assert [rel for _, rel in collect_audio_files([tmp_path], exclude=tmp_path / "out")] == [Path("a/y"), Path("b/x")]
    corpus = find_recordings(tmp_path, [], [".wav"], exclude=[tmp_path / "out"])
    assert [r.id for r in corpus] == ["b__x"]


@pytest.mark.slow
def test_build_training_corpus_script(tmp_path):
    """preprocessing/build_training_corpus.sh: the three corpora at both rates, one train CSV per
    rate with LibriSpeech twice and paths relative to RUNS/data, validation from LibriSpeech only."""
    import subprocess
    import sys
    libri = tmp_path / "libri" / "train-clean-100"
    so762, lj = tmp_path / "so762" / "SPEAKER0001", tmp_path / "lj"
    for folder in (libri, so762, lj):
        folder.mkdir(parents=True)
    for i in range(13):  # 13 recordings: 4 % rounds to one validation recording
        sf.write(libri / f"10{i:02d}-1-0000.flac", speech_like(4.2, seed=i), SR, subtype="PCM_16")
    for i in range(3):
        sf.write(so762 / f"00001{i:04d}.wav", speech_like(2.3, seed=20 + i), SR, subtype="PCM_16")
    sf.write(lj / "LJ001-0001.wav", speech_like(6.1, seed=30), SR, subtype="PCM_16")
    runs = tmp_path / "runs"
    script = ROOT / "preprocessing" / "build_training_corpus.sh"
    env = {**os.environ, "LIBRISPEECH": str(tmp_path / "libri"), "PY": sys.executable}
    r = subprocess.run(["bash", str(script), str(runs), str(so762.parent), str(lj)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for rate, low in (("4x", 4000), ("8k", 8000)):
        data = runs / "data"
        first = (data / f"train_{rate}_all.csv").read_text().splitlines()[1].split(",")
        assert first[1].startswith(f"librispeech_{rate}_clips/clips/"), first
        rows = read_split_csv(data / f"train_{rate}_all.csv")
        libri_train = read_split_csv(data / f"librispeech_{rate}_clips" / "train.csv")
        assert len(libri_train) == 12 * 2  # 12 training recordings of two 2-s clips
        assert len(rows) == 2 * len(libri_train) + 3 + 3  # so762: one clip each; LJ: three
        assert len(read_split_csv(data / f"librispeech_{rate}_clips" / "validation.csv")) == 2
        for row in rows:
            assert sf.info(row["high_res"]).samplerate == SR and sf.info(row["low_res"]).samplerate == low, row
    r = subprocess.run(["bash", str(script), str(runs)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("usage:"), r.stderr
