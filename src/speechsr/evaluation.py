"""Evaluate a model on high-res files against the sinc and spline baselines.

Each file goes through :func:`reference_mode` (sox-downsampled to the
model's input rate, upsampled, compared with the original). The fast metrics
(:func:`speechsr.metrics.spectral`: SNR, LSD, LSD-LF/HF, high-band energy, pause noise) are
computed as files are upsampled; the slow perceptual ones (:func:`speechsr.metrics.perceptual`:
ViSQOL, STOI, DNSMOS P.808, also P.808 of the reference) run in a process pool alongside, whose
workers die with the evaluation, even by SIGKILL, and stop at once on Ctrl-C or SIGTERM.
A metric that cannot score a file leaves an empty cell (NaN), counted in the mean row.

:func:`write_tables` writes ``results.csv`` and ``results.md`` (a mean table per method and the
per-file rows), :func:`write_listening_page` ``results.html`` with audio players and
spectrograms of a few files; all atomically.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import csv
import html
import io
import logging
import math
import multiprocessing
import os
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speechsr import audio, bandlimit, baselines, metrics, resamplers, signals, workers
from speechsr.audio import atomic_path
from speechsr.channel import EVALUATION_CHANNELS, TELEPHONE_RATE, TelephoneChannel, clip_seed
from speechsr.inference import Upsampler
from speechsr.files import decide_lowpass
from speechsr.plots import comparison_figure

log = logging.getLogger("speechsr")

METHODS = ("model", "sinc", "spline")
SPECTRAL = ("snr", "lsd", "lsd_lf", "lsd_hf", "hf_energy", "pause_noise")
PERCEPTUAL = ("visqol_a48", "visqol", "stoi", "p808")  # headline first; lattice ViSQOL, STOI reported only
METRIC_LABELS = {"snr": "SNR (dB)", "lsd": "LSD", "lsd_lf": "LSD-LF", "lsd_hf": "LSD-HF",
                 "hf_energy": "HF energy (dB)", "pause_noise": "pause noise (dB)", "visqol_a48": "ViSQOL-a48",
                 "visqol": "ViSQOL speech (lattice)",
                 "stoi": "STOI", "p808": "P.808"}
METRIC_FORMATS = {"snr": ".2f", "hf_energy": ".1f", "pause_noise": ".1f", "stoi": ".3f"}


# ------------------------------------------------------------------ reference mode

def reference_mode(hires_path: str | os.PathLike, upsampler: Upsampler, channel: str = "sox") -> dict:
    """Evaluate on a high-res file: downsample it as preprocessing does, upsample, compare.

    The reference is read, resampled to ``output_rate`` Hz if needed and cut to a multiple
    of ``factor`` samples; the low-res input is ``audio.sox_downsample`` of it, band-limited
    further as the upsampler's ``input_lowpass`` decides (sox output stays below the 'auto'
    threshold in practice). ``signals["low_res"]`` is the sox output. Returns
    ``{"metrics": {method: metrics.spectral(...)}, "signals": {"reference", "low_res", "model",
    "sinc", "spline"} (float32 [time]), "rates": {name: Hz}, "duration_s", "model_seconds"}``.

    ``channel``: a resampler's name (``resample_poly``...), or ``resamplers`` (one drawn by the
    file's name): the low-res input is made by it (:mod:`speechsr.resamplers`);
    ``channel`` 'telephone': the low-res input is the reference through
    :class:`speechsr.channel.TelephoneChannel` (8 kHz, G.711, seeded by the file name) instead;
    the baselines interpolate that 8 kHz signal, the model gets it resampled to its input rate.
    """
    s = upsampler.settings
    f = upsampler.factor
    if channel not in EVALUATION_CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(EVALUATION_CHANNELS)}, got {channel!r}")
    low_rate = TELEPHONE_RATE if channel == "telephone" else s.input_rate
    f = math.lcm(f, s.output_rate // low_rate)
    x, rate = audio.read_audio(hires_path)
    if rate < s.output_rate:
        log.warning("%s: sampled at %d Hz, below the %d Hz output rate; the reference lacks the high band",
                    hires_path, rate, s.output_rate)
    ref = audio.resample(x, rate, s.output_rate)
    ref = ref[:len(ref) - len(ref) % f]
    if ref.size == 0:
        raise audio.AudioError(f"{hires_path}: too short for reference mode")
    if channel == "sox":
        low = audio.sox_downsample(ref, s.output_rate, s.input_rate)
    elif channel != "telephone":  # a resampler, or one drawn per file
        kind = resamplers.choose(resamplers.RESAMPLERS, Path(hires_path).name) if channel == "resamplers" else channel
        low = resamplers.downsample(ref, s.output_rate, s.input_rate, kind)
    else:
        seed = clip_seed(0, Path(hires_path).name)
        low = TelephoneChannel(rate=low_rate).apply(ref, s.output_rate, seed=seed)
    model_input = low
    if low_rate != s.input_rate:
        n = ref.size * s.input_rate // s.output_rate
        model_input = audio.resample(low, low_rate, s.input_rate)
        model_input = np.pad(model_input, (0, max(0, n - model_input.size)))[:n]
    if decide_lowpass(upsampler, hires_path, model_input):
        model_input = np.concatenate(list(bandlimit.lowpass_stream([model_input])))
    t0 = time.perf_counter()
    y = upsampler.upsample(model_input)
    model_seconds = time.perf_counter() - t0
    if ref.size < 2048:
        log.warning("%s: %.3f s is shorter than one 2048-sample LSD frame; LSD is approximate",
                    hires_path, ref.size / s.output_rate)
    with warnings.catch_warnings():  # numpy/scipy/librosa warnings on silent or very short files
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        signals = {"reference": ref, "low_res": low, "model": y,
                   "sinc": baselines.sinc(low, low_rate, s.output_rate),
                   "spline": baselines.spline(low, low_rate, s.output_rate)}
        scores = {m: metrics.spectral(ref, signals[m], s.output_rate, low_rate / 2)
                  for m in ("model", "sinc", "spline")}
    rates = {name: (low_rate if name == "low_res" else s.output_rate) for name in signals}
    return {"metrics": scores, "signals": signals, "rates": rates,
            "duration_s": ref.size / s.output_rate, "model_seconds": model_seconds}


TABLE_KEYS = ("visqol_a48", "lsd", "snr", "lsd_hf", "hf_energy", "p808", "visqol", "stoi")  # format_metrics_table's columns


def format_metrics_table(scores: dict) -> str:
    """A small text table of ``{method: {metric: value}}`` (the columns present; README "Metrics")."""
    present = [k for k in TABLE_KEYS if any(k in v for v in scores.values())]
    lines = [f"{'method':<10}" + "".join(f" {METRIC_LABELS[k]:>14}" for k in present)]
    for m, v in scores.items():
        cells = [_fmt(k, v[k]) if k in v else "" for k in present]
        lines.append(f"{m:<10}" + "".join(f" {c:>14}" for c in cells))
    return "\n".join(lines)


def columns(perceptual: bool = True) -> list[str]:
    """CSV columns: per method the spectral (and perceptual) metrics, P.808 of the reference."""
    keys = SPECTRAL + (PERCEPTUAL if perceptual else ())
    extra = ["reference_p808"] if perceptual else []
    return ["file", "duration_s"] + [f"{m}_{k}" for m in METHODS for k in keys] + extra + ["model_seconds"]


def _score_perceptual(index: int, reference: np.ndarray, outputs: dict, rate: int) -> tuple[int, dict]:
    """Worker: perceptual metrics of each output against ``reference`` (``[time]`` at ``rate`` Hz)."""
    row = {}
    for method, y_hat in outputs.items():
        for k, v in metrics.perceptual(reference, y_hat, rate).items():
            row[f"{method}_{k}"] = v
    row["reference_p808"] = metrics.guarded(metrics.dnsmos_p808, reference, rate)
    return index, row


def evaluate(files: list[str | os.PathLike], upsampler: Upsampler, progress: bool = True,
             perceptual: bool = True, jobs: int | None = None, channel: str = "sox") -> list[dict]:
    """Per-file rows (:func:`columns`; SNR and energies in dB, durations in seconds).

    ``jobs`` worker processes (default: all cores) score the perceptual metrics while the
    model upsamples the next files; ``perceptual=False`` skips them. ``channel``: how the low-res
    input is made (:func:`reference_mode`: 'sox' or 'telephone').
    """
    upsampler.warmup()  # trace once, outside the timed region
    rows: list[dict] = []
    rate = upsampler.output_rate
    # spawn: the workers import numpy and the metric packages only, never TensorFlow; they die with
    # this process, and Ctrl-C or SIGTERM kills them at once (speechsr.workers)
    scoring = (workers.pool(jobs or os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn"))
               if perceptual else contextlib.nullcontext())
    with scoring as pool:
        pending = []
        for path in tqdm(files, desc="upsampling", unit="file", disable=not progress):
            signals.check()  # a Ctrl-C / SIGTERM that TensorFlow swallowed while upsampling
            res = reference_mode(path, upsampler, channel)
            ref = res["signals"]["reference"]
            row = {"file": str(path), "duration_s": res["duration_s"], "model_seconds": res["model_seconds"]}
            for m in METHODS:  # reference mode's spectral metrics (cutoff: the low-res input's Nyquist)
                for k, v in res["metrics"][m].items():
                    row[f"{m}_{k}"] = v
            rows.append(row)
            if pool is not None:
                outputs = {m: res["signals"][m] for m in METHODS}
                pending.append(pool.submit(_score_perceptual, len(rows) - 1, ref, outputs, rate))
        if pool is not None:
            done = futures.as_completed(pending)
            for job in tqdm(done, total=len(pending), desc="perceptual metrics", unit="file", disable=not progress):
                index, scores = job.result()
                rows[index].update(scores)
        signals.check()
    return rows


def _metric_keys(rows: list[dict]) -> tuple[str, ...]:
    return SPECTRAL + (PERCEPTUAL if rows and "model_visqol_a48" in rows[0] else ())


def summary(rows: list[dict]) -> dict:
    """Means over files of every metric (non-finite cells left out and counted in ``<column>_missing``;
    a row left out of a method's SNR is left out of its LSD too, and vice versa),
    total durations (s) and RTF (model seconds / audio seconds)."""
    out = {"files": len(rows), "duration_s": sum(r["duration_s"] for r in rows),
           "model_seconds": sum(r["model_seconds"] for r in rows)}
    keys = [f"{m}_{k}" for m in METHODS for k in _metric_keys(rows)]
    if rows and "reference_p808" in rows[0]:
        keys.append("reference_p808")
    for key in keys:
        m, _, k = key.partition("_")  # a method's SNR and LSD are averaged over the same rows
        same_rows = [f"{m}_snr", f"{m}_lsd"] if k in ("snr", "lsd") else [key]
        values = [r[key] for r in rows if all(math.isfinite(r.get(c, 0.0)) for c in same_rows)]
        out[key] = sum(values) / len(values) if values else float("nan")
        out[f"{key}_missing"] = len(rows) - len(values)
    out["rtf"] = out["model_seconds"] / out["duration_s"] if out["duration_s"] else float("nan")
    return out


def _fmt(key: str, value: float) -> str:
    if not math.isfinite(value):
        return ""
    return format(value, METRIC_FORMATS.get(key, ".3f"))


def mean_table(rows: list[dict]) -> str:
    """Markdown table: one row per method (and P.808 of the reference), one column per metric."""
    s = summary(rows)
    keys = _metric_keys(rows)
    lines = ["| method | " + " | ".join(METRIC_LABELS[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m in METHODS:
        cells = []
        for k in keys:
            cell = _fmt(k, s[f"{m}_{k}"])
            missing = s[f"{m}_{k}_missing"]
            cells.append(f"{cell} ({s['files'] - missing}/{s['files']})" if missing and cell else cell)
        name = f"**{m}**" if m == "model" else m
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "reference_p808" in s:
        lines.append("| reference (real 16 kHz) | " + " | ".join(
            _fmt(k, s["reference_p808"]) if k == "p808" else "" for k in keys) + " |")
    return "\n".join(lines)


def _display_name(path: str, base: Path | None) -> str:
    if base is not None:
        try:
            return Path(path).resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return Path(path).name


def per_file_table(rows: list[dict], base: Path | None = None) -> str:
    """Markdown table of every file: the model's metrics beside sinc's SNR, LSD and ViSQOL."""
    keys = _metric_keys(rows)
    head = ["file", "duration (s)"] + [f"model {METRIC_LABELS[k]}" for k in keys]
    head += ["sinc SNR (dB)", "sinc LSD"] + (["sinc ViSQOL-a48"] if "visqol_a48" in keys else []) + ["model time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [_display_name(r["file"], base), f"{r['duration_s']:.2f}"]
        cells += [_fmt(k, r[f"model_{k}"]) for k in keys]
        cells += [_fmt("snr", r["sinc_snr"]), _fmt("lsd", r["sinc_lsd"])]
        cells += [_fmt("visqol_a48", r["sinc_visqol_a48"])] if "visqol_a48" in keys else []
        cells.append(f"{r['model_seconds']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DEFINITIONS = ("SNR in dB (higher is better); LSD, LSD-LF (below the input's Nyquist frequency) and LSD-HF "
               "(above it) in log10-power units (lower is better); HF energy: the output's energy above the "
               "input's Nyquist frequency relative to the reference's, dB (0 is right); pause noise: the same "
               "in the reference's pauses (frames 40 dB below its loudest), dB (0 is right, positive = hiss); "
               "ViSQOL-a48: ViSQOL v3 audio mode at 48 kHz (MOS-LQO 1-5; the field's headline with LSD); "
               "reported only: ViSQOL v3 speech mode with the lattice mapper, STOI (0-1); DNSMOS P.808 "
               "(MOS 1-5, non-intrusive). Definitions: README 'Metrics', src/speechsr/metrics.py. Empty cells: the "
               "metric could not score that file (counted as n/N in the mean table).")


def write_tables(rows: list[dict], out_dir: str | os.PathLike, title: str = "Evaluation",
                 base: Path | None = None) -> dict:
    """Write ``results.csv`` and ``results.md`` into ``out_dir``; returns :func:`summary` + paths."""
    out_dir = Path(out_dir)
    s = summary(rows)
    cols = columns(perceptual="model_visqol_a48" in (rows[0] if rows else {}))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ((f"{r[k]:.6g}" if math.isfinite(r[k]) else "") if isinstance(r[k], float) else r[k])
                    for k in cols})
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buf.getvalue())
    table = mean_table(rows)
    md = (f"# {title}\n\n## Means over {s['files']} file(s), {s['duration_s']:.1f} s of audio\n\n{table}\n\n"
          f"RTF (model seconds / audio seconds): {s['rtf']:.4f}\n\n{DEFINITIONS}\n\n"
          f"## Per file\n\n{per_file_table(rows, base)}\n")
    with atomic_path(md_path) as tmp:
        tmp.write_text(md)
    return {**s, "mean_table": table, "csv": str(csv_path), "md": str(md_path)}


def pick_listening_files(rows: list[dict], first: int = 3, worst: int = 3) -> list[int]:
    """Row indices for the listening page: the first ``first`` files, then the ``worst`` files by
    ViSQOL-a48 gain over sinc (by SNR gain when ViSQOL is absent), no file twice."""
    picked = list(range(min(first, len(rows))))
    key = "visqol_a48" if rows and "model_visqol_a48" in rows[0] else "snr"
    gains = [(r[f"model_{key}"] - r[f"sinc_{key}"], i) for i, r in enumerate(rows)
             if math.isfinite(r[f"model_{key}"] - r[f"sinc_{key}"])]
    for _, i in sorted(gains):
        if len(picked) >= min(first, len(rows)) + worst:
            break
        if i not in picked:
            picked.append(i)
    return picked


LISTEN_SIGNALS = ("reference", "low_res", "sinc", "spline", "model")
PAGE_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
              "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
              "text-align:right}th:first-child,td:first-child{text-align:left}"
              ".players{display:grid;grid-template-columns:repeat(5,1fr);gap:6px}"
              ".players div{font-size:90%}audio{width:100%}img{width:100%;border:1px solid #ddd}"
              "h2{margin-top:2em;border-bottom:1px solid #ddd}")


def write_listening_page(rows: list[dict], picks: list[int], upsampler: Upsampler,
                         out_dir: str | os.PathLike, title: str = "Evaluation",
                         base: Path | None = None, channel: str = "sox") -> Path:
    """Write ``results.html`` and ``listening/`` (16-bit WAVs and spectrogram PNGs) into ``out_dir``.

    The page shows the mean table, then for each picked row audio players for reference, low-res
    input, sinc, spline and model, and their spectrograms. Links are relative: the folder opens
    from the file system, nothing comes from the network. The picked files are upsampled again
    (deterministic) rather than kept in memory during the evaluation.
    """
    out_dir = Path(out_dir)
    listen = out_dir / "listening"
    listen.mkdir(parents=True, exist_ok=True)
    s = summary(rows)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{s['files']} file(s), {s['duration_s']:.1f} s of audio. {html.escape(DEFINITIONS)}</p>",
             _html_table(mean_table(rows))]
    for n, i in enumerate(picks):
        r = rows[i]
        res = reference_mode(r["file"], upsampler, channel)
        stem = f"{n:02d}_{Path(r['file']).stem}"
        for name in LISTEN_SIGNALS:
            audio.write_audio(listen / f"{stem}_{name}.wav", np.clip(res["signals"][name], -1, 1),
                              res["rates"][name], "PCM_16")
        figure = listen / f"{stem}_spectrograms.png"
        comparison_figure(figure, {name: (res["signals"][name], res["rates"][name]) for name in LISTEN_SIGNALS},
                          title=_display_name(r["file"], base))
        gain = r.get("model_visqol_a48", float("nan")) - r.get("sinc_visqol_a48", float("nan"))
        why = "one of the first files" if i == n else "among the worst by gain over sinc"
        parts.append(f"<h2>{html.escape(_display_name(r['file'], base))}</h2><p>{why}; "
                     f"model SNR {_fmt('snr', r['model_snr'])} dB (sinc {_fmt('snr', r['sinc_snr'])}), "
                     f"ViSQOL-a48 {_fmt('visqol_a48', r.get('model_visqol_a48', float('nan')))} "
                     f"(sinc {_fmt('visqol_a48', r.get('sinc_visqol_a48', float('nan')))}, gain {_fmt('visqol_a48', gain)}), "
                     f"LSD {_fmt('lsd', r['model_lsd'])} (sinc {_fmt('lsd', r['sinc_lsd'])}), "
                     f"HF energy {_fmt('hf_energy', r['model_hf_energy'])} dB</p><div class='players'>")
        for name in LISTEN_SIGNALS:
            label = f"{name} ({res['rates'][name] / 1000:g} kHz)"
            parts.append(f"<div>{label}<br><audio controls preload='none' "
                         f"src='listening/{stem}_{name}.wav'></audio></div>")
        parts.append(f"</div><img src='listening/{figure.name}' alt='spectrograms of {html.escape(stem)}'>")
    parts.append("</body></html>\n")
    page = out_dir / "results.html"
    with atomic_path(page) as tmp:
        tmp.write_text("".join(parts), encoding="utf-8")
    return page


def _html_table(markdown: str) -> str:
    """A Markdown table (as :func:`mean_table` writes it) as HTML."""
    lines = [ln.strip().strip("|").split("|") for ln in markdown.splitlines() if not ln.startswith("|---")]
    head, body = lines[0], lines[1:]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    for cells in body:
        out.append("<tr>" + "".join(f"<td>{html.escape(c.strip().strip('*'))}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"
