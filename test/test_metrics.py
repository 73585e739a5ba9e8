"""Metrics on constructed signals with known answers, and the evaluation tables and listening page."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from conftest import speech_like, upsampling_settings
from speechsr import evaluation, metrics

RATE, CUTOFF = 16000, 2000.0


def band_split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(below 2 kHz, above 2 kHz) parts of ``x`` by zero-phase 10th-order Butterworth filters."""
    low = sosfiltfilt(butter(10, CUTOFF, "low", fs=RATE, output="sos"), x)
    return low, x - low


@pytest.fixture(scope="module")
def speech():
    return speech_like(3.0, RATE, seed=3).astype(np.float64)


def test_identical_signals(speech):
    s = metrics.spectral(speech, speech, RATE, CUTOFF)
    assert math.isinf(s["snr"])
    assert s["lsd"] == s["lsd_lf"] == s["lsd_hf"] == 0.0
    assert s["hf_energy"] == pytest.approx(0.0, abs=1e-9)


def test_hf_coherence_tells_the_band_from_a_random_phase_copy(speech):
    """1 for the band itself (any gain), -1 inverted, about 0 for the same magnitudes with random
    phase, NaN for a silent reference band; at 2.5-3.5 kHz, clear of the split filter's skirt."""
    low, high = band_split(speech)
    assert metrics.hf_coherence(speech, speech, RATE, CUTOFF) == pytest.approx(1.0)
    assert metrics.band_coherence(speech, low + 0.3 * high, RATE, 2500, 3500) == pytest.approx(1.0, abs=0.01)
    assert metrics.band_coherence(speech, low - high, RATE, 2500, 3500) == pytest.approx(-1.0, abs=0.01)
    spec = np.fft.rfft(high)
    rng = np.random.default_rng(0)
    scrambled = np.fft.irfft(np.abs(spec) * np.exp(2j * np.pi * rng.random(spec.size)), n=high.size)
    random_phase = metrics.band_coherence(speech, low + scrambled, RATE, 2500, 3500)
    assert abs(random_phase) < 0.1
    assert metrics.high_band_energy_db(speech, low + scrambled, RATE, CUTOFF) == pytest.approx(0.0, abs=1.0)
    assert math.isnan(metrics.band_coherence(np.zeros_like(speech), speech, RATE, 2500, 3500))


def test_high_band_removed(speech):
    low, _ = band_split(speech)
    s = metrics.spectral(speech, low, RATE, CUTOFF)
    assert s["hf_energy"] < -20          # the band is gone (filter skirt and window leakage remain)
    assert s["lsd_hf"] > 5 * s["lsd_lf"]  # the error sits above the cutoff
    assert s["lsd_lf"] < 0.5


def test_high_band_10_db_down(speech):
    low, high = band_split(speech)
    s = metrics.spectral(speech, low + high * 10 ** (-10 / 20), RATE, CUTOFF)
    assert s["hf_energy"] == pytest.approx(-10.0, abs=0.6)
    assert s["lsd_hf"] == pytest.approx(1.0, abs=0.15)  # 10 dB = 1 log10-power unit in every bin


