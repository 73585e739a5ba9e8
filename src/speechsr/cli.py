"""The ``speechsr`` command: one subcommand per top-level script, with that script's flags.

  speechsr upsample IN... [-o OUT]   upsample_audio_file.py
  speechsr evaluate ...              evaluate.py
  speechsr train ...                 train.py
  speechsr splice ...                preprocessing/splice_raw_data.py
  speechsr split ...                 preprocessing/test_train_split.py
  speechsr export ...                export_model.py
  speechsr build-op                  src/build_ops.sh: build the optional compiled subpixel op
  speechsr --version                 package version, shipped model card version, subpixel path

Each subcommand runs the script's own ``main(argv)``, so flags, ``--help``, settings handling
and exit codes (0 done, 2 error) are the script's. From a clone that is the script file itself;
an installed wheel carries verbatim copies as ``speechsr/_scripts/`` (see pyproject.toml).
Nothing here imports TensorFlow. :func:`stop_on_sigterm` and :func:`close_progress_bars` are
shared by the scripts themselves.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import speechsr
from speechsr import settings

_signalled = False


def _interrupt(signum, frame):
    global _signalled
    _signalled = True
    # The KeyboardInterrupt may land inside a C extension's callback (TensorFlow's nest flattening
    # calls __import__), which then reports it as an "unraisable" error or a thread's exception:
    # the run ends with the one interruption line, so those reports are noise.
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Make SIGTERM stop the process like Ctrl-C (KeyboardInterrupt), so temporary files are removed."""
    signal.signal(signal.SIGTERM, _interrupt)


def interrupted(error: BaseException) -> bool:
    """Whether ``error`` ended the run because of Ctrl-C or SIGTERM.

    True for a KeyboardInterrupt, and for any exception raised after SIGTERM arrived: a signal that
    lands inside a C extension (TensorFlow's nest flattening does this) can surface as that
    extension's own error, e.g. a TypeError, instead of the KeyboardInterrupt the handler raised.
    """
    return isinstance(error, KeyboardInterrupt) or _signalled


def failure_exit_code(error: BaseException, errors: tuple, interrupted_message: str) -> int:
    """The exit code of a script whose ``main`` ended with ``error``; call it from ``except BaseException``.

    An interruption (:func:`interrupted`) closes progress bars, prints ``interrupted_message`` and
    gives 130; one of the expected ``errors`` prints ``error: <message>`` and gives 2 (both on
    stderr, one line); anything else is re-raised.
    """
    if interrupted(error):
        close_progress_bars()  # else a bar redraws itself after the message at exit
        print(interrupted_message, file=sys.stderr)
        return 130
    if isinstance(error, errors):
        print(f"error: {error}", file=sys.stderr)
        return 2
    raise error


def close_progress_bars() -> None:
    """Close open tqdm bars (else a bar redraws itself after an interruption message)."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()


#: subcommand -> (script path relative to the scripts folder, one-line description)
COMMANDS = {
    "upsample": ("upsample_audio_file.py", "upsample low-res (4 kHz) speech files to 16 kHz"),
    "evaluate": ("evaluate.py", "SNR/LSD (and more) of a model against sinc and spline on a test list"),
    "train": ("train.py", "train a model from the settings"),
    "splice": ("preprocessing/splice_raw_data.py", "cut a corpus into aligned 16 kHz / 4 kHz clip pairs"),
    "split": ("preprocessing/test_train_split.py", "train/validation/test CSV lists, split by recording"),
    "export": ("export_model.py", "export models to LiteRT for the lean runtime"),
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
    return subprocess.call(["bash", str(scripts_dir() / COMMANDS["build-op"][0])], env=env)


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
    """Which runtime the default upsampling picks: the LiteRT export when it matches, else TensorFlow."""
    try:
        from speechsr import runtime as lean
    except ImportError:  # no lean runtime in this version
        return "runtime: TensorFlow"
    try:
        exported, _ = lean.export_info(model_path)
    except lean.ExportUnavailable as e:
        return f"runtime: TensorFlow ({e})"
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
