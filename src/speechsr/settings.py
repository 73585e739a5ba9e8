"""Settings: the four JSON files under ``settings/``, loaded and validated once.

Each file maps to a frozen dataclass below. Loading checks, before any work starts, that
every key is known, present and of the right type and range (no number infinite or NaN); a
failure raises :class:`SettingsError` naming the file and the key (or the file and why it cannot
be read: not UTF-8, not JSON). Command-line flags override single
values through :func:`apply_overrides` (validated the same way).

Units: durations in seconds, rates in Hz, lengths "in samples" say at which rate.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from speechsr import bandlimit
from speechsr.channel import LOW_RES_CHANNELS
from speechsr.resamplers import RESAMPLERS

#: STFT hops (output samples) the high-band envelope layer takes (``speechsr.high_band``).
HIGH_BAND_HOPS = (64, 128, 256)

SETTINGS_FILES = {
    "data": "data_settings.json",
    "model": "model_settings.json",
    "training": "training_settings.json",
    "upsampling": "upsampling_settings.json",
}
PACKAGE_DIR = Path(__file__).resolve().parent
#: True in an installed wheel: its package carries the default settings
#: (``speechsr/default_settings/``) and the shipped models (``speechsr/models/pretrained/``),
#: which a clone (source tree, editable install) keeps in ``settings/`` and ``models/``.
INSTALLED = not (PACKAGE_DIR.parent.name == "src" and (PACKAGE_DIR.parents[1] / "pyproject.toml").is_file())
PROJECT_ROOT = PACKAGE_DIR if INSTALLED else PACKAGE_DIR.parents[1]
DEFAULT_SETTINGS_DIR = PROJECT_ROOT / ("default_settings" if INSTALLED else "settings")


class SettingsError(ValueError):
    """A settings file or override is invalid; the message names file and key."""


_REQUIRED = object()


def _field(kind: str, check: Callable[[Any], bool] | None = None, doc: str = "",
           optional: bool = False, default: Any = _REQUIRED):
    """A settings key; one with a ``default`` may be left out of the JSON file (keys added later)."""
    return dataclasses.field(metadata={"kind": kind, "check": check, "doc": doc,
                                       "optional": optional, "default": default})


#: Choice lists, each defined once and used by both the settings checks and argparse ``choices``
#: (others live beside their code: ``bandlimit.MODES`` for input_lowpass, ``channel.LOW_RES_CHANNELS``,
#: ``runtime.RUNTIMES``).
SPLIT_UNITS = ("recording", "clip")  # split_by, test_train_split.py --by
TRAINABLE = ("all", "high_band")
ARCHITECTURES = ("unet", "spectral")  # speechsr.model.build_model
SUBPIXEL_IMPLEMENTATIONS = ("auto", "op", "reshape")  # speechsr.subpixel, --subpixel
STRATEGIES = ("default", "mirrored", "multiworker")  # speechsr.training.make_strategy, train.py --strategy

#: Bounds on one model call: longer windows gain nothing (files stream through windows of any
#: length) and a window of 1e9 s would ask for terabytes. A call's activations take about 2.4 MB
#: per second of audio in it (the shipped model: window_seconds x batch_size = 600 x 6 reached
#: 8.7 GB), so a call holds at most 600 s of audio, about 1.5 GB.
MAX_WINDOW_SECONDS = 600.0
MAX_BATCH_SECONDS = 600.0

_positive = lambda v: v > 0  # noqa: E731
_non_negative = lambda v: v >= 0  # noqa: E731
_fraction = lambda v: 0 <= v < 1  # noqa: E731


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """How ``preprocessing/`` turns a corpus into clip pairs and CSV splits."""
    input_dir_name_base: str = _field("str", doc="corpus root (relative to the settings dir's project or absolute)")
    input_dir_name_dirs: list = _field("list[str]", doc="sub-folders to scan (glob patterns allowed); [] = whole tree")
    input_data_suffix: list = _field("list[str]", lambda v: len(v) > 0, "audio file suffixes, e.g. ['.sph']")
    output_dir: str = _field("str", doc="where clips, data_info.json and the CSV splits go")
    start_time: float = _field("float", _non_negative, "seconds trimmed from each recording's start")
    end_time: float = _field("float", doc="<= 0: seconds trimmed from the end (-30 = last 30 s); > 0: absolute end time")
    splice_duration: float = _field("float", _positive, "clip length in seconds")
    last_clip: str = _field("str", lambda v: v in ("drop", "pad"), "partial last clip: 'drop' or 'pad' (zeros)")
    sampling_rate: int = _field("int", _positive, "high-res rate in Hz")
    downsample_rate: int = _field("int", _positive, "low-res rate in Hz")
    clip_subtype: str = _field("str", lambda v: v in ("PCM_16", "PCM_24", "FLOAT"), "clip WAV subtype")
    test_fraction: float = _field("float", _fraction, "share of recordings for test")
    validation_fraction: float = _field("float", _fraction, "share of recordings for validation")
    split_by: str = _field("str", lambda v: v in SPLIT_UNITS, "'recording' (default) or 'clip'")
    split_seed: int = _field("int", doc="seed of the split shuffle")
    allow_narrowband: bool = _field("bool", doc="splice sources sampled below sampling_rate or with almost no "
                                    "energy in the top half of its band (speechsr.splicing.narrowband_reason); "
                                    "false = skip them, listed in data_info.json", default=False)
    low_res_channel: str = _field("str", lambda v: v in LOW_RES_CHANNELS,
                                  "how the low-res twin is made: 'sox' (rate -h low-pass + resample), "
                                  "'telephone' (speechsr.channel: band-pass, downsample_rate, G.711) or "
                                  "'resamplers' (one of 'resamplers' per recording)", default="sox")
    resamplers: list = _field("list[str]", lambda v: len(v) > 0 and all(k in RESAMPLERS for k in v),
                              "low_res_channel 'resamplers': the resamplers drawn from per recording, seeded by "
                              "channel_seed (speechsr.resamplers.RESAMPLERS)", default=list(RESAMPLERS))
    telephone_band_hz: list = _field("list[float]", lambda v: len(v) == 2 and 0 < v[0] < v[1],
                                     "telephone channel: pass band [low, high] in Hz", default=[300.0, 3400.0])
    telephone_codecs: list = _field("list[str]", lambda v: len(v) > 0 and all(c in ("ulaw", "alaw") for c in v),
                                    "telephone channel: G.711 codecs drawn per clip ('ulaw', 'alaw')",
                                    default=["ulaw", "alaw"])
    telephone_gain_db: float = _field("float", _non_negative, "telephone channel: random gain per clip, "
                                      "uniform in +-dB before the codec (0 = off)", default=0.0)
    telephone_edge_jitter_hz: float = _field("float", _non_negative, "telephone channel: each band edge moved by "
                                             "a random +-Hz per recording (0 = off)", default=0.0)
    channel_seed: int = _field("int", doc="seed of the telephone channel's draws (with the recording id)",
                               default=1234)
    speed_factors: list = _field("list[float]", lambda v: len(v) > 0 and all(0.5 <= f <= 2 for f in v),
                                 "speed perturbation: each recording is also spliced played this many times "
                                 "faster (pitch and formants move with it; 1.0 = as recorded), its clips kept "
                                 "together in the split", default=[1.0])



@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Architecture of the model: the 1-D U-Net (``speechsr.model``) or the spectral model
    (``speechsr.spectral``), which uses the rates, ``interpolation_taps`` and the ``spectral_*`` keys."""
    input_rate: int = _field("int", _positive, "low-res input rate in Hz")
    output_rate: int = _field("int", _positive, "high-res output rate in Hz (an integer multiple of input_rate)")
    num_blocks: int = _field("int", lambda v: 1 <= v <= 12, "number of downsampling blocks")
    first_filters: int = _field("int", _positive, "filters of the first downsampling block")
    filter_growth: float = _field("float", lambda v: v >= 1, "filter multiplier per level (2 = doubling)")
    filter_cap: int = _field("int", _positive, "maximum filters of any block")
    kernel_sizes: list = _field("list[int]", lambda v: len(v) > 0 and all(k > 0 for k in v),
                                "kernel size per level (last value repeats for deeper levels)")
    activation: str = _field("str", lambda v: v in ("relu", "leaky_relu", "gelu", "elu", "prelu"), "nonlinearity")
    dropout: float = _field("float", _fraction, "dropout rate in bottleneck and upsampling blocks")
    batch_norm: bool = _field("bool", doc="batch normalisation in downsampling blocks")
    interpolation_taps: int = _field("int", lambda v: 2 <= v <= 256,
                                     "half-length (input samples) of the fixed windowed-sinc interpolator")
    subpixel_implementation: str = _field("str", lambda v: v in SUBPIXEL_IMPLEMENTATIONS,
                                          "'auto' (compiled op if built), 'op' or 'reshape'")
    high_band_bands: int = _field("int", lambda v: v == 0 or 2 <= v <= 64,
                                  "mel bands of the learned high-band envelope after the U-Net "
                                  "(speechsr.high_band); 0 = none", default=0)
    high_band_channels: int = _field("int", _positive, "channels of the envelope predictor's Conv1D layers",
                                     default=128)
    high_band_layers: int = _field("int", lambda v: 1 <= v <= 8, "Conv1D layers of the envelope predictor "
                                   "(dilations 1, 2, 4, ...)", default=4)
    high_band_kernel: int = _field("int", lambda v: v >= 1 and v % 2 == 1, "kernel (frames, odd) of the "
                                   "envelope predictor's layers", default=3)
    high_band_gain_db: float = _field("float", lambda v: -40 <= v <= 12, "level of the restored high band "
                                      "relative to the predicted envelope, dB", default=0.0)
    high_band_tilt_db: float = _field("float", lambda v: -24 <= v <= 12, "change of that level per octave "
                                      "above the band edge, dB", default=0.0)
    high_band_copy_hz: float = _field("float", _non_negative, "above this frequency (Hz) the restored band's "
                                      "fine structure is the band below the edge replicated upwards, below it the "
                                      "U-Net's own (0 = the U-Net's own throughout)", default=0.0)
    high_band_edge_hz: float = _field("float", _non_negative, "lower edge of the band the layer restores, Hz "
                                      "(0 = the input's Nyquist)", default=0.0)
    high_band_contrast: float = _field("float", lambda v: 0.25 <= v <= 4, "spread of the played envelope "
                                       "across its bands about the frame's level, times the predicted spread "
                                       "(1 = as predicted; above 1 sharper)", default=1.0)
    high_band_hop: int = _field("int", lambda v: v in HIGH_BAND_HOPS, "hop of the layer's STFT, output "
                                "samples (64, 128 or 256; its window is 512): the predictor's frame spacing, and "
                                "what the layer costs, which halves as the hop doubles", default=128)
    low_band_from_input: bool = _field("bool", doc="the output below the input's Nyquist is the input itself, "
                                       "sinc-interpolated (crossover 0.90-0.98 x that Nyquist); the model supplies "
                                       "only the band above (speechsr.low_band; applied by the upsampler)",
                                       default=False)
    architecture: str = _field("str", lambda v: v in ARCHITECTURES, "'unet': the waveform U-Net; 'spectral': "
                               "sinc interpolation plus a network over STFT frames that predicts the bins above "
                               "the input's Nyquist from those below (speechsr.spectral; the U-Net's keys are "
                               "then unused)", default="unet")
    spectral_channels: int = _field("int", lambda v: 1 <= v <= 4096, "channels of the spectral model's Conv1D "
                                    "layers", default=384)
    spectral_dilations: list = _field("list[int]", lambda v: 1 <= len(v) <= 32 and all(1 <= d <= 64 for d in v),
                                      "dilations (STFT frames) of the spectral model's residual blocks, one "
                                      "block each", default=[1, 2, 4, 8, 1, 2])


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """Optimisation and input pipeline for ``train.py``."""
    train_csv: str = _field("str", doc="CSV of training clip pairs (from test_train_split.py)")
    validation_csv: str = _field("str", doc="CSV of validation clip pairs")
    models_dir: str = _field("str", doc="runs are written to <models_dir>/<run_name>/")
    run_name: str = _field("str", lambda v: len(v) > 0 and "/" not in v, "name of the run folder")
    batch_size: int = _field("int", _positive, "patches per step")
    epochs: int = _field("int", _positive, "number of epochs")
    steps_per_epoch: int = _field("int", _positive, "training steps per epoch", optional=True)
    patch_length: int = _field("int", _positive, "training patch length in low-res input samples")
    learning_rate: float = _field("float", _positive, "peak learning rate")
    lr_schedule: str = _field("str", lambda v: v in ("constant", "cosine"), "'constant' or 'cosine' decay")
    warmup_steps: int = _field("int", _non_negative, "linear warm-up steps")
    optimizer: str = _field("str", lambda v: v in ("adam", "adamw"), "'adam' or 'adamw'")
    weight_decay: float = _field("float", _non_negative, "decoupled weight decay for adamw")
    mrstft_weight: float = _field("float", _non_negative, "weight of the multi-resolution STFT loss (0 = off)")
    mse_weight: float = _field("float", _non_negative, "weight of the waveform MSE loss", default=1.0)
    mel_weight: float = _field("float", _non_negative, "weight of the log-mel L1 loss (speechsr.losses.mel_l1; 0 = off)",
                               default=0.0)
    high_band_weight: float = _field("float", _non_negative, "weight of the high-band log-energy loss "
                                     "(speechsr.high_band.band_energy_loss); needs model high_band_bands > 0",
                                     default=0.0)
    high_band_overshoot_weight: float = _field("float", lambda v: v >= 1, "in that loss, the weight of errors "
                                               "where the output's band is louder than the reference's (1 = "
                                               "symmetric; > 1 teaches a cautious envelope where it is uncertain)",
                                               default=1.0)
    high_band_floor_db: float = _field("float", _non_negative, "in that loss, reference bands more than this "
                                       "many dB below the example's loudest band only keep the output below that "
                                       "floor (0 = every band counts)", default=0.0)
    trainable: str = _field("str", lambda v: v in TRAINABLE, "weights that train: 'all', or 'high_band' (only "
                            "the envelope predictor; the U-Net keeps init_from's weights)", default="all")
    adversarial_weight: float = _field("float", _non_negative,
                                       "weight of the least-squares GAN loss of the generator; > 0 switches "
                                       "adversarial training on (speechsr.adversarial)", default=0.0)
    feature_matching_weight: float = _field("float", _non_negative,
                                            "weight of the discriminators' feature-matching L1 loss", default=0.0)
    discriminator_periods: list = _field("list[int]", lambda v: all(p >= 2 for p in v),
                                         "periods (output samples) of the multi-period waveform discriminators",
                                         default=[2, 3, 5, 7, 11])
    discriminator_stft_sizes: list = _field("list[int]", lambda v: all(n >= 64 for n in v),
                                            "FFT sizes (output samples, hop = size / 4) of the spectrogram "
                                            "discriminators", default=[512, 1024, 2048])
    discriminator_channels: int = _field("int", _positive, "channels of the discriminators' first layer", default=16)
    discriminator_learning_rate: float = _field("float", _positive, "Adam learning rate of the discriminators "
                                                "(constant; beta1 0.8, beta2 0.99)", default=2e-4)
    gan_start_step: int = _field("int", _non_negative, "generator-only warm-up: training steps (counted over the "
                                 "whole run) before the discriminators start", default=0)
    snapshot_every_epochs: int = _field("int", _non_negative, "also keep the model of every Nth epoch as "
                                        "snapshots/epoch_NNN.keras (0 = off); GAN runs select by listening "
                                        "metrics afterwards", default=0)
    augment_gain_db: float = _field("float", _non_negative, "random gain in +-dB on both twins (0 = off)")
    augment_lowpass_min: float = _field("float", _fraction,
                                        "random extra low-pass on the low-res input: lowest cutoff as a fraction "
                                        "of its Nyquist frequency, cutoffs uniform up to Nyquist (0 = off)")
    init_from: str = _field("str", lambda v: len(v) > 0,
                            ".keras model whose weights start a new run (fine-tuning; same model settings); "
                            "null = random initialisation", optional=True)
    validation_max_clips: int = _field("int", _positive, "validate on at most this many clips", optional=True)
    shuffle_buffer: int = _field("int", _positive, "tf.data shuffle buffer (patches)")
    checkpoint_every_steps: int = _field("int", _positive, "also checkpoint every N steps inside an epoch")
    seed: int = _field("int", doc="random seed")


