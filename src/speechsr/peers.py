"""The peer benchmark: our systems beside other systems' published outputs on the same inputs.

A peer set (``../shared/data/peer-samples/4to16`` or ``8to16``) holds one folder per utterance:
``reference.wav`` (the wideband 16 kHz recording), ``lr.wav`` (the low-rate input exactly as the
peers fed it, 4000 or 8000 Hz) and ``SYSTEM.wav`` for each published system (:data:`PUBLISHED`).
Every output is scored against ``reference.wav`` as the peers score: both cut to the shorter
length, no alignment, no level change (:func:`score`: ViSQOL-a48 and LSD first, then SNR,
LSD-HF, high-band energy, DNSMOS P.808 and the lattice ViSQOL, reported only).

:func:`run_benchmark` does it all: it runs each of our systems on every ``lr.wav`` through the
``speechsr upsample`` command (so the figures are the default command's, routing included),
makes sinc and spline from the same ``lr.wav``, scores everything in a process pool and returns
one row per (utterance, system). ``benchmarks/bench_peers.py`` is the command line.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from speechsr import audio, baselines, metrics

#: Published systems of a peer set (file stem -> label), in the order of the tables.
PUBLISHED = {"aero": "AERO", "seanet": "SEANet", "tfilm": "TFiLM", "sinc": "sinc (published)"}
#: Our baselines made from the same ``lr.wav`` (label -> function of :mod:`speechsr.baselines`).
BASELINES = {"sinc (ours, soxr VHQ)": baselines.sinc, "cubic spline": baselines.spline}
#: Columns of the tables, headline first.
METRICS = ("visqol_a48", "lsd", "snr", "lsd_hf", "hf_energy", "hf_coherence", "p808", "visqol")
LABELS = {"visqol_a48": "ViSQOL-a48", "lsd": "LSD", "snr": "SNR (dB)", "lsd_hf": "LSD-HF",
          "hf_energy": "HF energy (dB)", "hf_coherence": "HF coherence", "p808": "P.808",
          "visqol": "ViSQOL speech (lattice)"}
FORMATS = {"snr": ".2f", "hf_energy": ".1f", "hf_coherence": ".2f"}
OUTPUT_RATE = 16000


def utterances(root: str | os.PathLike) -> list[Path]:
    """The utterance folders of a peer set (those with ``reference.wav`` and ``lr.wav``), sorted.
    ValueError when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    found = sorted(d for d in root.iterdir() if (d / "reference.wav").is_file() and (d / "lr.wav").is_file())
    if not found:
        raise ValueError(f"{root}: no utterance folder with reference.wav and lr.wav")
    return found


def score(reference: np.ndarray, y: np.ndarray, cutoff_hz: float, perceptual: bool = True) -> dict:
    """Metrics of :data:`METRICS` of ``y`` against ``reference`` (both ``[time]`` at 16 kHz);
    ``cutoff_hz``: the input's Nyquist frequency (where LSD-HF and HF energy start)."""
    s = metrics.spectral(reference, y, OUTPUT_RATE, cutoff_hz)
    row = {k: s[k] for k in ("lsd", "snr", "lsd_hf", "hf_energy")}
    row["hf_coherence"] = metrics.hf_coherence(reference, y, OUTPUT_RATE, cutoff_hz)
    if perceptual:
        row["visqol_a48"] = metrics.guarded(metrics.visqol_a48, reference, y, OUTPUT_RATE)
        row["visqol"] = metrics.guarded(metrics.visqol, reference, y, OUTPUT_RATE)
        row["p808"] = metrics.guarded(metrics.dnsmos_p808, y, OUTPUT_RATE)
    return row


def read_16k(path: Path) -> np.ndarray:
    """A 16 kHz mono file as float32 ``[time]``; ValueError at any other rate."""
    x, rate = audio.read_audio(path)
    if rate != OUTPUT_RATE:
        raise ValueError(f"{path}: {rate} Hz, expected {OUTPUT_RATE}")
    return x


def run_speechsr(lr_path: Path, out_path: Path, model: str | None) -> str:
    """``speechsr upsample LR -o OUT [--model MODEL]`` as a fresh process; returns the routing
    line it logged (why that path). RuntimeError with its error line on failure."""
    cmd = [sys.executable, "-m", "speechsr", "upsample", str(lr_path), "-o", str(out_path)]
    cmd += ["--model", model] if model else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{lr_path}: speechsr upsample failed: {done.stderr.strip().splitlines()[-1:]}")
    routes = [ln.split(": ", 2)[-1] for ln in done.stderr.splitlines() if "model " in ln or "sinc" in ln]
    return routes[-1].strip() if routes else f"model given ({model})" if model else "4x model (4 kHz input)"


