#!/usr/bin/env python3
"""Export trained models to LiteRT for the lean runtime: NAME.keras -> NAME.tflite (float32)
and, on request, NAME.int8.tflite (int8 weights), each with a .json sidecar recording NAME.keras's
SHA-256.

An export is skipped when its sidecar already records this exact NAME.keras; --force redoes
it. The exported output is checked against the trained model (SNR >= 60 dB float32,
>= 35 dB int8) before anything is written. Without --variants: the float32 export, and the int8
one where one exists already (refreshed when the model changed). An int8 export is what
`--runtime auto` runs when present, so make one only after measuring its quality (README,
"Fast start: the lean runtime").

Examples:
  python export_model.py                                  # the shipped models (make export)
  python export_model.py models/librispeech/best.keras
  python export_model.py models/librispeech/best.keras --variants lite lite-int8
"""

import argparse
import sys
from pathlib import Path

import speechsr  # noqa: F401  (sets TF environment defaults before TensorFlow loads)
from speechsr import cli, runtime
from speechsr.loading import import_tensorflow_quietly

DEFAULT_MODELS = ["models/pretrained/model.keras"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"trained .keras model(s) (default: {DEFAULT_MODELS[0]})")
    p.add_argument("--force", action="store_true", help="export even when the export is current")
    p.add_argument("--variants", nargs="+", choices=("lite", "lite-int8"),
                   help="float32 (lite) and/or int8-weight (lite-int8) exports (default: lite, and lite-int8 "
                        "where the model has one already)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script()
    try:
        models = cli.check_model_files(args.models or DEFAULT_MODELS)
    except ValueError as e:
        return cli.failure_exit_code(e, (ValueError,), "")
    jobs = [(m, v) for m in models for v in args.variants or _default_variants(m)]
    todo = [(m, v) for m, v in jobs if args.force or not _current(m, v)]
    for m, v in jobs:
        if (m, v) not in todo:
            print(f"{runtime.exported_path(m, v)} is up to date")
    if not todo:
        return 0
    import_tensorflow_quietly()
    from speechsr.export import export_model  # TensorFlow: imported once the arguments are checked
    for m, v in todo:
        try:
            res = export_model(m, v, force=True)
        except ValueError as e:
            if v == "lite":
                print(f"error: {e}", file=sys.stderr)
                return 2
            # the optional int8 export: never leave one made from an older model behind
            for stale in (runtime.exported_path(m, v), runtime.export_sidecar(runtime.exported_path(m, v))):
                stale.unlink(missing_ok=True)
            print(f"warning: {e}; no {v} export for {m.name}", file=sys.stderr)
            continue
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {res['path']} ({res['bytes'] / 1e6:.1f} MB; matches {m.name}: SNR {res['snr_db']:.1f} dB, "
              f"max |diff| {res['max_abs_diff']:.1e})")
    return 0


def _default_variants(model: Path) -> list[str]:
    """The float32 export, and the int8 one where the model has one already (to keep it current)."""
    return ["lite", "lite-int8"] if runtime.exported_path(model, "lite-int8").exists() else ["lite"]


def _current(model: Path, variant: str) -> bool:
    try:
        runtime.export_info(model, variant)
    except runtime.ExportUnavailable:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