@dataclasses.dataclass(frozen=True)
class UpsamplingSettings:
    """How ``upsample_audio_file.py`` / ``evaluate.py`` run a trained model."""
    model: str = _field("str", doc="path of the .keras model (relative to the project root or absolute)")
    window_seconds: float = _field("float", _positive, "length of one model window in seconds")
    overlap_seconds: float = _field("float", _positive, "cross-fade overlap between windows in seconds")
    batch_size: int = _field("int", _positive, "windows per model call")
    block_seconds: float = _field("float", _positive, "seconds read/written per streaming block")
    output_subtype: str = _field("str", lambda v: v in ("auto", "PCM_16", "PCM_24", "FLOAT"),
                                 "'auto' = input's subtype when PCM, else FLOAT")
    input_lowpass: str = _field("str", lambda v: v in bandlimit.MODES,
                                "band-limit the input like sox-made training inputs: 'auto' (when it has "
                                "content at the band edge, see speechsr.bandlimit), 'on' or 'off'")


SETTINGS_CLASSES = {"data": DataSettings, "model": ModelSettings,
                    "training": TrainingSettings, "upsampling": UpsamplingSettings}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list[int]":
        return isinstance(value, list) and all(_type_ok("int", v) for v in value)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "list[float]":
        return isinstance(value, list) and all(_type_ok("float", v) for v in value)
    raise AssertionError(kind)


