"""The ``speechsr`` command: one subcommand per top-level script, with that script's flags.

  speechsr upsample IN... [-o OUT]   upsample_audio_file.py
  speechsr batch IN -o OUT           batch_upsample.py (Ray Data, local or a cluster)
  speechsr evaluate ...              evaluate.py
  speechsr train ...                 train.py
  speechsr splice ...                preprocessing/splice_raw_data.py
  speechsr split ...                 preprocessing/test_train_split.py
  speechsr export ...                export_model.py
  speechsr compose ...               compose_model.py
  speechsr build-op                  src/build_ops.sh: build the optional compiled subpixel op
  speechsr --version                 package version, shipped model card version, subpixel path

Each subcommand runs the script's own ``main(argv)``, so flags, ``--help``, settings handling
and exit codes (0 done, 2 error) are the script's. From a clone that is the script file itself;
an installed wheel carries verbatim copies as ``speechsr/_scripts/`` (see pyproject.toml).

Nothing here imports TensorFlow. The scripts share from here: :func:`start_script` (SIGTERM
and logging), the argument and file checks that run before any work or TensorFlow import
(:func:`check_minimum`, :func:`check_output_folder`, :func:`check_readable`,
:func:`check_model_files`), the upsampling flags (:func:`add_upsampler_arguments`) and the exit
code of a failure (:func:`failure_exit_code`: one line on stderr, 2; 130 when interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

import speechsr
from speechsr import runtime, settings, signals
from speechsr.audio import AudioError, audio_info
from speechsr.channel import EVALUATION_CHANNELS


def interrupted(error: BaseException) -> bool:
    """Whether ``error`` ended the run because of Ctrl-C or SIGTERM.

    True for a KeyboardInterrupt, and for any exception raised after the signal arrived: a signal that
    lands inside a C extension (TensorFlow's nest flattening does this) can surface as that
    extension's own error, e.g. a TypeError, instead of the KeyboardInterrupt the handler raised.
    """
    return isinstance(error, KeyboardInterrupt) or signals.requested()


def failure_exit_code(error: BaseException, errors: tuple, interrupted_message: str) -> int:
    """The exit code of a script whose ``main`` ended with ``error``; call it from ``except BaseException``.

    An interruption (:func:`interrupted`) closes progress bars, prints ``interrupted_message`` and
    gives 130; one of the expected ``errors``, or a MemoryError, prints ``error: <message>``
    (:func:`error_text`) and gives 2 (both on stderr, one line); anything else is re-raised.
    """
    if interrupted(error):
        close_progress_bars()  # else a bar redraws itself after the message at exit
        print(interrupted_message, file=sys.stderr)
        return 130
    if isinstance(error, (*errors, MemoryError)):
        close_progress_bars()
        print(f"error: {error_text(error)}", file=sys.stderr)
        return 2
    raise error


def error_text(error: BaseException) -> str:
    """One line saying what ``error`` is, never blank: its message, else its kind (a MemoryError
    carries no message)."""
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        return "out of memory" + (f" ({text})" if text else "") + (
            ": lower window_seconds or batch_size (upsampling), or batch_size / patch_length (training)")
    return text or type(error).__name__


def close_progress_bars() -> None:
    """Close open tqdm bars (else a bar redraws itself after an interruption message)."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


# ------------------------------------------------------------------ shared by the scripts

def start_script(progress_lines: bool = False) -> None:
    """What each script does right after parsing its arguments: SIGTERM stops it like Ctrl-C
    (temporary files are removed; both honoured even when TensorFlow swallows the first
    KeyboardInterrupt: :mod:`speechsr.signals`), warnings go to stderr as ``LEVEL: message``; with
    ``progress_lines`` the package's INFO lines too, as plain messages (train.py). File names that
    are not valid UTF-8 are printed with backslash escapes on stdout too (as on stderr)."""
    signals.install()
    with contextlib.suppress(AttributeError, ValueError):  # a replaced stdout (tests) may not reconfigure
        sys.stdout.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.WARNING,
                        format="%(message)s" if progress_lines else "%(levelname)s: %(message)s")
    if progress_lines:  # our progress lines, not TensorFlow's INFO chatter
        logging.getLogger("speechsr").setLevel(logging.INFO)


def check_minimum(flag: str, value: int | None, minimum: int) -> None:
    """ValueError ``--flag must be >= minimum`` for a count flag given below ``minimum``."""
    if value is not None and value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {value}")