def _score_job(key: tuple, reference_path: str, output_path: str, cutoff_hz: float, perceptual: bool):
    """Worker: ``(key, metrics)`` of one output file against its reference."""
    return key, score(read_16k(Path(reference_path)), read_16k(Path(output_path)), cutoff_hz, perceptual)


def run_benchmark(root: str | os.PathLike, systems: dict[str, str | None], out_dir: str | os.PathLike,
                  perceptual: bool = True, jobs: int | None = None, limit: int | None = None,
                  progress: Callable[[str], None] = lambda message: None) -> list[dict]:
    """Score ``systems`` (label -> ``--model`` value, None for the default command) beside the
    published outputs and our baselines on the peer set ``root``.

    Outputs go to ``out_dir/LABEL_SLUG/UTTERANCE.wav`` (baselines written in ``lr.wav``'s sample
    format). Returns rows ``{"utterance", "system", "kind" ('ours', 'published', 'baseline'),
    "route", metric: value...}``; a metric that cannot score is NaN.
    """
    out_dir = Path(out_dir)
    folders = utterances(root)[:limit]
    rows, jobs_list = {}, []
    for folder in folders:
        lr_path = folder / "lr.wav"
        lr, lr_rate = audio.read_audio(lr_path)
        info = audio.audio_info(lr_path)
        cutoff = lr_rate / 2
        outputs = {}
        for label, model in systems.items():
            out = out_dir / slug(label) / f"{folder.name}.wav"
            out.parent.mkdir(parents=True, exist_ok=True)
            progress(f"{folder.name}: {label}")
            route = run_speechsr(lr_path, out, model)
            outputs[label] = (out, "ours", route)
        for label, fn in BASELINES.items():
            out = out_dir / slug(label) / f"{folder.name}.wav"
            out.parent.mkdir(parents=True, exist_ok=True)
            audio.write_audio(out, fn(lr, lr_rate, OUTPUT_RATE), OUTPUT_RATE, info.subtype)
            outputs[label] = (out, "baseline", "")
        for stem, label in PUBLISHED.items():
            if (folder / f"{stem}.wav").is_file():
                outputs[label] = (folder / f"{stem}.wav", "published", "")
        for label, (path, kind, route) in outputs.items():
            key = (folder.name, label)
            rows[key] = {"utterance": folder.name, "system": label, "kind": kind, "route": route,
                         "output": str(path)}
            jobs_list.append((key, str(folder / "reference.wav"), str(path), cutoff, perceptual))
        rows[(folder.name, "reference")] = {"utterance": folder.name, "system": "reference (real 16 kHz)",
                                             "kind": "reference", "route": "", "output": str(folder / "reference.wav")}
        if perceptual:
            ref = read_16k(folder / "reference.wav")
            rows[(folder.name, "reference")]["p808"] = metrics.guarded(metrics.dnsmos_p808, ref, OUTPUT_RATE)
    progress(f"scoring {len(jobs_list)} outputs")
    # spawn: the workers import numpy and the metric packages only
    with futures.ProcessPoolExecutor(jobs or os.cpu_count() or 1,
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
        for key, scores in pool.map(_score_job, *zip(*jobs_list)):
            rows[key].update(scores)
    return list(rows.values())


def slug(label: str) -> str:
    """A folder name for a system's label."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in label).strip("_") or "system"


def means(rows: Sequence[dict]) -> list[dict]:
    """One row per system (first-seen order): the mean of each metric over utterances (NaN
    cells left out; ``n`` = utterances)."""
    out: dict[str, dict] = {}
    for r in rows:
        out.setdefault(r["system"], {"system": r["system"], "kind": r["kind"], "values": []})["values"].append(r)
    table = []
    for s in out.values():
        row = {"system": s["system"], "kind": s["kind"], "n": len(s["values"])}
        for k in METRICS:
            v = [r[k] for r in s["values"] if k in r and math.isfinite(r[k])]
            row[k] = float(np.mean(v)) if v else float("nan")
        table.append(row)
    return table


def _fmt(key: str, value: float) -> str:
    return format(value, FORMATS.get(key, ".3f")) if math.isfinite(value) else ""


def markdown_table(rows: Sequence[dict], title: str = "") -> str:
    """The mean table in Markdown: ours in bold, then published systems, baselines, reference."""
    order = {"ours": 0, "published": 1, "baseline": 2, "reference": 3}
    table = sorted(means(rows), key=lambda r: order[r["kind"]])
    keys = [k for k in METRICS if any(math.isfinite(r[k]) for r in table)]
    lines = ([f"{title}", ""] if title else []) + [
        "| system | " + " | ".join(LABELS[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in table:
        name = f"**{r['system']}**" if r["kind"] == "ours" else r["system"]
        lines.append(f"| {name} | " + " | ".join(_fmt(k, r[k]) for k in keys) + " |")
    return "\n".join(lines)
