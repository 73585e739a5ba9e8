#!/usr/bin/env python3
"""Upsample low-res (4 kHz) speech to 16 kHz with a trained model.

Examples:
  python upsample_audio_file.py call.wav                        # -> call_upsampled.wav
  python upsample_audio_file.py call.wav -o out.wav --plot call.png
  python upsample_audio_file.py recordings/ -o upsampled/       # every audio file, recursively
  python upsample_audio_file.py clean16k.flac --reference       # SNR/LSD vs sinc and spline

Files are streamed (bounded memory) and written atomically. Outputs keep the input's
PCM_16/PCM_24 subtype, else FLOAT (setting 'output_subtype'). Errors: one line on stderr,
exit code 2.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import speechsr  # noqa: F401  (sets TF environment defaults before TensorFlow loads)
from speechsr import settings
from speechsr.audio import AudioError, audio_info
from speechsr.inference import add_upsampler_arguments

SUFFIX = "_upsampled.wav"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file(s) or folder(s) (.wav .flac .ogg .sph)")
    p.add_argument("-o", "--output", help=f"output file (one input; default <stem>{SUFFIX} beside it) "
                                          "or folder (required for several inputs / a folder)")
    p.add_argument("--reference", action="store_true",
                   help="INPUT is high-res: downsample it, upsample, print SNR/LSD of model, sinc, spline")
    p.add_argument("--plot", metavar="PNG", help="write a spectrogram comparison figure (one input only)")
    add_upsampler_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary lines")
    return p.parse_args(argv)


def plan_outputs(args) -> list[tuple[Path, Path]]:
    """(input, output) pairs; checks a single input is readable and output folders creatable.

    Folder scans skip earlier outputs (``*_upsampled.*``) and anything under the output folder.
    """
    from speechsr.inference import collect_audio_files
    out = Path(args.output) if args.output else None
    many = len(args.inputs) > 1 or Path(args.inputs[0]).is_dir()
    named = {Path(i).resolve() for i in args.inputs}
    found = [(f, rel) for f, rel in collect_audio_files(args.inputs, exclude=out if many else None)
             if f.resolve() in named or not f.stem.endswith(SUFFIX[:-4])]
    if not found:
        raise AudioError(f"{', '.join(args.inputs)}: no audio files (.wav .flac .ogg .sph)")
    if many:
        if out is None:
            raise ValueError("several inputs: give an output folder with -o")
        if (args.reference or args.plot) and len(found) > 1:
            raise ValueError("--reference/--plot take one input file; use evaluate.py for many")
        pairs = [(f, out / rel.with_name(rel.name + SUFFIX)) for f, rel in found]
    else:
        f = found[0][0]
        if out is None:
            dest = f.with_name(f.stem + SUFFIX)
        elif out.is_dir() or args.output.endswith(("/", "\\")):
            dest = out / (f.stem + SUFFIX)
        else:
            dest = out
        pairs = [(f, dest)]
        audio_info(f)  # a one-line AudioError before any work (batches report per file)
    if len({d.resolve() for _, d in pairs}) < len(pairs):
        raise ValueError("two inputs would write the same output name; upsample them separately")
    for f, dest in pairs:
        if dest.resolve() == f.resolve():
            raise ValueError(f"{dest}: output would overwrite the input")
    for folder in sorted({d.parent for _, d in pairs}):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AudioError(f"{folder}: cannot create output folder ({e.strerror or e})") from None
        if not os.access(folder, os.W_OK):
            raise AudioError(f"{folder}: output folder is not writable")
    return pairs


def run_reference(src: Path, dest: Path, upsampler, up, args) -> None:
    import numpy as np
    from speechsr import audio
    from speechsr.inference import format_metrics_table, output_subtype, reference_mode
    res = reference_mode(src, upsampler)
    subtype = output_subtype(src, dest, up.output_subtype)
    y = res["signals"]["model"]
    audio.write_audio(dest, y if subtype == "FLOAT" else np.clip(y, -1, 1), upsampler.output_rate, subtype)
    print(f"{src} ({res['duration_s']:.2f} s; input: sox-downsampled to {upsampler.input_rate} Hz)")
    print(format_metrics_table(res["metrics"]))
    print(f"wrote {dest}")
    if args.plot:
        from speechsr.plots import comparison_figure
        sig, rates = res["signals"], res["rates"]
        comparison_figure(args.plot, {"input": (sig["low_res"], rates["low_res"]),
                                      "model": (sig["model"], rates["model"]),
                                      "sinc": (sig["sinc"], rates["sinc"]),
                                      "reference": (sig["reference"], rates["reference"])},
                          res["metrics"], title=f"{src.name}: reference mode")
        print(f"wrote {args.plot}")


def run_files(pairs, upsampler, up, args) -> int:
    from tqdm import tqdm
    from speechsr.inference import InputBandError, upsample_file
    failed = 0
    bar = tqdm(pairs, unit="file", disable=args.quiet or len(pairs) == 1)
    for src, dest in bar:
        try:
            info = upsample_file(src, dest, upsampler, up.output_subtype, up.block_seconds)
        except (AudioError, InputBandError, ValueError, OSError) as e:
            if len(pairs) == 1:
                raise
            failed += 1
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        if not args.quiet and len(pairs) == 1:
            lowpass = ", input band-limited (its band edge was not clean)" if info["input_lowpass"] else ""
            print(f"wrote {dest} ({info['seconds']:.2f} s, {info['subtype']}, "
                  f"{info['model_seconds']:.2f} s to upsample{lowpass})")
    if args.plot:
        from speechsr import audio
        from speechsr.plots import comparison_figure
        src, dest = pairs[0]
        x, _ = audio.read_audio(src, rate=upsampler.input_rate, stop=20.0)
        y, _ = audio.read_audio(dest, stop=20.0)
        comparison_figure(args.plot, {"input": (x, upsampler.input_rate), "output": (y, upsampler.output_rate)},
                          title=f"{src.name} -> {dest.name}")
        if not args.quiet:
            print(f"wrote {args.plot}")
    if failed:
        print(f"error: {failed} of {len(pairs)} files failed", file=sys.stderr)
        return 2
    if len(pairs) > 1 and not args.quiet:
        print(f"wrote {len(pairs)} files into {args.output}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from speechsr import inference
    try:
        up = inference.upsampling_settings_from_args(args)
        pairs = plan_outputs(args)
        model_path = inference.resolve_model_path(args.model or up.model, from_settings=not args.model)
        upsampler = inference.load_upsampler(model_path, up, args.subpixel)
        if args.reference:
            run_reference(*pairs[0], upsampler, up, args)
            return 0
        return run_files(pairs, upsampler, up, args)
    except (settings.SettingsError, AudioError, inference.InputBandError, ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
