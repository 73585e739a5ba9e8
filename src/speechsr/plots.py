"""Figures (matplotlib, Agg, no pyplot state), saved atomically as PNG.

- :func:`comparison_figure`: one row per signal: spectrogram 0-8 kHz (same dB colour scale,
  same 32 ms / 8 ms analysis at every rate) and a short waveform excerpt.
- :func:`evaluation_figure`: SNR and LSD per method (model, sinc, spline) across files.
- :func:`training_curves`: a run's losses and validation figures per epoch (``curves.png``).
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from speechsr.audio import atomic_path  # noqa: E402

METHODS = ("model", "sinc", "spline")
FRAME_SECONDS, HOP_SECONDS = 0.032, 0.008
DYNAMIC_RANGE_DB = 90.0


def _save(fig: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def spectrogram_db(x: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """Power spectrogram in dB ``[freq_bins, frames]`` (Hann, 32 ms frames, 8 ms hop) and the hop in s."""
    n_fft = max(16, int(round(FRAME_SECONDS * rate)))
    hop = max(1, int(round(HOP_SECONDS * rate)))
    x = np.asarray(x, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2 / np.hanning(n_fft).sum() ** 2
    return 10 * np.log10(spec.T + 1e-12), hop / rate


def _excerpt_start(x: np.ndarray, rate: int, seconds: float) -> float:
    """Start time (s) of the loudest ``seconds`` of ``x``."""
    n = max(1, int(seconds * rate))
    if x.size <= n:
        return 0.0
    energy = np.convolve(np.asarray(x, np.float64) ** 2, np.ones(n), mode="valid")
    return float(np.argmax(energy[::max(1, n // 4)]) * max(1, n // 4) / rate)


def comparison_figure(path: str | os.PathLike, signals: dict, metrics: dict | None = None,
                      title: str = "", max_seconds: float = 20.0, excerpt_seconds: float = 0.03,
                      max_hz: float = 8000.0) -> None:
    """Spectrogram + waveform rows for ``signals`` (name -> (``[time]`` array, rate Hz)).

    ``metrics`` (name -> {"snr", "lsd", optionally "hf_energy", "visqol_a48", "p808"}) adds an inset
    to matching rows. Only the first
    ``max_seconds`` are drawn; the excerpt (``excerpt_seconds``) is the loudest stretch of the
    first signal, at the same time in every row.
    """
    metrics = metrics or {}
    names = list(signals)
    first, first_rate = signals[names[0]]
    excerpt_t0 = _excerpt_start(np.asarray(first)[:int(max_seconds * first_rate)], first_rate, excerpt_seconds)
    specs = {}
    for name in names:
        x, rate = signals[name]
        specs[name] = spectrogram_db(np.asarray(x)[:int(max_seconds * rate)], rate)
    top = max(s.max() for s, _ in specs.values())
    vmin, vmax = top - DYNAMIC_RANGE_DB, top

    fig = Figure(figsize=(12, 2.2 * len(names) + 0.6), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False, gridspec_kw={"width_ratios": [4, 1]})
    image = None
    for row, name in enumerate(names):
        x, rate = signals[name]
        spec, hop_s = specs[name]
        ax_s, ax_w = axes[row]
        image = ax_s.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                            extent=(0, spec.shape[1] * hop_s, 0, rate / 2), interpolation="nearest")
        ax_s.set_ylim(0, max_hz)
        ax_s.set_facecolor("black")
        ax_s.set_ylabel(f"{name}\nHz ({rate / 1000:g} kHz)")
        if name in metrics:
            m = metrics[name]
            text = [f"SNR {m['snr']:.2f} dB", f"LSD {m['lsd']:.3f}"]
            text += [f"HF energy {m['hf_energy']:.1f} dB"] if np.isfinite(m.get("hf_energy", np.nan)) else []
            text += [f"ViSQOL-a48 {m['visqol_a48']:.2f}"] if np.isfinite(m.get("visqol_a48", np.nan)) else []
            text += [f"P.808 {m['p808']:.2f}"] if np.isfinite(m.get("p808", np.nan)) else []
            ax_s.text(0.99, 0.95, "\n".join(text), transform=ax_s.transAxes,
                      ha="right", va="top", color="white", fontsize=9,
                      bbox={"facecolor": "black", "alpha": 0.5, "edgecolor": "none"})
        a = int(excerpt_t0 * rate)
        seg = np.asarray(x)[a:a + max(2, int(excerpt_seconds * rate))]
        ax_w.plot((a + np.arange(seg.size)) / rate * 1000, seg, lw=0.8, marker="." if rate < 8000 else None,
                  ms=2)
        ax_w.set_ylabel("amplitude")
        ax_w.grid(alpha=0.3)
    axes[-1][0].set_xlabel("time (s)")
    axes[-1][1].set_xlabel("time (ms)")
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), label="power (dB)", pad=0.01, aspect=30)
    fig.suptitle(title or "spectrograms")
    _save(fig, path)


def evaluation_figure(path: str | os.PathLike, table_rows: list[dict]) -> None:
    """Box plots (with the per-file points) of SNR (dB) and LSD per method across files.

    ``table_rows`` are :func:`speechsr.evaluation.evaluate` rows (``model_snr``, ``sinc_lsd``, ...).
    """
    fig = Figure(figsize=(9, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    rng = np.random.default_rng(0)
    for ax, metric, label in ((axes[0], "snr", "SNR (dB), higher is better"),
                              (axes[1], "lsd", "LSD, lower is better")):
        data = [[float(r[f"{m}_{metric}"]) for r in table_rows if np.isfinite(float(r[f"{m}_{metric}"]))]
                for m in METHODS]
        ax.boxplot(data, tick_labels=list(METHODS), showmeans=True)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.08, 0.08, len(values)), values, s=8, alpha=0.5, color="tab:blue")
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{len(table_rows)} file(s)")
    _save(fig, path)


CURVE_PANELS = (("losses", ("train_loss", "val_loss"), "loss"),
                ("GAN", ("d_loss", "g_adversarial", "feature_matching"), "loss"),
                ("SNR (dB)", ("val_snr",), "dB"),
                ("LSD", ("val_lsd", "val_lsd_hf"), "log10 power"),
                ("energy vs reference (dB; 0 is right)", ("val_hf_energy", "val_pause_noise"), "dB"))


def training_curves(path: str | os.PathLike, history_rows: list[dict]) -> None:
    """Per-epoch curves of a run (``history.csv`` rows): losses, GAN losses, validation figures.

    Panels whose columns the run does not have (e.g. GAN losses) are left out.
    """
    def column(key):
        values = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in history_rows]
        return values if np.isfinite(values).any() else None

    panels = [(title, [(k, column(k)) for k in keys if column(k) is not None], unit)
              for title, keys, unit in CURVE_PANELS]
    panels = [p for p in panels if p[1]]
    epochs = [int(r["epoch"]) for r in history_rows]
    fig = Figure(figsize=(4 * len(panels), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, series, unit) in zip(axes, panels):
        for key, values in series:
            ax.plot(epochs, values, marker=".", label=key)
        finite = [v for _, vs in series for v in vs if np.isfinite(v)]
        if title == "losses" and finite and min(finite) > 0 and max(finite) / min(finite) > 10:
            ax.set_yscale("log")  # losses that fall by decades
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
