"""The input's own band kept (model setting ``low_band_from_input``, speechsr.low_band).

The model is the session's tiny perturbed one (conftest), so its low band differs from the input's
and a replacement that did nothing, or a seam at a window edge, would show.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import speech_like, upsampling_settings
from speechsr import baselines, geometry, low_band
from speechsr.inference import Upsampler


def band_spectrum(x: np.ndarray, rate: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Complex spectrum of ``x`` (Hann window) between ``lo_hz`` and ``hi_hz``."""
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return np.fft.rfft(x * np.hanning(len(x)))[(f >= lo_hz) & (f < hi_hz)]


def band_db(x: np.ndarray, rate: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Magnitude spectrum (dB) of ``x`` between ``lo_hz`` and ``hi_hz``."""
    return 20 * np.log10(np.abs(band_spectrum(x, rate, lo_hz, hi_hz)) + 1e-9)


#: short windows, so a 3-4 s clip spans several windows and batches
WINDOWS = dict(window_seconds=0.512, overlap_seconds=0.256, batch_size=3)


@pytest.fixture(scope="module")
def kept(tiny_model):
    s = dataclasses.replace(tiny_model.settings, low_band_from_input=True)
    up = upsampling_settings(**WINDOWS)
    return Upsampler(tiny_model.model, s, up), Upsampler(tiny_model.model, tiny_model.settings, up)


@pytest.mark.parametrize("factor", [2, 4])
def test_crossover_passes_below_start_and_stops_above_stop(factor):
    h = low_band.crossover_taps(factor)
    gain = np.abs(np.fft.rfft(h, 1 << 16))
    f = np.linspace(0, factor, gain.size)  # fractions of the input's Nyquist
    assert np.all(np.abs(20 * np.log10(gain[f <= low_band.START])) < 0.01)
    assert np.all(20 * np.log10(gain[f >= low_band.STOP] + 1e-12) < -80)
    assert low_band.context(factor) == -(-(len(h) // 2) // factor)


def test_low_band_is_the_inputs_and_high_band_the_models(kept):
    with_input, model_only = kept
    x = speech_like(3.0, 4000, seed=11)
    y, y_model = with_input.upsample(x), model_only.upsample(x)
    sinc = baselines.sinc(x, 4000, 16000)
    inner = slice(4000, len(y) - 4000)  # away from the signal's own ends
    # below the crossover: the input's interpolation, not the model's re-synthesis
    err_kept = np.abs(band_db(y[inner], 16000, 100, 1700) - band_db(sinc[inner], 16000, 100, 1700))
    err_model = np.abs(band_db(y_model[inner], 16000, 100, 1700) - band_db(sinc[inner], 16000, 100, 1700))
    assert np.median(err_kept) < 0.1 < np.median(err_model)
    # above the input's Nyquist: the model's band, untouched (the difference 40 dB below the band)
    kept_hf, model_hf = band_spectrum(y[inner], 16000, 2100, 7900), band_spectrum(y_model[inner], 16000, 2100, 7900)
    assert np.sum(np.abs(kept_hf - model_hf) ** 2) < 1e-4 * np.sum(np.abs(model_hf) ** 2)


def test_kept_band_has_no_seams_and_streams_like_the_whole_array(kept):
    with_input, _ = kept
    assert geometry.receptive_context(with_input.settings) == \
        geometry.receptive_context(dataclasses.replace(with_input.settings, low_band_from_input=False)) + low_band.context(4)
    x = speech_like(4.3, 4000, seed=3)
    rng = np.random.default_rng(5)
    cuts = np.cumsum(rng.integers(1, 2500, size=200))
    streamed = np.concatenate(list(with_input.stream(iter(np.split(x, cuts[cuts < len(x)])))))
    whole = with_input.upsample(x)
    assert np.array_equal(streamed, whole)
    # the same replacement on the whole signal at once (no windows) agrees: the window edges are discarded
    direct = low_band.replace(x[None], whole_model_output(with_input, x))[0]
    keep = slice(0, (len(x) - with_input.window) * with_input.factor)  # before the last window's zero-padded end
    assert np.abs(whole[keep] - direct[keep]).max() < 1e-3 * np.abs(direct).max()


def whole_model_output(upsampler: Upsampler, x: np.ndarray) -> np.ndarray:
    """The plain model output for ``x``, windowed as usual (no replacement): ``[1, len(x) * factor]``."""
    plain = Upsampler(upsampler.model, dataclasses.replace(upsampler.settings, low_band_from_input=False),
                      upsampling_settings(**WINDOWS))
    return plain.upsample(x)[None]
