"""Quality metrics, defined once for the whole project (README "Metrics").

- SNR (dB) = 20 log10(||y|| / ||y - y_hat||) over the whole signal.
- LSD = mean over STFT frames of sqrt(mean over frequency bins of (log10 P - log10 P_hat)^2),
  with P = max(|STFT|^2, 1e-8), n_fft 2048, hop 512, Hann window, centred frames with reflect
  padding: AP-BWE's and NVSR's definition (``../shared/data/peer-samples/README.md``).
  LSD-LF / LSD-HF: the same over the bins below / at or above the input's Nyquist frequency.
- High-band energy (dB): 10 log10 of the output's STFT energy at or above the input's Nyquist
  frequency over the reference's, whole file (0 dB is right; sinc gives about -80 dB).
- Pause noise (dB): the same ratio over the frames where the reference's total energy is at
  least 40 dB below its loudest frame (hiss added in silences; 0 dB is right).
- HF coherence (reported only): the correlation coefficient of the output's band just above the
  input's Nyquist frequency (from it to 1.5 times it: 2-3 kHz for 4 kHz input) with the
  reference's, from their STFTs. 1: the reference's band up to a gain; 0: uncorrelated, e.g. the
  right spectrum with random phase, which can only add error (lower SNR).
- ViSQOL-a48 (headline, MOS-LQO 1-5): ViSQOL v3 in *audio* mode at 48 kHz, both signals
  resampled to 48 kHz (soxr HQ, as librosa's default): AP-BWE's ``cal_visqol_48k.py`` protocol.
- Reported only: ViSQOL v3 speech mode at 16 kHz with the lattice mapper (C++ default), STOI
  (0-1); listening check: DNSMOS P.808 MOS (non-intrusive, 1-5). See :func:`perceptual`.

``y`` is the reference and ``y_hat`` the estimate, both ``[time]`` at the same rate (Hz); the
longer one is cut to the shorter one's length.
"""

from __future__ import annotations

import warnings

import numpy as np
import librosa

#: Floor of the STFT power before log10 (AP-BWE's ``clamp(1e-8)``); also keeps ratios finite.
POWER_FLOOR = 1e-8
EPS = 1e-10  # added to band sums before a ratio (high-band energy, pause noise)
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


def _stft(x: np.ndarray) -> np.ndarray:
    """Complex STFT ``[freq_bins, frames]``: n_fft 2048, hop 512, Hann, centred with reflect padding."""
    return librosa.stft(np.asarray(x, dtype=np.float64), n_fft=N_FFT, hop_length=HOP, window="hann",
                        center=True, pad_mode="reflect")


def _power_spectrogram(x: np.ndarray) -> np.ndarray:
    """|STFT|^2, ``[freq_bins, frames]`` (:func:`_stft`)."""
    return np.abs(_stft(x)) ** 2


def log_power_spectrogram(x: np.ndarray) -> np.ndarray:
    """log10(max(|STFT|^2, 1e-8)), shape ``[freq_bins, frames]`` (n_fft 2048, hop 512, Hann)."""
    return np.log10(np.maximum(_power_spectrogram(x), POWER_FLOOR))