def check_output_folder(folder: str | os.PathLike, what: str = "output folder") -> list[Path]:
    """Make ``folder`` (and its parents) when missing; AudioError (one line) when that fails or
    it is not writable: checked before any work, so a run never fails at its end. Returns the
    folders it made, outermost first (:func:`remove_empty_folders` takes them back after a failure)."""
    folder = Path(folder)
    made = [p for p in reversed([folder, *folder.parents]) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AudioError(f"{folder}: cannot create {what} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK):
        raise AudioError(f"{folder}: {what} is not writable")
    return made


def remove_empty_folders(made: list[Path]) -> None:
    """Remove the folders ``made`` (:func:`check_output_folder`), innermost first, while empty:
    a run that failed leaves nothing behind."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep it and its parents
            return


def check_readable(files: Iterable[str | os.PathLike]) -> None:
    """AudioError (one line) for the first file that is missing or not readable audio."""
    for f in files:
        audio_info(f)


def check_model_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The ``.keras`` files of ``paths`` (a run folder gives its model); ValueError (one line)
    for one without its ``.json`` sidecar."""
    models = [runtime.resolve_model_file(p) for p in paths]
    for m in models:
        if not m.is_file() or not m.with_suffix(".json").is_file():
            raise ValueError(f"{m}: no trained model (with its .json sidecar) there")
    return models


def add_upsampler_arguments(parser: argparse.ArgumentParser) -> None:
    """The model/settings flags shared by upsample_audio_file.py and evaluate.py."""
    parser.add_argument("--model", help="trained .keras model, or a shipped one by name: pretrained (the default "
                        "4x model, upsampling setting 'model'), fast (4x, about 2x faster), 8k (full-band 8 kHz "
                        "speech), telephony (8 kHz phone speech); default: chosen per input by its content (4 kHz: "
                        "pretrained, 8 kHz phone band: telephony, other 8 kHz: 8k; README, '8 kHz input')")
    settings.add_settings_arguments(parser)
    settings.add_override_arguments(parser, "--window-seconds", "--batch-size", "--input-lowpass")
    parser.add_argument("--subpixel", choices=settings.SUBPIXEL_IMPLEMENTATIONS,
                        help="subpixel shuffle implementation (TensorFlow runtime)")
    parser.add_argument("--runtime", choices=runtime.RUNTIMES, default="auto",
                        help="lite: the LiteRT export beside the model (MODEL.tflite, `make export`), no "
                             "TensorFlow; lite-int8: its int8-weight export (MODEL.int8.tflite); tf: "
                             "TensorFlow; auto (default): lite-int8, else lite, when its export matches the "
                             "model, else tf")
    parser.add_argument("--channel", choices=EVALUATION_CHANNELS, default="sox",
                        help="how the low-res input is made from high-res audio (--reference, evaluate.py): sox "
                             "(as preprocessing; default), telephone (a phone line: 300-3400 Hz, 8 kHz, G.711 "
                             "mu-/A-law; without --model the telephone path is used: telephony model, else sinc), "
                             "a resampler by name (speechsr.resamplers), or resamplers (one drawn per file)")


def upsampling_settings_from_args(args: argparse.Namespace) -> settings.UpsamplingSettings:
    """Upsampling settings of a script's ``--settings``/``--set`` and override flags."""
    return settings.load_for_script(args, ["upsampling"])["upsampling"]


#: subcommand -> (script path relative to the scripts folder, one-line description)
COMMANDS = {
    "upsample": ("upsample_audio_file.py", "upsample low-res (4 kHz) speech files to 16 kHz"),
    "batch": ("batch_upsample.py", "upsample an archive (folder, glob, manifest) on Ray Data, locally or on a cluster"),
    "evaluate": ("evaluate.py", "SNR/LSD (and more) of a model against sinc and spline on a test list"),
    "train": ("train.py", "train a model from the settings"),
    "splice": ("preprocessing/splice_raw_data.py", "cut a corpus into aligned 16 kHz / 4 kHz clip pairs"),
    "split": ("preprocessing/test_train_split.py", "train/validation/test CSV lists, split by recording"),
    "export": ("export_model.py", "export models to LiteRT for the lean runtime"),
    "compose": ("compose_model.py", "a model from one model's U-Net and a blend of others' high-band layers"),
    "build-op": ("src/build_ops.sh", "build the compiled subpixel-shuffle op (optional; needs g++)"),
}


def scripts_dir() -> Path:
    """Where the scripts are: the clone's root, or ``speechsr/_scripts`` of an installed wheel."""
    return settings.PACKAGE_DIR / "_scripts" if settings.INSTALLED else settings.PROJECT_ROOT


def load_script(relpath: str):
    """Import a script file (e.g. ``"train.py"``) as a module, without running its ``__main__``."""
    path = scripts_dir() / relpath
    name = "_speechsr_script_" + Path(relpath).stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not path.is_file():
        raise FileNotFoundError(f"{path}: script not found (broken installation?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_command(command: str, argv: list[str]) -> int:
    """Run ``speechsr COMMAND ARGV...``; returns the exit code."""
    relpath = COMMANDS[command][0]
    if command == "build-op":
        return build_op(argv)
    saved = sys.argv[0]
    sys.argv[0] = f"speechsr {command}"  # argparse's prog: "usage: speechsr upsample ..."
    try:
        return load_script(relpath).main(argv)
    finally:
        sys.argv[0] = saved


def build_op(argv: list[str]) -> int:
    """Build the compiled op into this package's ``ops/`` folder with its TensorFlow and g++."""
    if argv and argv[0] in ("-h", "--help"):
        print("usage: speechsr build-op\n\nBuild the SubpixelShuffle1D op (g++ and this Python's TensorFlow) "
              f"into {settings.PACKAGE_DIR / 'ops'}.\nWithout it the model runs its tf.reshape path, with "
              "identical results.")
        return 0
    if argv:
        print(f"error: speechsr build-op takes no arguments, got {' '.join(argv)}", file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHON=sys.executable, SPEECHSR_OPS_DIR=str(settings.PACKAGE_DIR / "ops"))
    code = subprocess.call(["bash", str(scripts_dir() / COMMANDS["build-op"][0])], env=env)
    return 2 if code else 0  # the script said why on stderr (no compiler, TensorFlow flags, g++ failed)


# ------------------------------------------------------------------ --version

def default_model_path() -> Path:
    """The model of the default upsampling settings (the shipped one unless changed)."""
    up = settings.load("upsampling", settings.DEFAULT_SETTINGS_DIR)
    return settings.project_path(up.model)


def model_card_version(model_path: str | os.PathLike) -> str:
    """The version of a model: ``"version"`` in its ``.json`` sidecar, else its card's
    ``Version: X`` line (``README.md`` beside it), else ``"unversioned"``."""
    model_path = Path(model_path)
    try:
        info = json.loads(model_path.with_suffix(".json").read_text())
        if info.get("version") is not None:
            return str(info["version"])
    except (OSError, ValueError, AttributeError):
        pass
    try:
        for line in (model_path.parent / "README.md").read_text().splitlines():
            key, _, value = line.strip().strip("*- ").partition(":")
            if key.strip("* ").lower() == "version" and value.strip(" *"):
                return value.strip(" *`")
    except OSError:
        pass
    return "unversioned"


def version_text() -> str:
    """Lines printed by ``speechsr --version``."""
    lines = [f"speechsr {speechsr.__version__}"]
    try:
        path = default_model_path()
    except settings.SettingsError as e:
        return "\n".join(lines + [f"default model: unknown ({e})"])
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        lines.append(f"model: {path.parent.name} {model_card_version(path)} ({path}, sha256 {digest})")
        lines.append(runtime_line(path))
    else:
        lines.append(f"model: {path} not found")
    lib = settings.PACKAGE_DIR / "ops" / "_subpixel_shuffle.so"
    if lib.is_file():
        lines.append(f"subpixel shuffle (TensorFlow runtime): compiled op ({lib}); used when it loads for "
                     "this TensorFlow")
    else:
        lines.append("subpixel shuffle (TensorFlow runtime): tf.reshape path (identical results; the compiled "
                     "op is not built: `speechsr build-op`)")
    return "\n".join(lines)


def runtime_line(model_path: Path) -> str:
    """Which runtime the default upsampling picks: the first LiteRT export of ``runtime.AUTO_ORDER``
    that matches, else TensorFlow."""
    for variant in runtime.AUTO_ORDER:
        try:
            exported, _ = runtime.export_info(model_path, variant)
            break
        except runtime.ExportUnavailable as e:
            reason = e  # the last one's is reported
    else:
        return f"runtime: TensorFlow ({reason})"
    if importlib.util.find_spec("ai_edge_litert") is None:
        return f"runtime: TensorFlow ({exported.name} needs ai-edge-litert: pip install 'speechsr[lite]')"
    return f"runtime: LiteRT ({exported.name}, exported from this model)"


# ------------------------------------------------------------------ entry point

def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items())
    return (f"usage: speechsr [--version] COMMAND [ARGS...]\n\n"
            f"Speech super-resolution, 4 kHz -> 16 kHz.\n\ncommands:\n{rows}\n\n"
            f"`speechsr COMMAND --help` lists a command's flags.")


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``speechsr``; returns the exit code (0 ok, 2 usage or run error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(version_text())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command '{argv[0]}' (one of: {', '.join(COMMANDS)}; see speechsr --help)",
              file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
