"""The resamplers low-rate files are made with (speechsr.resamplers) and their use in splicing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import speech_like
from speechsr import bandlimit, resamplers, settings, splicing


@pytest.mark.parametrize("kind", resamplers.RESAMPLERS)
def test_each_resampler_keeps_level_and_length(kind):
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = resamplers.downsample(tone, 16000, 8000, kind)
    assert y.dtype == np.float32 and y.shape == (8000,)
    assert np.sqrt(np.mean(y[500:-500] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    x4 = resamplers.downsample(speech_like(1.0), 16000, 4000, kind)
    assert x4.shape == (4000,)


def test_quick_resamplers_keep_content_at_the_band_edge():
    """What the 8k model must not depend on: soxr 'QQ' and resample_poly leave energy at Nyquist, sox doesn't."""
    noise = np.random.default_rng(0).normal(size=48000).astype(np.float32) * 0.1
    edge = {k: bandlimit.edge_energy_db(resamplers.downsample(noise, 16000, 8000, k)) for k in resamplers.RESAMPLERS}
    assert edge["soxr_qq"] > -25 and edge["resample_poly"] > -25 and edge["hann_sinc"] > -25
    assert edge["sox"] < -45 and edge["soxr_vhq"] < -45


def test_choice_is_seeded_by_name_and_covers_the_list():
    kinds = resamplers.RESAMPLERS
    assert resamplers.choose(kinds, "rec1", 5) == resamplers.choose(kinds, "rec1", 5)
    assert {resamplers.choose(kinds, f"rec{i}") for i in range(200)} == set(kinds)
    with pytest.raises(ValueError, match="resampler"):
        resamplers.downsample(np.zeros(10), 16000, 8000, "magic")


def test_splicing_with_the_resamplers_channel(tmp_path):
    sf.write(tmp_path / "rec.wav", speech_like(4.0), 16000, subtype="PCM_16")
    s = settings.apply_overrides(settings.load("data", settings.PROJECT_ROOT / "settings" / "fullband_8k"),
                                 {"resamplers": ["resample_poly", "soxr_qq"]})
    params = splicing.clip_params(s)
    assert params["resamplers"] == ["resample_poly", "soxr_qq"] and params["low_res_channel"] == "resamplers"
    result = splicing.splice_recording("rec", tmp_path / "rec.wav", params, tmp_path / "clips")
    assert result["status"] == "done" and result["clips"] == 2
    lr, rate = sf.read(tmp_path / "clips" / "rec" / "rec_00000.lr.wav", dtype="float32")
    hr, _ = sf.read(tmp_path / "clips" / "rec" / "rec_00000.hr.wav", dtype="float32")
    kind = resamplers.choose(["resample_poly", "soxr_qq"], "rec", s.channel_seed)
    want = resamplers.downsample(sf.read(tmp_path / "rec.wav", dtype="float32")[0], 16000, 8000, kind)[:16000]
    assert rate == 8000 and len(lr) * 2 == len(hr)
    np.testing.assert_allclose(lr, want, atol=1 / 32768 * 1.01)  # the drawn resampler, 16-bit clips