def lsd(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Log-spectral distance (log10 power units) of ``y_hat`` against ``y`` (both ``[time]``)."""
    y, y_hat = _align(y, y_hat)
    diff = log_power_spectrogram(y) - log_power_spectrogram(y_hat)
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))


def snr_lsd(y: np.ndarray, y_hat: np.ndarray) -> dict:
    """Both metrics as ``{"snr": dB, "lsd": value}``."""
    return {"snr": snr(y, y_hat), "lsd": lsd(y, y_hat)}


PAUSE_THRESHOLD_DB = 40.0


def _high_bins(rate: int, cutoff_hz: float) -> np.ndarray:
    """Boolean mask ``[freq_bins]`` of the STFT bins at or above ``cutoff_hz``."""
    return librosa.fft_frequencies(sr=rate, n_fft=N_FFT) >= cutoff_hz


def lsd_bands(y: np.ndarray, y_hat: np.ndarray, rate: int, cutoff_hz: float) -> dict:
    """``{"lsd", "lsd_lf", "lsd_hf"}``: LSD over all bins, below and at/above ``cutoff_hz`` (Hz)."""
    y, y_hat = _align(y, y_hat)
    diff2 = (log_power_spectrogram(y) - log_power_spectrogram(y_hat)) ** 2
    high = _high_bins(rate, cutoff_hz)
    band = lambda mask: float(np.mean(np.sqrt(np.mean(diff2[mask], axis=0))))  # noqa: E731
    return {"lsd": band(np.ones_like(high)), "lsd_lf": band(~high), "lsd_hf": band(high)}


def _ratio_db(num: float, den: float) -> float:
    if den <= 0:
        return float("nan")
    return float(10 * np.log10(max(num, 1e-30) / den))


def high_band_energy_db(y: np.ndarray, y_hat: np.ndarray, rate: int, cutoff_hz: float) -> float:
    """Output's energy at or above ``cutoff_hz`` relative to the reference's, dB (0 = right)."""
    y, y_hat = _align(y, y_hat)
    high = _high_bins(rate, cutoff_hz)
    return _ratio_db(_power_spectrogram(y_hat)[high].sum(), _power_spectrogram(y)[high].sum())


def pause_noise_db(y: np.ndarray, y_hat: np.ndarray, rate: int, cutoff_hz: float,
                   threshold_db: float = PAUSE_THRESHOLD_DB) -> float:
    """High-band energy of the output minus the reference's, dB, in the reference's pauses.

    Pauses: STFT frames whose total reference energy is at least ``threshold_db`` below the
    loudest frame's. NaN when the reference has no such frame.
    """
    y, y_hat = _align(y, y_hat)
    p, p_hat = _power_spectrogram(y), _power_spectrogram(y_hat)
    frame_db = 10 * np.log10(p.sum(axis=0) + EPS)
    pauses = frame_db <= frame_db.max() - threshold_db
    if not pauses.any():
        return float("nan")
    high = _high_bins(rate, cutoff_hz)
    return _ratio_db(p_hat[high][:, pauses].sum() + EPS, p[high][:, pauses].sum() + EPS)


def band_coherence(y: np.ndarray, y_hat: np.ndarray, rate: int, low_hz: float, high_hz: float) -> float:
    """Correlation coefficient of ``y_hat``'s ``[low_hz, high_hz)`` band with ``y``'s (Hz), from
    their STFTs: Re sum(Y conj(Y_hat)) / sqrt(sum |Y|^2 sum |Y_hat|^2) over those bins and all frames.

    1: the reference's band up to a gain; 0: uncorrelated (e.g. the right magnitudes with random
    phase); -1: inverted. NaN when either band is silent.
    """
    y, y_hat = _align(y, y_hat)
    band = _high_bins(rate, low_hz) & ~_high_bins(rate, high_hz)
    a, b = _stft(y)[band], _stft(y_hat)[band]
    den = np.sqrt(np.sum(np.abs(a) ** 2) * np.sum(np.abs(b) ** 2))
    if den <= EPS:
        return float("nan")
    return float(np.real(np.sum(a * np.conj(b))) / den)


#: HF coherence is measured from the input's Nyquist frequency up to this multiple of it.
COHERENCE_SPAN = 1.5


def hf_coherence(y: np.ndarray, y_hat: np.ndarray, rate: int, cutoff_hz: float) -> float:
    """HF coherence: :func:`band_coherence` from ``cutoff_hz`` (the input's Nyquist, Hz) up to
    :data:`COHERENCE_SPAN` times it (2-3 kHz for 4 kHz input)."""
    return band_coherence(y, y_hat, rate, cutoff_hz, COHERENCE_SPAN * cutoff_hz)


def spectral(y: np.ndarray, y_hat: np.ndarray, rate: int, cutoff_hz: float) -> dict:
    """The fast metrics: SNR, LSD (+LF/HF), high-band energy and pause noise (dB)."""
    return {"snr": snr(y, y_hat), **lsd_bands(y, y_hat, rate, cutoff_hz),
            "hf_energy": high_band_energy_db(y, y_hat, rate, cutoff_hz),
            "pause_noise": pause_noise_db(y, y_hat, rate, cutoff_hz)}


# -- perceptual metrics (slow; one scorer per process, created on first use) -----------------
PERCEPTUAL_RATE = 16000
DNSMOS_PEAK = 0.7
DNSMOS_SECONDS = 9.01
_scorers: dict = {}


A48_RATE = 48000


def _visqol(mode: str = "speech"):
    """One ViSQOL scorer per process and mode: ``speech`` (16 kHz, lattice mapper, set
    explicitly since it is the C++ tool's default) or ``audio`` (48 kHz, the SVR model)."""
    if mode not in _scorers:
        from visqol import VisqolApi  # optional extra [metrics]: imported where used, like pystoi, speechmos
        api = VisqolApi()
        if mode == "speech":
            api.create(mode="speech", use_lattice_model=True)
        else:
            api.create(mode="audio")
        _scorers[mode] = api
    return _scorers[mode]


def visqol_a48(y: np.ndarray, y_hat: np.ndarray, rate: int = PERCEPTUAL_RATE) -> float:
    """ViSQOL-a48: ViSQOL v3 audio-mode MOS-LQO (1-5) of ``y_hat`` against ``y`` (``[time]`` at
    ``rate`` Hz), both resampled to 48 kHz first (soxr HQ). AP-BWE's protocol; 4.73 for ``y``
    against itself."""
    import soxr
    y, y_hat = _align(y, y_hat)
    if rate != A48_RATE:
        y, y_hat = (soxr.resample(s, rate, A48_RATE, quality="HQ") for s in (y, y_hat))
    return float(_visqol("audio").measure_from_arrays(y, y_hat, A48_RATE).moslqo)


def visqol(y: np.ndarray, y_hat: np.ndarray, rate: int = PERCEPTUAL_RATE) -> float:
    """ViSQOL v3 speech-mode MOS-LQO (1-5, lattice mapper) of ``y_hat`` against ``y``, both
    ``[time]`` at 16 kHz. Reported only: it barely separates the peers from sinc."""
    if rate != PERCEPTUAL_RATE:
        raise ValueError(f"ViSQOL speech mode needs {PERCEPTUAL_RATE} Hz, got {rate}")
    y, y_hat = _align(y, y_hat)
    return float(_visqol("speech").measure_from_arrays(y, y_hat, rate).moslqo)


def stoi(y: np.ndarray, y_hat: np.ndarray, rate: int = PERCEPTUAL_RATE) -> float:
    """Short-time objective intelligibility (0-1) of ``y_hat`` against ``y`` (``[time]``, Hz)."""
    from pystoi import stoi as _stoi  # optional extra [metrics]
    y, y_hat = _align(y, y_hat)
    return float(_stoi(y, y_hat, rate, extended=False))


def dnsmos_p808(x: np.ndarray, rate: int = PERCEPTUAL_RATE) -> float:
    """DNSMOS P.808 MOS (1-5, non-intrusive) of ``x`` ``[time]`` at 16 kHz.

    Protocol: the signal is peak-normalised to 0.7; speechmos repeats clips shorter than its
    9.01 s segment to fill one and averages 9.01 s segments hopped by 1 s.
    """
    if rate != PERCEPTUAL_RATE:
        raise ValueError(f"DNSMOS needs {PERCEPTUAL_RATE} Hz, got {rate}")
    from speechmos import dnsmos  # optional extra [metrics]
    x = np.asarray(x, dtype=np.float64)
    peak = np.max(np.abs(x)) if len(x) else 0.0
    if peak == 0:
        raise ValueError("silent signal")
    return float(dnsmos.run((DNSMOS_PEAK * x / peak).astype(np.float32), rate)["p808_mos"])


def guarded(fn, *args) -> float:
    """``fn(*args)``, or NaN when the metric cannot score the signal (too short, silent)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(fn(*args))
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError, FloatingPointError):
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def perceptual(y: np.ndarray, y_hat: np.ndarray, rate: int = PERCEPTUAL_RATE) -> dict:
    """``{"visqol_a48", "visqol", "stoi", "p808"}`` of ``y_hat`` against ``y``; NaN where a metric
    cannot score."""
    return {"visqol_a48": guarded(visqol_a48, y, y_hat, rate), "visqol": guarded(visqol, y, y_hat, rate),
            "stoi": guarded(stoi, y, y_hat, rate), "p808": guarded(dnsmos_p808, y_hat, rate)}
