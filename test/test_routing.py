"""Routing by content (speechsr.routing): one input class each, the path it takes, and an output
level within 3 dB of the input's, for files, pipes and the Python API."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import run_script, speech_like
from speechsr import audio, channel, resamplers, routing

SR, TEL = 16000, routing.TELEPHONE_RATE


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2)))


def phone(seconds: float = 3.0, codec: str = "ulaw", seed: int = 0) -> np.ndarray:
    """Speech through the telephone line: 8 kHz, 300-3400 Hz, G.711 decoded (float32 [time])."""
    return channel.TelephoneChannel(codecs=(codec,)).apply(speech_like(seconds, seed=seed), SR, seed=seed)


def full_band(kind: str, seconds: float = 3.0, seed: int = 1) -> np.ndarray:
    """Speech resampled to 8 kHz by resampler ``kind``: content from 0 Hz to about 3.9 kHz."""
    return resamplers.downsample(speech_like(seconds, seed=seed), SR, TEL, kind)


def two_khz_at_8k(seconds: float = 3.0, seed: int = 2) -> np.ndarray:
    """4 kHz speech (sox) brought to 8 kHz: content stops at 2 kHz whatever the container's rate."""
    return resamplers.downsample(resamplers.downsample(speech_like(seconds, seed=seed), SR, 4000, "sox"),
                                 4000, TEL, "soxr_vhq")


#: name -> (signal maker, file subtype, expected input class)
CLASSES = {
    "mu-law file": (lambda: phone(codec="ulaw"), "ULAW", "telephone"),
    "A-law file": (lambda: phone(codec="alaw"), "ALAW", "telephone"),
    "decoded mu-law as PCM": (lambda: phone(codec="ulaw"), "PCM_16", "telephone"),
    "phone band, level changed (off the G.711 grid)": (lambda: 0.8 * phone(codec="alaw"), "FLOAT", "telephone"),
    "full band, soxr VHQ": (lambda: full_band("soxr_vhq"), "PCM_16", "fullband_8k"),
    "full band, sox rate -h": (lambda: full_band("sox"), "PCM_16", "fullband_8k"),
    "full band, resample_poly": (lambda: full_band("resample_poly"), "PCM_16", "fullband_8k"),
    "full band, soxr quick": (lambda: full_band("soxr_qq"), "FLOAT", "fullband_8k"),
    "full band, Hann sinc": (lambda: full_band("hann_sinc"), "PCM_16", "fullband_8k"),
    "2 kHz content at 8 kHz": (two_khz_at_8k, "PCM_16", "4x"),
}


@pytest.fixture(scope="module")
def class_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("classes")
    out = {}
    for i, (name, (make, subtype, expected)) in enumerate(CLASSES.items()):
        path = d / f"class{i}.wav"
        sf.write(path, make(), TEL, subtype=subtype)
        out[name] = (path, expected)
    return out


@pytest.mark.parametrize("name", list(CLASSES))
def test_each_input_class_takes_its_path(class_files, name, tmp_path):
    path, expected = class_files[name]
    route = routing.choose_for_file(path, default_model=tmp_path / "4x.keras")
    assert route.input_class == expected, (name, route)
    if expected == "telephone":
        assert route.telephone and "telephone band" in route.reason
    elif expected == "fullband_8k":
        assert not route.telephone and "full-band" in route.reason
        assert route.kind == ("model" if routing.fullband_8k_model_path().is_file() else "sinc")
    else:
        assert route.model_path == tmp_path / "4x.keras" and "content stops at" in route.reason


def test_rate_alone_never_picks_the_telephony_model():
    assert routing.classify(TEL)[0] == "fullband_8k"  # no content seen: the safe full-band path
    assert routing.classify(TEL, np.zeros(TEL))[0] == "fullband_8k"  # silent start
    assert routing.classify(4000)[0] == "4x"
    assert routing.choose(TEL, model="telephony").telephone  # --model still wins


def test_g711_grid_is_recognised_only_on_the_grid():
    x = phone(codec="ulaw")
    assert routing.g711_coding(x) == "mu-law" and routing.g711_coding(phone(codec="alaw")) == "A-law"
    assert routing.g711_coding(x * 0.9) is None  # level changed after decoding
    assert routing.g711_coding(full_band("soxr_vhq")) is None
    assert routing.g711_coding(np.zeros(8000)) is None  # silence is not evidence


