"""Save and load trained models: ``NAME.keras`` plus ``NAME.json`` (settings and provenance).

Saving goes through a temporary file renamed into place. Loading uses Keras safe mode (the
custom layers are registered), so a ``.keras`` file never runs arbitrary code.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

from speechsr import settings as settings_mod
from speechsr.audio import atomic_path
import speechsr.model  # noqa: F401  (registers the custom layers for deserialisation)

HOW_TO_TRAIN = ("train one with `python train.py --settings settings/librispeech` "
                "(see README, 'Train on your own corpus')")


class ModelNotFoundError(FileNotFoundError):
    """No model file at the given path; the message says how to get one."""


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def save_model(model: keras.Model, path: str | os.PathLike, model_settings, extra: dict | None = None) -> None:
    """Write ``path`` (.keras) and its ``.json`` sidecar atomically, as a pair: both are written to
    temporary files first, so a failure in either (a full disk) leaves neither changed."""
    path = Path(path)
    info = {"model_settings": settings_mod.to_json(model_settings), **(extra or {})}
    with atomic_path(path) as tmp_model, atomic_path(sidecar_path(path)) as tmp_info:
        model.save(tmp_model)
        tmp_info.write_text(json.dumps(info, indent=2) + "\n")


def load_model(path: str | os.PathLike) -> tuple[keras.Model, "settings_mod.ModelSettings", dict]:
    """Load ``(model, model_settings, sidecar_info)`` from a ``.keras`` file (safe mode)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.keras" if (path / "best.keras").exists() else path / "model.keras"
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no trained model there; {HOW_TO_TRAIN}")
    side = sidecar_path(path)
    if not side.is_file():
        raise ModelNotFoundError(f"{side}: settings file of model {path.name} is missing")
    try:
        info = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{side}: settings file of model {path.name} is not valid JSON ({e})") from None
    if not isinstance(info, dict) or "model_settings" not in info:
        raise ValueError(f"{side}: settings file of model {path.name} has no 'model_settings' object")
    model_settings = settings_mod.validate("model", info["model_settings"], f"{side} (model_settings)")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" for a file that exists
        raise ValueError(f"{path}: not a valid .keras file (truncated or corrupt: no zip directory)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # corrupt zip, wrong Keras version, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: cannot load model ({first})") from None
    return model, model_settings, info