def test_lsd_follows_the_peers_protocol():
    """AP-BWE/NVSR: power floored (not offset) at 1e-8, centred frames with reflect padding."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=RATE)
    silent = np.zeros(RATE)
    # log10 of the floor against log10 of white noise's power: a floor of 1e-8 gives 8 + log10 P
    power = np.mean(np.abs(np.fft.rfft(x[:2048] * np.hanning(2048))) ** 2)
    assert metrics.lsd(x, silent) == pytest.approx(np.log10(power) + 8, abs=0.4)
    # reflect padding: a constant-level signal has no quiet edge frames, so a 6 dB change is 0.6 in every frame
    assert metrics.lsd(x, 0.5 * x) == pytest.approx(0.602, abs=1e-3)


def test_noise_added_in_pauses():
    rng = np.random.default_rng(0)
    voice = speech_like(1.0, RATE, seed=4).astype(np.float64)
    floor = 1e-4 * rng.normal(size=3 * RATE)                  # the reference's own pause: -80 dB white noise
    reference = np.concatenate([voice, floor, voice])
    hiss = np.zeros_like(reference)
    hiss[RATE:4 * RATE] = 3e-4 * rng.normal(size=3 * RATE)    # 9x the floor's power, white, pause only
    # expected 10 log10(1 + 9) = 10 dB; pause frames at the edges also hold a little speech leakage
    assert metrics.pause_noise_db(reference, reference, RATE, CUTOFF) == pytest.approx(0.0, abs=1e-9)
    assert metrics.pause_noise_db(reference, reference + hiss, RATE, CUTOFF) == pytest.approx(10.0, abs=0.6)
    assert math.isnan(metrics.pause_noise_db(voice, voice, RATE, CUTOFF))  # no pause at all


def test_perceptual_metrics_rank_a_lost_band_below_the_original(speech):
    low, _ = band_split(speech)
    same = metrics.perceptual(speech, speech, RATE)
    lost = metrics.perceptual(speech, low, RATE)
    assert same["visqol"] > 4.0 and same["stoi"] > 0.99
    assert lost["visqol"] < same["visqol"] - 0.3
    assert same["visqol_a48"] > 4.5  # audio mode's ceiling is 4.73
    assert lost["visqol_a48"] < same["visqol_a48"] - 0.5
    assert 1.0 <= lost["p808"] <= 5.0


def test_metrics_that_cannot_score_give_nan_not_an_error():
    short = speech_like(0.05, RATE, seed=5)
    scores = metrics.perceptual(short, short, RATE)
    assert math.isnan(scores["visqol"]) and math.isnan(scores["visqol_a48"])
    assert math.isnan(metrics.perceptual(np.zeros(RATE), np.zeros(RATE), RATE)["p808"])  # silent


def _rows():
    row = {"file": "a.wav", "duration_s": 2.0, "model_seconds": 0.1}
    for m in evaluation.METHODS:
        for k in evaluation.SPECTRAL + evaluation.PERCEPTUAL:
            row[f"{m}_{k}"] = 1.0
    row["reference_p808"] = 4.0
    other = {**row, "file": "b.wav", "model_visqol": float("nan"), "model_snr": 3.0}
    return [row, other]


def test_summary_leaves_out_and_counts_empty_cells():
    s = evaluation.summary(_rows())
    assert s["model_visqol"] == 1.0 and s["model_visqol_missing"] == 1
    assert s["model_snr"] == 2.0 and s["model_snr_missing"] == 0
    assert "| **model** | 2.00 |" in evaluation.mean_table(_rows()) and "(1/2)" in evaluation.mean_table(_rows())


def test_pick_listening_files_takes_first_then_worst():
    rows = []
    for i, gain in enumerate([0.5, 0.4, -0.3, 0.2, -0.9, 0.1]):
        rows.append({"model_visqol_a48": 3.0 + gain, "sinc_visqol_a48": 3.0})
    assert evaluation.pick_listening_files(rows, first=2, worst=2) == [0, 1, 4, 2]


@pytest.fixture(scope="module")
def tiny_upsampler(tiny_model):
    from speechsr.inference import Upsampler
    return Upsampler(tiny_model.model, tiny_model.settings,
                     upsampling_settings(window_seconds=0.512, overlap_seconds=0.128, batch_size=2))


def _write_files(tmp_path, seconds: tuple) -> list:
    files = []
    for i, duration in enumerate(seconds):
        files.append(tmp_path / f"utt{i}.wav")
        sf.write(files[-1], speech_like(duration, RATE, seed=20 + i), RATE, subtype="PCM_16")
    return files


@pytest.mark.slow
def test_evaluate_scores_perceptual_metrics_in_workers_and_survives_a_rejected_file(tmp_path, tiny_upsampler):
    files = _write_files(tmp_path, (1.2, 0.05))  # the second is too short for ViSQOL: an empty cell, no crash
    rows = evaluation.evaluate(files, tiny_upsampler, progress=False, perceptual=True, jobs=1)
    assert len(rows) == 2
    assert math.isfinite(rows[0]["model_visqol"]) and math.isfinite(rows[0]["reference_p808"])
    assert 1.0 <= rows[0]["model_visqol_a48"] <= 4.8
    assert math.isnan(rows[1]["model_visqol"]) and math.isfinite(rows[1]["model_snr"])
    assert evaluation.summary(rows)["model_visqol_missing"] == 1


def test_listening_page_references_only_files_that_exist(tmp_path, tiny_upsampler):
    files = _write_files(tmp_path, (1.2, 0.6))
    rows = evaluation.evaluate(files, tiny_upsampler, progress=False, perceptual=False)
    out = tmp_path / "results"
    evaluation.write_tables(rows, out)
    page = evaluation.write_listening_page(rows, [0, 1], tiny_upsampler, out)
    text = page.read_text()
    links = re.findall(r"src='([^']+)'", text)
    assert len(links) == 2 * (len(evaluation.LISTEN_SIGNALS) + 1)  # players + one figure per file
    assert all((out / link).is_file() for link in links)
    assert "http" not in text  # nothing from the network