def _finite(value: Any) -> bool:
    """Whether a number (or each of a list's) is finite and below 2**63 in size: no setting takes
    Infinity, NaN (JSON, ``--set``, float flags such as ``--end-time nan``) or 1e999 / 10**400."""
    try:
        return all(isinstance(v, str) or (math.isfinite(v) and abs(v) < 2 ** 63)
                   for v in (value if isinstance(value, list) else [value]))
    except OverflowError:  # an int too large for a float
        return False


def validate(kind: str, raw: dict, source: str):
    """Validate a raw dict for settings ``kind``; return the dataclass or raise SettingsError."""
    cls = SETTINGS_CLASSES[kind]
    if not isinstance(raw, dict):
        raise SettingsError(f"{source}: expected a JSON object at top level")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise SettingsError(f"{source}: unknown key '{key}' (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name not in raw and f.metadata["default"] is _REQUIRED:
            raise SettingsError(f"{source}: missing key '{name}' ({f.metadata['doc']})")
        value = raw[name] if name in raw else copy.deepcopy(f.metadata["default"])
        meta = f.metadata
        if value is None and meta["optional"]:
            values[name] = None
            continue
        if not _type_ok(meta["kind"], value):
            raise SettingsError(f"{source}: key '{name}' must be {meta['kind']}"
                                f"{' or null' if meta['optional'] else ''}, got {json.dumps(value)}")
        if not _finite(value):
            raise SettingsError(f"{source}: key '{name}' must be a finite number (below 2**63 in size), "
                                f"got {json.dumps(value)[:40]}")
        if meta["kind"] == "float":
            value = float(value)
        if meta["check"] is not None and not meta["check"](value):
            raise SettingsError(f"{source}: key '{name}' has invalid value {json.dumps(value)} ({meta['doc']})")
        values[name] = value
    settings = cls(**values)
    _cross_check(kind, settings, source)
    return settings


def _cross_check(kind: str, s, source: str) -> None:
    if kind == "data":
        if s.sampling_rate % s.downsample_rate:
            raise SettingsError(f"{source}: key 'downsample_rate' must divide sampling_rate ({s.sampling_rate})")
        if s.low_res_channel == "telephone" and s.telephone_band_hz[1] >= s.downsample_rate / 2:
            raise SettingsError(f"{source}: key 'telephone_band_hz' must end below downsample_rate / 2 "
                                f"({s.downsample_rate / 2:g} Hz)")
        if s.test_fraction + s.validation_fraction >= 1:
            raise SettingsError(f"{source}: key 'test_fraction' + validation_fraction must be < 1")
    if kind == "model":
        if s.output_rate % s.input_rate:
            raise SettingsError(f"{source}: key 'output_rate' must be a multiple of input_rate ({s.input_rate})")
        edge = s.high_band_edge_hz or s.input_rate / 2
        if s.architecture == "spectral" and s.high_band_bands:
            raise SettingsError(f"{source}: key 'high_band_bands' must be 0 with architecture 'spectral' "
                                "(the envelope layer belongs to the U-Net)")
        if s.architecture == "spectral" and (s.output_rate // s.input_rate) not in (2, 4, 8):
            raise SettingsError(f"{source}: architecture 'spectral' upsamples by 2, 4 or 8 "
                                f"(output_rate / input_rate is {s.output_rate / s.input_rate:g})")
        if s.high_band_edge_hz > s.input_rate / 2:
            raise SettingsError(f"{source}: key 'high_band_edge_hz' must be at most the input's Nyquist "
                                f"({s.input_rate / 2:g} Hz)")
        if s.high_band_copy_hz and not edge <= s.high_band_copy_hz < s.output_rate / 2:
            raise SettingsError(f"{source}: key 'high_band_copy_hz' must be 0 or from the band edge ({edge:g} Hz) "
                                f"to below the output's Nyquist ({s.output_rate / 2:g} Hz)")
    if kind == "upsampling" and s.overlap_seconds * 2 > s.window_seconds:
        raise SettingsError(f"{source}: key 'overlap_seconds' must be at most half of window_seconds")
    if kind == "upsampling" and s.window_seconds > MAX_WINDOW_SECONDS:
        raise SettingsError(f"{source}: window_seconds {s.window_seconds:g} is too long (at most "
                            f"{MAX_WINDOW_SECONDS:g} s; files of any length stream through windows, a few "
                            "seconds is enough)")
    if kind == "upsampling" and s.window_seconds * s.batch_size > MAX_BATCH_SECONDS:
        raise SettingsError(f"{source}: window_seconds {s.window_seconds:g} x batch_size {s.batch_size} is too "
                            f"much audio for one model call (at most {MAX_BATCH_SECONDS:g} s)")


def project_path(path: str | os.PathLike) -> Path:
    """A path from a settings file: relative ones are relative to the project root (a clone's;
    installed, the current folder's, or the package's for shipped files such as the default model).

    (Paths given as command-line flags are made absolute from the current folder by the
    scripts before they override a setting, so both behave as a user expects.)
    """
    p = Path(path).expanduser()
    if INSTALLED and not p.is_absolute():
        # Installed: relative to the current folder, or the shipped file (default model) there is.
        shipped = PROJECT_ROOT / p
        p = shipped if shipped.is_file() and not p.exists() else p.absolute()
    return Path(os.path.normpath(p if p.is_absolute() else PROJECT_ROOT / p))


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a user would type it in titles and log lines: relative to the current folder when
    it lies under it (``models/pretrained/model.keras`` in a clone), else as it is."""
    p = Path(path)
    try:
        return p.absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(p)


def resolve_path(path_or_dir: str | os.PathLike | None, kind: str) -> Path:
    """The JSON file for ``kind``: ``path_or_dir`` may be a settings dir or the file itself."""
    p = Path(path_or_dir) if path_or_dir else DEFAULT_SETTINGS_DIR
    if p.is_dir():
        return p / SETTINGS_FILES[kind]
    if p.name in SETTINGS_FILES.values() and p.name != SETTINGS_FILES[kind]:
        return p.parent / SETTINGS_FILES[kind]  # a sibling file of another kind: same folder
    return p


def load(kind: str, path_or_dir: str | os.PathLike | None = None, overrides: dict | None = None):
    """Load, validate and return the settings dataclass of ``kind`` ('data', 'model', ...)."""
    path = resolve_path(path_or_dir, kind)
    if not path.is_file():
        raise SettingsError(f"{path}: settings file not found")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise SettingsError(f"{path}: cannot read ({(e.strerror or str(e)).lower()})") from None
    except UnicodeDecodeError as e:
        raise SettingsError(f"{path}: not valid UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise SettingsError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise SettingsError(f"{path}: not valid JSON (nested too deeply)") from None
    settings = validate(kind, raw, str(path))
    return apply_overrides(settings, overrides or {}, str(path)) if overrides else settings


def apply_overrides(settings, overrides: dict, source: str = "command line"):
    """Return ``settings`` with single values replaced; re-validated. None values are ignored."""
    kind = next(k for k, c in SETTINGS_CLASSES.items() if isinstance(settings, c))
    raw = dataclasses.asdict(settings)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in raw:
            raise SettingsError(f"{source}: unknown key '{key}' in override")
        raw[key] = value
    return validate(kind, raw, f"{source} (with overrides)")


def to_json(settings) -> dict:
    """Plain dict of a settings dataclass (for data_info.json, run folders, model metadata)."""
    return dataclasses.asdict(settings)


def parse_set_arguments(pairs: list[str] | None) -> dict:
    """Parse ``--set key=value`` pairs; the value is JSON when it parses, else a string."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SettingsError(f"--set expects KEY=VALUE, got '{pair}'")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        except RecursionError:
            raise SettingsError(f"--set {key}: JSON nested too deeply") from None
    return out


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--settings`` and repeatable ``--set KEY=VALUE`` to a script's parser."""
    parser.add_argument("--settings", default=str(DEFAULT_SETTINGS_DIR), metavar="DIR_OR_FILE",
                        help="settings directory (or one JSON file) (default: %(default)s)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="set_values",
                        help="override one setting (JSON value), may repeat")


@dataclasses.dataclass(frozen=True)
class Flag:
    """A command-line flag that overrides one settings ``key`` (``path``: made absolute from the
    current folder, as a user expects of a path typed on the command line)."""
    key: str
    type: Callable = str
    path: bool = False
    choices: tuple | None = None
    help: str = ""
    metavar: str | None = None


#: The one table of flags that override a setting. A script adds those it takes with
#: :func:`add_override_arguments`; :func:`load_for_script` applies them to the kind that has the key.
OVERRIDE_FLAGS = {
    # training_settings.json (train.py)
    "--run-name": Flag("run_name"),
    "--models-dir": Flag("models_dir", path=True),
    "--epochs": Flag("epochs", int),
    "--batch-size": Flag("batch_size", int),  # training or upsampling: the kind the script loads
    "--learning-rate": Flag("learning_rate", float),
    "--train-csv": Flag("train_csv", path=True),
    "--validation-csv": Flag("validation_csv", path=True),
    "--init-from": Flag("init_from", path=True, metavar="MODEL.keras",
                        help="start a new run from this model's weights (fine-tuning)"),
    # model_settings.json
    "--subpixel": Flag("subpixel_implementation", choices=SUBPIXEL_IMPLEMENTATIONS),
    # upsampling_settings.json (upsample_audio_file.py, evaluate.py)
    "--window-seconds": Flag("window_seconds", float),
    "--input-lowpass": Flag("input_lowpass", choices=bandlimit.MODES,
                            help="band-limit the input like the training inputs when it has content at the "
                                 "band edge (auto), always (on) or never (off)"),
    # data_settings.json (preprocessing/)
    "--input-dir": Flag("input_dir_name_base", path=True, help="corpus root"),
    "--output-dir": Flag("output_dir", path=True, help="output folder, holding clips/"),
    "--start-time": Flag("start_time", float, help="seconds trimmed from each start"),
    "--end-time": Flag("end_time", float, help="<= 0: seconds trimmed from each end; > 0: absolute end (s)"),
    "--splice-duration": Flag("splice_duration", float, help="clip length in seconds"),
    "--by": Flag("split_by", choices=SPLIT_UNITS, help="split unit"),
    "--seed": Flag("split_seed", int, help="shuffle seed"),
    "--test-fraction": Flag("test_fraction", float, help="share for test"),
    "--validation-fraction": Flag("validation_fraction", float, help="share for validation"),
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_override_arguments(parser: argparse.ArgumentParser, *flags: str) -> None:
    """Add ``flags`` (keys of :data:`OVERRIDE_FLAGS`) to a script's parser."""
    for name in flags:
        f = OVERRIDE_FLAGS[name]
        text = f"{f.help} (overrides setting '{f.key}')" if f.help else f"override setting '{f.key}'"
        parser.add_argument(name, type=f.type, choices=f.choices, metavar=f.metavar, help=text)
    parser.set_defaults(override_flags=[*(parser.get_default("override_flags") or []), *flags])


def flag_overrides(args: argparse.Namespace) -> dict:
    """``{settings key: value}`` of the override flags given on the command line (paths absolute)."""
    out = {}
    for name in getattr(args, "override_flags", None) or []:
        f, value = OVERRIDE_FLAGS[name], getattr(args, _dest(name))
        if value is not None:
            out[f.key] = os.path.abspath(value) if f.path else value
    return out


def load_for_script(args: argparse.Namespace, kinds: list[str]) -> dict:
    """Load the settings ``kinds`` a script needs, applying ``--set`` pairs and override flags
    (:func:`add_override_arguments`; a flag wins over ``--set`` of the same key).

    Each override goes to the kind that has the key; a key no loaded kind has is an error.
    """
    overrides = parse_set_arguments(getattr(args, "set_values", None))
    overrides.update(flag_overrides(args))
    loaded = {kind: load(kind, args.settings) for kind in kinds}
    for key in overrides:
        if not any(key in to_json(s) for s in loaded.values()):
            raise SettingsError(f"override '{key}': no such key in {', '.join(SETTINGS_FILES[k] for k in kinds)}")
    for kind, s in loaded.items():
        mine = {k: v for k, v in overrides.items() if k in to_json(s)}
        if mine:
            loaded[kind] = apply_overrides(s, mine, str(resolve_path(args.settings, kind)))
    return loaded
