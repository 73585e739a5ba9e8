"""The peer benchmark (speechsr.peers, benchmarks/bench_peers.py) and the field's LSD protocol
checked against the peers' published figures (../shared/data/peer-samples; skipped without it)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from conftest import SHARED_DATA, run_script
from speechsr import audio, metrics, peers

PEER_SET = SHARED_DATA / "peer-samples" / "4to16"
needs_peer_set = pytest.mark.skipif(not PEER_SET.is_dir(), reason="../shared/data/peer-samples absent")


@needs_peer_set
def test_lsd_reproduces_the_published_figures():
    """The peer-samples README's means (AP-BWE/NVSR protocol): AERO 0.932, SEANet 0.947, TFiLM 1.996."""
    published = {"aero": 0.932, "seanet": 0.947, "tfilm": 1.996}
    for stem, want in published.items():
        values = []
        for folder in peers.utterances(PEER_SET):
            ref, _ = audio.read_audio(folder / "reference.wav")
            y, _ = audio.read_audio(folder / f"{stem}.wav")
            values.append(metrics.lsd(ref, y))
        assert np.mean(values) == pytest.approx(want, abs=0.0015), stem


@needs_peer_set
def test_hf_coherence_separates_waveform_models_from_interpolation():
    """AERO and SEANet continue the reference's waveform above 2 kHz (coherence about 0.5 at
    2-3 kHz); TFiLM and the published sinc do not (below 0.15)."""
    means = {}
    for stem in ("aero", "seanet", "tfilm", "sinc"):
        values = []
        for folder in peers.utterances(PEER_SET):
            ref, _ = audio.read_audio(folder / "reference.wav")
            y, _ = audio.read_audio(folder / f"{stem}.wav")
            values.append(peers.score(ref, y, cutoff_hz=2000.0, perceptual=False)["hf_coherence"])
        means[stem] = float(np.mean(values))
    assert means["aero"] > 0.4 and means["seanet"] > 0.4, means
    assert means["tfilm"] < 0.15 and means["sinc"] < 0.15, means


def test_means_and_table_from_rows():
    rows = [{"utterance": u, "system": s, "kind": k, "route": "", "lsd": v, "snr": 10.0, "visqol_a48": float("nan")}
            for u, v in (("a", 1.0), ("b", 2.0)) for s, k in (("ours", "ours"), ("AERO", "published"))]
    table = peers.means(rows)
    assert [r["system"] for r in table] == ["ours", "AERO"] and table[0]["lsd"] == 1.5 and table[0]["n"] == 2
    md = peers.markdown_table(rows)
    assert "| **ours** | 1.500 | 10.00 |" in md and "ViSQOL-a48" not in md  # columns with no value are left out


def test_utterances_refuses_a_folder_without_any(tmp_path):
    with pytest.raises(ValueError, match="no utterance folder"):
        peers.utterances(tmp_path)


@pytest.mark.slow  # several seconds of model work or processes: CI runs it (make test stays near a minute)
@needs_peer_set
def test_bench_peers_one_command(tmp_path):
    out = tmp_path / "peers"
    r = run_script("benchmarks/bench_peers.py", PEER_SET, "--limit", "1", "--no-perceptual", "--out", out,
                   "--model", "fast=fast")
    assert r.returncode == 0, r.stderr
    assert "| **fast** |" in r.stdout and "| AERO |" in r.stdout and "| SEANet |" in r.stdout
    with open(out / "peers.csv") as f:
        rows = list(csv.DictReader(f))
    systems = {row["system"] for row in rows}
    assert {"fast", "AERO", "SEANet", "TFiLM", "sinc (published)", "sinc (ours, soxr VHQ)", "cubic spline"} <= systems
    ours = next(row for row in rows if row["system"] == "fast")
    assert math.isfinite(float(ours["lsd"])) and float(ours["snr"]) > 5.0 and "model given" in ours["route"]
    assert (out / "peers.png").stat().st_size > 10000 and (out / "peers.md").read_text().startswith("4to16")
