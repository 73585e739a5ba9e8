"""Evaluate a model on high-res files against the sinc and spline baselines.

Each file goes through :func:`speechsr.inference.reference_mode` (sox-downsampled to the
model's input rate, upsampled, compared with the original by ``metrics.snr``/``lsd``).
:func:`write_tables` writes ``results.csv`` and ``results.md`` (per-file rows, a mean row and
the real-time factor RTF = model seconds / audio seconds) atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from tqdm import tqdm

from speechsr.audio import atomic_path
from speechsr.inference import Upsampler, reference_mode

METHODS = ("model", "sinc", "spline")
COLUMNS = ["file", "duration_s"] + [f"{m}_{k}" for m in METHODS for k in ("snr", "lsd")] + ["model_seconds"]


def evaluate(files: list[str | os.PathLike], upsampler: Upsampler, progress: bool = True) -> list[dict]:
    """Per-file rows (``COLUMNS``; SNR in dB, durations in seconds) for high-res ``files``."""
    upsampler.warmup()  # trace once, outside the timed region
    rows = []
    for path in tqdm(files, desc="evaluating", unit="file", disable=not progress):
        res = reference_mode(path, upsampler)
        row = {"file": str(path), "duration_s": res["duration_s"], "model_seconds": res["model_seconds"]}
        for m in METHODS:
            row[f"{m}_snr"], row[f"{m}_lsd"] = res["metrics"][m]["snr"], res["metrics"][m]["lsd"]
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    """Mean of every metric over files, total durations (s) and RTF (model s / audio s)."""
    out = {"files": len(rows), "duration_s": sum(r["duration_s"] for r in rows),
           "model_seconds": sum(r["model_seconds"] for r in rows)}
    for m in METHODS:
        for k in ("snr", "lsd"):
            values = [r[f"{m}_{k}"] for r in rows if math.isfinite(r[f"{m}_{k}"])]
            out[f"{m}_{k}"] = sum(values) / len(values) if values else float("nan")
    out["rtf"] = out["model_seconds"] / out["duration_s"] if out["duration_s"] else float("nan")
    return out


def _display_name(path: str, base: Path | None) -> str:
    if base is not None:
        try:
            return Path(path).resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return Path(path).name


def markdown_table(rows: list[dict], base: Path | None = None) -> tuple[str, str]:
    """(whole Markdown table, its mean row) — SNR in dB, LSD, durations in seconds."""
    head = ("| file | duration (s) | model SNR | model LSD | sinc SNR | sinc LSD | spline SNR | "
            "spline LSD | model time (s) |")
    lines = [head, "|" + "---|" * 9]

    def fmt(name, r):
        return (f"| {name} | {r['duration_s']:.2f} | " + " | ".join(
            f"{r[f'{m}_snr']:.2f} | {r[f'{m}_lsd']:.3f}" for m in METHODS) + f" | {r['model_seconds']:.3f} |")

    lines += [fmt(_display_name(r["file"], base), r) for r in rows]
    s = summary(rows)
    n = max(1, s["files"])
    mean = fmt(f"**mean ({s['files']} files)**",
               {**s, "duration_s": s["duration_s"] / n, "model_seconds": s["model_seconds"] / n})
    lines.append(mean)
    return "\n".join(lines), mean


def write_tables(rows: list[dict], out_dir: str | os.PathLike, title: str = "Evaluation",
                 base: Path | None = None) -> dict:
    """Write ``results.csv`` and ``results.md`` into ``out_dir``; returns :func:`summary` + paths."""
    out_dir = Path(out_dir)
    s = summary(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buf.getvalue())
    table, mean = markdown_table(rows, base)
    md = (f"# {title}\n\n{table}\n\n"
          f"RTF (model seconds / audio seconds, {s['duration_s']:.1f} s of audio): {s['rtf']:.4f}\n\n"
          "SNR in dB (higher is better); LSD in log10-power units (lower is better); "
          "see src/speechsr/metrics.py.\n")
    with atomic_path(md_path) as tmp:
        tmp.write_text(md)
    return {**s, "mean_row": mean, "csv": str(csv_path), "md": str(md_path)}
