"""Settings validation (speechsr.settings): each bad file or override is one SettingsError, on one
line, naming the file (or "command line") and the key; the shipped settings folders all load."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from speechsr import settings
from speechsr.settings import SettingsError

SETTINGS = PROJECT_ROOT / "settings"


def raw(kind: str) -> dict:
    """The default settings of ``kind`` as the JSON file holds them."""
    return json.loads((SETTINGS / settings.SETTINGS_FILES[kind]).read_text())


def one_line_error(kind: str, changed: dict, source: str = "test.json") -> str:
    with pytest.raises(SettingsError) as e:
        settings.validate(kind, {**raw(kind), **changed}, source)
    msg = str(e.value)
    assert msg.startswith(f"{source}: ") and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("folder", sorted({p.parent for p in SETTINGS.rglob("*_settings.json")}))
def test_every_shipped_settings_file_validates(folder):
    for kind, name in settings.SETTINGS_FILES.items():
        if (folder / name).is_file():
            s = settings.load(kind, folder)
            assert isinstance(s, settings.SETTINGS_CLASSES[kind])
            assert settings.validate(kind, settings.to_json(s), "round trip") == s  # to_json loses nothing


@pytest.mark.parametrize("kind, key, value, kind_text", [
    ("model", "num_blocks", "4", "must be int"),
    ("model", "num_blocks", 4.0, "must be int"),
    ("model", "batch_norm", 1, "must be bool"),
    ("model", "kernel_sizes", [9, "9"], "must be list[int]"),
    ("training", "learning_rate", True, "must be float"),  # a bool is not a number here
    ("training", "epochs", None, "must be int"),  # null only where a key is optional
    ("data", "input_data_suffix", ".wav", "must be list[str]"),
    ("upsampling", "model", 3, "must be str"),
])
def test_wrong_type_names_the_key_and_the_value(kind, key, value, kind_text):
    msg = one_line_error(kind, {key: value})
    assert f"key '{key}' {kind_text}" in msg and f"got {json.dumps(value)}" in msg


@pytest.mark.parametrize("kind, key, value", [
    ("model", "num_blocks", 0),
    ("model", "num_blocks", 13),
    ("model", "dropout", 1.0),
    ("model", "activation", "swish"),
    ("model", "subpixel_implementation", "fast"),
    ("training", "batch_size", 0),
    ("training", "learning_rate", -1e-3),
    ("training", "run_name", "a/b"),
    ("training", "optimizer", "sgd"),
    ("data", "splice_duration", 0.0),
    ("data", "test_fraction", 1.0),
    ("data", "last_clip", "keep"),
    ("data", "speed_factors", [1.0, 3.0]),
    ("data", "speed_factors", []),
    ("training", "high_band_overshoot_weight", 0.5),
    ("upsampling", "output_subtype", "MP3"),
])
def test_out_of_range_value_names_the_key_and_what_is_allowed(kind, key, value):
    msg = one_line_error(kind, {key: value})
    assert f"key '{key}' has invalid value {json.dumps(value)} (" in msg


def test_unknown_and_missing_keys():
    msg = one_line_error("training", {"batch_sise": 3})
    assert "unknown key 'batch_sise'" in msg and "batch_size" in msg  # the known keys are listed
    incomplete = raw("model")
    del incomplete["num_blocks"]
    with pytest.raises(SettingsError, match=r"^test.json: missing key 'num_blocks' \(number of downsampling"):
        settings.validate("model", incomplete, "test.json")
    with pytest.raises(SettingsError, match="expected a JSON object"):
        settings.validate("model", [1, 2], "test.json")


def test_optional_keys_take_null_and_keys_added_later_take_their_default():
    s = settings.validate("training", {**raw("training"), "init_from": None, "steps_per_epoch": None}, "t")
    assert s.init_from is None and s.steps_per_epoch is None
    older = {k: v for k, v in raw("data").items() if k not in ("allow_narrowband", "low_res_channel")}
    s = settings.validate("data", older, "t")
    assert s.allow_narrowband is False and s.low_res_channel == "sox"
    assert isinstance(settings.validate("training", {**raw("training"), "learning_rate": 1}, "t").learning_rate,
                      float)  # an int where a float goes is stored as float


@pytest.mark.parametrize("kind, changed, expected", [
    ("data", {"sampling_rate": 16000, "downsample_rate": 3000}, "key 'downsample_rate' must divide sampling_rate"),
    ("data", {"test_fraction": 0.5, "validation_fraction": 0.5}, "key 'test_fraction' + validation_fraction"),
    ("data", {"low_res_channel": "telephone", "downsample_rate": 8000, "telephone_band_hz": [300, 4000]},
     "key 'telephone_band_hz' must end below downsample_rate / 2"),
    ("model", {"input_rate": 4000, "output_rate": 10000}, "key 'output_rate' must be a multiple of input_rate"),
    ("model", {"input_rate": 4000, "high_band_edge_hz": 2500.0}, "key 'high_band_edge_hz' must be at most"),
    ("model", {"input_rate": 4000, "high_band_copy_hz": 1500.0}, "key 'high_band_copy_hz' must be 0 or from"),
    ("model", {"input_rate": 8000, "high_band_edge_hz": 3400.0, "high_band_copy_hz": 3000.0},
     "from the band edge (3400 Hz)"),
    ("model", {"output_rate": 16000, "high_band_copy_hz": 8000.0}, "below the output's Nyquist (8000 Hz)"),
    ("upsampling", {"window_seconds": 1.0, "overlap_seconds": 0.6}, "key 'overlap_seconds' must be at most half"),
])
def test_keys_checked_against_each_other(kind, changed, expected):
    assert expected in one_line_error(kind, changed)


def test_files_that_cannot_be_read_name_the_path(tmp_path):
    with pytest.raises(SettingsError, match=f"^{tmp_path / 'model_settings.json'}: settings file not found$"):
        settings.load("model", tmp_path)
    (tmp_path / "model_settings.json").write_text('{"num_blocks": ')
    with pytest.raises(SettingsError, match=f"^{tmp_path / 'model_settings.json'}: not valid JSON"):
        settings.load("model", tmp_path)
    (tmp_path / "model_settings.json").write_text(json.dumps({**raw("model"), "num_blocks": -1}))
    with pytest.raises(SettingsError, match=f"^{tmp_path / 'model_settings.json'}: key 'num_blocks'"):
        settings.load("model", tmp_path)


def test_overrides_are_validated_like_the_file():
    base = settings.load("training")
    assert settings.apply_overrides(base, {"batch_size": 7, "epochs": None}).batch_size == 7  # None: not given
    assert settings.apply_overrides(base, {"batch_size": 7}).epochs == base.epochs
    with pytest.raises(SettingsError, match=r"^command line: unknown key 'batch_sise' in override$"):
        settings.apply_overrides(base, {"batch_sise": 7})
    with pytest.raises(SettingsError, match=r"^command line \(with overrides\): key 'batch_size' has invalid"):
        settings.apply_overrides(base, {"batch_size": 0})


def test_set_arguments_parse_json_values_and_go_to_the_kind_that_has_the_key():
    assert settings.parse_set_arguments(["batch_size=8", "run_name=x", "kernel_sizes=[3, 5]", "a=b=c"]) == {
        "batch_size": 8, "run_name": "x", "kernel_sizes": [3, 5], "a": "b=c"}
    with pytest.raises(SettingsError, match="--set expects KEY=VALUE, got 'batch_size'"):
        settings.parse_set_arguments(["batch_size"])
    p = argparse.ArgumentParser()
    settings.add_settings_arguments(p)
    settings.add_override_arguments(p, "--epochs", "--run-name")
    settings.add_override_arguments(p, "--models-dir")
    args = p.parse_args(["--settings", str(SETTINGS), "--set", "batch_size=8", "--set", "num_blocks=3",
                         "--epochs", "2", "--set", "epochs=5", "--models-dir", "runs"])
    loaded = settings.load_for_script(args, ["model", "training"])
    assert (loaded["training"].batch_size, loaded["training"].epochs, loaded["model"].num_blocks) == (8, 2, 3)
    assert loaded["training"].models_dir == os.path.abspath("runs")  # a path flag is relative to the current folder
    assert loaded["training"].run_name == settings.load("training", SETTINGS).run_name  # flag not given
    args = p.parse_args(["--set", "window_seconds=1.0"])
    assert settings.flag_overrides(args) == {}
    with pytest.raises(SettingsError, match="override 'window_seconds': no such key in model_settings.json, "
                                            "training_settings.json"):
        settings.load_for_script(args, ["model", "training"])
    args = p.parse_args(["--settings", str(SETTINGS), "--set", "num_blocks=0"])
    with pytest.raises(SettingsError, match=f"{SETTINGS / 'model_settings.json'}.*key 'num_blocks'"):
        settings.load_for_script(args, ["model"])


def test_every_override_flag_names_a_settings_key_and_valid_choices():
    keys = {f.name: cls for cls in settings.SETTINGS_CLASSES.values() for f in dataclasses.fields(cls)}
    for name, flag in settings.OVERRIDE_FLAGS.items():
        assert name.startswith("--") and flag.key in keys, name
    defaults = {kind: settings.to_json(settings.load(kind, SETTINGS)) for kind in settings.SETTINGS_FILES}
    for flag in settings.OVERRIDE_FLAGS.values():  # each choice is one the settings accept
        kind = next(k for k, v in defaults.items() if flag.key in v)
        for choice in flag.choices or ():
            settings.apply_overrides(settings.load(kind, SETTINGS), {flag.key: choice})


def test_a_settings_file_path_finds_its_siblings(tmp_path):
    assert settings.resolve_path(SETTINGS / "training_settings.json", "model") == SETTINGS / "model_settings.json"
    assert settings.resolve_path(SETTINGS, "data") == SETTINGS / "data_settings.json"
    assert settings.resolve_path(None, "model") == settings.DEFAULT_SETTINGS_DIR / "model_settings.json"
    other = tmp_path / "mine.json"
    assert settings.resolve_path(other, "model") == other  # a file of another name is taken as given
    assert settings.project_path("models/x.keras") == PROJECT_ROOT / "models" / "x.keras"
    assert settings.project_path(Path("/abs/x.keras")) == Path("/abs/x.keras")
