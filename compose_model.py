#!/usr/bin/env python3
"""Compose a model from trained parts: the U-Net of one model and the high-band envelope layer
of another, or a weighted blend of several such layers (same shape; fractions sum to 1); or
(--average) the weighted mean of whole models of the same settings, e.g. a run's last snapshots.

The composed model's high_band_* settings (how the layer plays: gain, tilt, contrast) are those
of the first --high-band model. OUT is written with its .json sidecar (settings, the U-Net
model's training record, and the composition); nothing is written unless it all succeeds.

Examples (the shipped default, version 3.0, was made this way: models/pretrained/README.md):
  python compose_model.py --unet models/librispeech_three_quarter/best.keras \\
      --high-band models/pretrained/model.keras -o models/librispeech_three_quarter/graft.keras
  python compose_model.py --unet models/librispeech_three_quarter/best.keras \\
      --high-band v2.2/model.keras models/librispeech_three_quarter_high_band/best.keras \\
      --fractions 0.7 0.3 -o models/librispeech_three_quarter/blend.keras
  python compose_model.py --unet models/pretrained-fast/model.keras --no-high-band -o fast_unet.keras
  python compose_model.py --average models/spectral_4x/snapshots/epoch_0{06,08,10}.keras -o soup.keras
"""

import argparse
import sys
from pathlib import Path

import speechsr  # noqa: F401  (sets TF environment defaults before TensorFlow loads)
from speechsr import cli
from speechsr.audio import AudioError
# TensorFlow only once composing
from speechsr.composition import average_fractions, average_models, check_fractions, compose_model
from speechsr.loading import import_tensorflow_quietly


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--unet", metavar="MODEL", help="trained model whose U-Net is used")
    source.add_argument("--average", nargs="+", metavar="MODEL",
                        help="two or more trained models of the same settings whose weights are averaged "
                             "(--fractions: one per model; default equal)")
    layer = p.add_mutually_exclusive_group()
    layer.add_argument("--high-band", nargs="+", metavar="MODEL",
                       help="trained model(s) whose high-band layers are blended; the first gives the play settings")
    layer.add_argument("--no-high-band", action="store_true", help="the U-Net alone: its high-band layer dropped")
    p.add_argument("--fractions", nargs="+", type=float, metavar="F",
                   help="one fraction per --high-band (or --average) model, each in [0, 1], summing to 1 "
                        "(default: 1 for one model; equal for --average)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras", help="the composed model (.keras)")
    return p.parse_args(argv)


def check_args(args) -> list[Path]:
    """The model files; ValueError (one line) for bad arguments, before TensorFlow loads."""
    args.high_band = args.high_band or []
    if args.average is not None:
        if args.high_band or args.no_high_band:
            raise ValueError("--average takes whole models: no --high-band or --no-high-band with it")
        args.fractions = average_fractions(args.fractions, len(args.average))
        models = cli.check_model_files(args.average)
    else:
        if not args.high_band and not args.no_high_band:
            raise ValueError("--unet needs --high-band MODEL... or --no-high-band")
        models = cli.check_model_files([args.unet, *args.high_band])
        args.fractions = check_fractions(args.fractions, len(args.high_band))
    out = Path(args.output)
    if out.suffix != ".keras":
        raise ValueError(f"{out}: the output must be a .keras file")
    if out.resolve() in [m.resolve() for m in models]:
        raise ValueError(f"{out}: the output must not be one of the source models")
    cli.check_output_folder(out.parent)
    return models


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script()
    try:
        models = check_args(args)
    except (ValueError, AudioError) as e:
        return cli.failure_exit_code(e, (ValueError, AudioError), "")
    import_tensorflow_quietly()
    from speechsr import model_io  # TensorFlow: imported once the arguments are checked
    try:
        if args.average is not None:
            model, model_settings, info = average_models(models, args.fractions)
        else:
            model, model_settings, info = compose_model(models[0], models[1:], args.fractions)
        model_io.save_model(model, args.output, model_settings, info)
    except (ValueError, OSError) as e:
        return cli.failure_exit_code(e, (ValueError, OSError), "interrupted; nothing written")
    if args.average is not None:
        mean = " + ".join(f"{f:.3g} x {m}" for f, m in zip(args.fractions, models))
        print(f"wrote {args.output}: the weights of {mean}")
        return 0
    blend = " + ".join(f"{f:g} x {m}" for f, m in zip(args.fractions, models[1:])) or "none"
    print(f"wrote {args.output}: U-Net of {models[0]}, high-band layer {blend}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
