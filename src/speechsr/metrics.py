"""Quality metrics, defined once for the whole project (README "Metrics").

- SNR (dB) = 20 log10(||y|| / ||y - y_hat||) over the whole signal.
- LSD = mean over STFT frames of sqrt(mean over frequency bins of (log10 P - log10 P_hat)^2),
  with P = |STFT|^2 + 1e-10, n_fft 2048, hop 512, Hann window (librosa, centred frames).

``y`` is the reference and ``y_hat`` the estimate, both ``[time]`` at the same rate; the
longer one is cut to the shorter one's length.
"""

from __future__ import annotations

import numpy as np
import librosa

EPS = 1e-10
N_FFT = 2048
HOP = 512


def _align(y: np.ndarray, y_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(y), len(y_hat))
    return np.asarray(y[:n], dtype=np.float64), np.asarray(y_hat[:n], dtype=np.float64)


def snr(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Signal-to-noise ratio in dB of estimate ``y_hat`` against reference ``y`` (both ``[time]``)."""
    y, y_hat = _align(y, y_hat)
    noise = np.linalg.norm(y - y_hat)
    if noise == 0:
        return float("inf")
    return float(20 * np.log10(np.linalg.norm(y) / noise))


def log_power_spectrogram(x: np.ndarray) -> np.ndarray:
    """log10(|STFT|^2 + 1e-10), shape ``[freq_bins, frames]`` (n_fft 2048, hop 512, Hann)."""
    spec = librosa.stft(np.asarray(x, dtype=np.float64), n_fft=N_FFT, hop_length=HOP, window="hann")
    return np.log10(np.abs(spec) ** 2 + EPS)


def lsd(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Log-spectral distance (log10 power units) of ``y_hat`` against ``y`` (both ``[time]``)."""
    y, y_hat = _align(y, y_hat)
    diff = log_power_spectrogram(y) - log_power_spectrogram(y_hat)
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))


def snr_lsd(y: np.ndarray, y_hat: np.ndarray) -> dict:
    """Both metrics as ``{"snr": dB, "lsd": value}``."""
    return {"snr": snr(y, y_hat), "lsd": lsd(y, y_hat)}
