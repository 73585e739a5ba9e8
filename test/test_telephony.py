"""Telephone speech: the channel (speechsr.channel), the automatic choice of path
(speechsr.routing) in the scripts and the API, and --channel telephone in reference mode."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import PROJECT_ROOT, speech_like
from speechsr import audio, channel, evaluation, routing, settings

SR = 16000
TEL = routing.TELEPHONE_RATE


def band_db(y: np.ndarray, rate: int, lo: float, hi: float, ref: tuple = (500.0, 3000.0)) -> float:
    """Mean power density in [lo, hi) Hz relative to the mean density in ``ref``, in dB."""
    p = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / rate)
    return float(10 * np.log10(p[(f >= lo) & (f < hi)].mean() / p[(f >= ref[0]) & (f < ref[1])].mean()))


def phone_file(path: Path, seconds: float = 1.5, rate: int = TEL, seed: int = 0) -> Path:
    """Speech through the telephone channel, saved at ``rate`` Hz (8 kHz, or 16 kHz for an ambiguous file)."""
    y = channel.TelephoneChannel().apply(speech_like(seconds, seed=seed), SR, seed=seed)
    sf.write(path, audio.resample(y, TEL, rate), rate, subtype="PCM_16")
    return path


# ------------------------------------------------------------------ the channel

@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
@pytest.mark.parametrize("codec, encoding", [("ulaw", "u-law"), ("alaw", "a-law")])
def test_g711_is_bit_exact_with_sox(tmp_path, codec, encoding):
    pcm = np.arange(-32768, 32768, dtype=np.int32)  # every 16-bit value
    sf.write(tmp_path / "in.wav", pcm.astype(np.int16), TEL, subtype="PCM_16")
    subprocess.run(["sox", "-D", "-V1", str(tmp_path / "in.wav"), "-e", encoding, str(tmp_path / "out.wav")],
                   check=True, capture_output=True)
    theirs, rate = sf.read(tmp_path / "out.wav", dtype="int16")
    assert rate == TEL and sf.info(tmp_path / "out.wav").subtype == codec.upper()
    ours = np.round(channel.g711_roundtrip(pcm / 32768.0, codec) * 32768).astype(np.int32)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("codec", channel.CODECS)
def test_g711_round_trip_error_bounds(codec):
    x = np.linspace(-1, 1, 100001)
    err = np.abs(channel.g711_roundtrip(x, codec) - x)
    loud = np.abs(x) > 0.01
    assert (err[loud] / np.abs(x[loud])).max() < 0.05  # 8-bit log companding: a few percent
    assert err[~loud].max() < 5e-4  # fine steps near zero
    codes = (channel.ulaw_encode if codec == "ulaw" else channel.alaw_encode)(channel.to_pcm16(x))
    assert codes.dtype == np.uint8 and len(np.unique(codes)) > 250  # all 8 bits are used
    with pytest.raises(ValueError, match="codec"):
        channel.g711_roundtrip(x, "gsm")


def test_channel_band_edges_on_noise():
    x = np.random.default_rng(0).normal(0, 0.1, 3 * SR).astype(np.float32)
    y = channel.TelephoneChannel(codecs=("ulaw",)).apply(x, SR, seed=1)
    assert y.dtype == np.float32 and len(y) == 3 * TEL
    assert band_db(y, TEL, 0, 180) < -25  # below the band: down to the codec's noise floor
    assert band_db(y, TEL, 3650, 4000) < -25  # above 3.4 kHz
    assert abs(band_db(y, TEL, 400, 3300)) < 1.0  # the pass band is flat


def test_channel_is_seeded_and_varies():
    x = speech_like(1.0)
    ch = channel.TelephoneChannel(gain_db=3.0, edge_jitter_hz=50.0)
    a, b = ch.apply(x, SR, seed=7), ch.apply(x, SR, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ch.apply(x, SR, seed=8))
    # one gain and codec per segment: the segments of one call differ in level
    seg = ch.apply(np.tile(x[:SR // 4], 8), SR, seed=3, segment=TEL // 4)
    levels = [np.std(seg[i:i + TEL // 4]) for i in range(0, len(seg), TEL // 4)][1:]
    assert max(levels) / min(levels) > 1.05
    with pytest.raises(ValueError):
        channel.TelephoneChannel(low_hz=300, high_hz=4100)


def test_settings_keys_and_telephone_twins(tmp_path):
    lib = settings.load("data", PROJECT_ROOT / "settings" / "librispeech")
    assert lib.low_res_channel == "sox"  # settings files without the keys still load
    tel = settings.load("data", PROJECT_ROOT / "settings" / "telephony")
    assert tel.low_res_channel == "telephone" and tel.downsample_rate == TEL
    assert settings.load("model", PROJECT_ROOT / "settings" / "telephony").input_rate == TEL
    with pytest.raises(settings.SettingsError, match="telephone_band_hz"):
        settings.apply_overrides(tel, {"telephone_band_hz": [300, 4000]})
    from speechsr import splicing
    assert "low_res_channel" not in splicing.clip_params(lib)  # earlier sox manifests stay valid
    sf.write(tmp_path / "rec.wav", speech_like(4.5), SR, subtype="PCM_16")
    params = splicing.clip_params(tel)
    first = splicing.splice_recording("rec", tmp_path / "rec.wav", params, tmp_path / "a")
    splicing.splice_recording("rec", tmp_path / "rec.wav", params, tmp_path / "b")
    assert first["status"] == "done" and first["clips"] == 2
    for i in range(2):
        lr, rate = sf.read(tmp_path / "a" / "rec" / f"rec_{i:05d}.lr.wav", dtype="float32")
        hr, hr_rate = sf.read(tmp_path / "a" / "rec" / f"rec_{i:05d}.hr.wav", dtype="float32")
        assert rate == TEL and hr_rate == SR and len(lr) * 2 == len(hr) == 2 * SR
        assert band_db(lr, TEL, 3700, 4000) < -20 and band_db(lr, TEL, 0, 150) < -20
        np.testing.assert_array_equal(lr, sf.read(tmp_path / "b" / "rec" / f"rec_{i:05d}.lr.wav",
                                                  dtype="float32")[0])


# ------------------------------------------------------------------ the automatic choice

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("routing")
    x = speech_like(1.5)
    sf.write(d / "four.wav", audio.sox_downsample(x, SR, 4000), 4000, subtype="PCM_16")
    sf.write(d / "four_at_16k.wav", audio.resample(audio.sox_downsample(x, SR, 4000), 4000, SR), SR)
    sf.write(d / "wide.wav", x, SR, subtype="PCM_16")
    return {"dir": d, "four": d / "four.wav", "four_at_16k": d / "four_at_16k.wav", "wide": d / "wide.wav",
            "phone": phone_file(d / "phone.wav"), "phone_at_16k": phone_file(d / "phone_16k.wav", rate=SR)}


def test_choice_for_4k_8k_and_ambiguous_files(inputs, tmp_path):
    four_x = tmp_path / "4x.keras"
    missing, present = tmp_path / "none" / "model.keras", tmp_path / "tel.keras"
    present.write_bytes(b"stand-in")

    def pick(name, tel):
        return routing.choose_for_file(inputs[name], default_model=four_x, telephony_model=tel)

    for name in ("four", "four_at_16k", "wide"):  # 4 kHz content, or wideband (refused later)
        r = pick(name, present)
        assert (r.kind, r.model_path, r.telephone) == ("model", four_x, False), (name, r)
    for name in ("phone", "phone_at_16k"):  # 8 kHz, and a 16 kHz file whose content stops at 3.4 kHz
        r = pick(name, present)
        assert (r.kind, r.model_path, r.telephone) == ("model", present, True), (name, r)
        assert "telephone band" in r.reason
        r = pick(name, missing)  # no telephony model yet: sinc
        assert r.kind == "sinc" and r.model_path is None and "no telephony model" in r.reason
    assert "content stops at" in pick("four_at_16k", missing).reason
    explicit = routing.choose_for_file(inputs["phone"], model="mine.keras", default_model=four_x)
    assert explicit.model_path == Path("mine.keras") and not explicit.telephone
    # shipped models by name: --model pretrained / fast / telephony
    named = {n: routing.choose_for_file(inputs["phone"], model=n, default_model=four_x) for n in routing.MODEL_NAMES}
    assert named["pretrained"].model_path == four_x and not named["pretrained"].telephone
    assert named["fast"].model_path == routing.named_model_path("fast") and named["fast"].model_path.is_file()
    assert named["fast"].model_path.parent.name in ("pretrained-fast", "pretrained_fast")
    assert named["telephony"].model_path == routing.telephony_model_path() and named["telephony"].telephone


def test_sinc_fallback_streams_exactly_twice_the_samples():
    from speechsr import baselines
    x = channel.TelephoneChannel().apply(speech_like(1.0), SR, seed=2)[:7999]
    up = routing.SincUpsampler()
    whole = up.upsample(x)
    pieces = np.concatenate(list(up.stream([x[:1000], x[1000:1001], x[1001:]])))
    assert whole.dtype == np.float32 and len(whole) == len(pieces) == 2 * len(x)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    ref = baselines.sinc(x, TEL, SR)
    assert np.abs(whole - ref)[200:-200].max() < 1e-3  # the sinc baseline, streamed


def test_command_line_routes_8k_phone_speech(inputs, tmp_path, script_main):
    out = tmp_path / "phone_up.wav"
    r = script_main("upsample_audio_file.py", inputs["phone"], "-o", out)
    assert r.returncode == 0, r.stderr
    assert "telephone band" in r.stderr  # the one-line reason
    y, rate = sf.read(out, dtype="float32")
    n = sf.info(inputs["phone"]).frames
    assert rate == SR and len(y) == 2 * n
    if not routing.telephony_model_path().is_file():  # until the telephony model ships: sinc
        assert "sinc" in r.stderr
        x, _ = sf.read(inputs["phone"], dtype="float32")
        np.testing.assert_allclose(y, np.clip(routing.SincUpsampler().upsample(x), -1, 1), atol=1e-4)
    else:
        assert "pretrained-telephony" in r.stderr


def test_shipped_telephony_model_beats_sinc_on_the_bundled_example_through_the_channel():
    """models/pretrained-telephony on the ARCTIC example through the phone line (8 kHz, G.711)."""
    from speechsr import loading
    path = routing.telephony_model_path()
    assert path.is_file() and path.stat().st_size <= 20 * 2**20
    model = loading.load_upsampler(path, settings.load("upsampling"))
    assert model.settings.input_rate == TEL and model.settings.high_band_bands > 0
    res = evaluation.reference_mode(PROJECT_ROOT / "examples" / "arctic_a0007.wav", model, "telephone")
    m = res["metrics"]
    assert m["model"]["snr"] > m["sinc"]["snr"] + 2.0, m  # the band below 300 Hz restored
    assert m["model"]["lsd"] < m["sinc"]["lsd"] - 2.0 and m["model"]["lsd"] < m["spline"]["lsd"], m
    assert abs(m["model"]["hf_energy"]) < 10 and m["sinc"]["hf_energy"] < -40, m  # a band at about real level


def test_reference_mode_through_the_telephone_channel(inputs, tiny_model):
    from speechsr import loading
    up = settings.apply_overrides(settings.load("upsampling"), {"window_seconds": 0.512, "overlap_seconds": 0.128})
    four_x = loading.load_upsampler(tiny_model.path, up, runtime="tf")
    res = evaluation.reference_mode(inputs["wide"], four_x, "telephone")
    ref = res["signals"]["reference"]
    assert res["rates"]["low_res"] == TEL and len(res["signals"]["low_res"]) * 2 == len(ref)
    assert len(res["signals"]["model"]) == len(ref) and set(res["metrics"]) == {"model", "sinc", "spline"}
    assert band_db(res["signals"]["low_res"], TEL, 3700, 4000) < -20
    sox = evaluation.reference_mode(inputs["wide"], four_x)
    assert sox["rates"]["low_res"] == 4000 and res["metrics"]["sinc"]["snr"] != sox["metrics"]["sinc"]["snr"]
    fallback = evaluation.reference_mode(inputs["wide"], routing.SincUpsampler(), "telephone")
    np.testing.assert_allclose(fallback["signals"]["model"], fallback["signals"]["sinc"], atol=1e-3)
    np.testing.assert_array_equal(fallback["signals"]["low_res"], res["signals"]["low_res"])  # seeded by name
    with pytest.raises(ValueError, match="channel"):
        evaluation.reference_mode(inputs["wide"], four_x, "radio")


def test_command_line_reference_with_telephone_channel(inputs, tmp_path, script_main):
    out = tmp_path / "ref_up.wav"
    r = script_main("upsample_audio_file.py", inputs["wide"], "--reference", "--channel", "telephone",
                    "--no-perceptual", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "telephone channel" in r.stdout and "sinc" in r.stdout.split("\n", 2)[2]
    assert sf.info(out).samplerate == SR


def test_api_chooses_the_telephone_path(inputs, caplog):
    import speechsr
    x, rate = sf.read(inputs["phone"], dtype="float32")
    with caplog.at_level(logging.INFO, logger="speechsr"):
        y, out_rate = speechsr.upsample(x, rate)
    assert out_rate == SR and len(y) == 2 * len(x) and "telephone band" in caplog.text
    phone = speechsr.load_model("telephony")
    if not routing.telephony_model_path().is_file():
        assert phone.runtime == "sinc" and phone.input_rate == TEL
        np.testing.assert_allclose(y, routing.SincUpsampler().upsample(x), atol=1e-5)
    with pytest.raises(ValueError, match="rate"):
        speechsr.load_model("auto")