@pytest.mark.parametrize("name", ["mu-law file", "decoded mu-law as PCM", "full band, soxr VHQ",
                                  "full band, resample_poly", "2 kHz content at 8 kHz"])
def test_command_line_keeps_the_input_level(class_files, name, tmp_path, script_main):
    """The default command on each class: the path of its class and an output level within 3 dB."""
    path, expected = class_files[name]
    out = tmp_path / "out.wav"
    r = script_main("upsample_audio_file.py", path, "-o", out)
    assert r.returncode == 0, r.stderr
    x, rate = sf.read(path, dtype="float32")
    y, out_rate = sf.read(out, dtype="float32")
    assert out_rate == SR and len(y) == len(x) * SR // rate
    assert abs(rms_db(y) - rms_db(x)) < 3.0, (name, rms_db(y), rms_db(x))
    sinc = np.clip(routing.SincUpsampler().upsample(x), -1, 1)
    assert np.count_nonzero(np.abs(y) >= 1.0) <= np.count_nonzero(np.abs(sinc) >= 1.0)  # no clipping sinc avoids
    want = {"telephone": "telephone band", "fullband_8k": "full-band", "4x": "content stops at"}[expected]
    assert want in r.stderr, r.stderr


def test_pipe_is_routed_on_its_content_like_a_file(class_files, tmp_path):
    """A stream whose content stops at 2 kHz, sent at 8 kHz through a pipe, goes to the 4x model
    (it went to the telephony model by its rate, 13 dB louder); a full-band one to the 8k path."""
    for name, want in (("2 kHz content at 8 kHz", "content stops at"), ("full band, soxr VHQ", "full-band")):
        path, _ = class_files[name]
        x, rate = sf.read(path, dtype="float32")
        r = run_script("upsample_audio_file.py", "-", "-o", "-", input=path.read_bytes(), text=False)
        assert r.returncode == 0, r.stderr.decode()
        assert want in r.stderr.decode(), r.stderr.decode()
        (tmp_path / "piped.wav").write_bytes(r.stdout)
        y, out_rate = sf.read(tmp_path / "piped.wav", dtype="float32")
        assert out_rate == SR and len(y) == len(x) * SR // rate
        assert abs(rms_db(y) - rms_db(x)) < 3.0, (name, rms_db(y), rms_db(x))
        file_out = tmp_path / "file.wav"
        assert run_script("upsample_audio_file.py", path, "-o", file_out).returncode == 0
        np.testing.assert_allclose(y, sf.read(file_out, dtype="float32")[0], atol=1e-4)  # same path, same samples


def test_api_routes_like_the_command_line(class_files, caplog):
    import logging
    import speechsr
    for name in ("full band, soxr VHQ", "2 kHz content at 8 kHz", "decoded mu-law as PCM"):
        path, expected = class_files[name]
        x, rate = sf.read(path, dtype="float32")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="speechsr"):
            y, out_rate = speechsr.upsample(x, rate)
        want = {"telephone": "telephone band", "fullband_8k": "full-band", "4x": "content stops at"}[expected]
        assert want in caplog.text, (name, caplog.text)
        assert out_rate == SR and abs(rms_db(y) - rms_db(x)) < 3.0, name


def test_forcing_the_telephony_model_on_full_band_input_warns(class_files, script_main, tmp_path):
    """--model telephony still wins, but on full-band 8 kHz speech the route line says what it does."""
    full, _ = class_files["full band, soxr VHQ"]
    route = routing.choose_for_file(full, model="telephony")
    assert route.telephone and not route.plain and "second low band" in route.reason
    phone_file, _ = class_files["decoded mu-law as PCM"]
    assert routing.choose_for_file(phone_file, model="telephony").plain  # phone input: the plain case
    r = script_main("upsample_audio_file.py", full, "--model", "telephony", "-o", tmp_path / "out.wav")
    assert r.returncode == 0 and "second low band" in r.stderr, r.stderr
