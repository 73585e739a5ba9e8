#!/usr/bin/env python3
"""Upsample low-res (4 kHz) speech to 16 kHz with a trained model; 8 kHz phone speech too.

Examples:
  python upsample_audio_file.py call.wav                        # -> call_upsampled.wav
  python upsample_audio_file.py call.wav -o out.wav --plot call.png
  python upsample_audio_file.py recordings/ -o upsampled/       # every audio file, recursively
  python upsample_audio_file.py clean16k.flac --reference       # metrics vs sinc and spline
  python upsample_audio_file.py phone8k.wav                     # telephony path (sinc until its model ships)
  python upsample_audio_file.py clean16k.flac --reference --channel telephone
  sox call.wav -t wav - | python upsample_audio_file.py - -o - | sox -t wav - out.flac   # pipes

Each input's path is chosen automatically (speechsr.routing; one log line says which and why):
4 kHz input -> the 4x model; 8 kHz telephone-band input (or a file whose content stops near
3.4-4 kHz) -> the telephony model models/pretrained-telephony/model.keras, or plain sinc
interpolation while that model does not exist. --model overrides. --reference --channel
telephone makes the test input through a phone line (8 kHz G.711) instead of sox.

The model runs in LiteRT (no TensorFlow import, fast start) when its export MODEL.int8.tflite
or MODEL.tflite matches it (`make export`), else in TensorFlow; --runtime tf|lite|lite-int8 chooses.

Files are streamed (bounded memory) and written atomically. Outputs keep the input's
PCM_16/PCM_24 subtype, else FLOAT (setting 'output_subtype'). Errors: one line on stderr,
exit code 2 (a folder batch reports each failed file, goes on, and exits 2 at the end);
Ctrl-C or SIGTERM: exit code 130, no partial output.
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

import speechsr  # noqa: F401  (sets TF environment defaults before TensorFlow loads)
from speechsr import audio, cli, files, loading, pipes, routing, settings
from speechsr.audio import AudioError, audio_info, check_output_format

# None of these import TensorFlow (speechsr.loading loads it only when no LiteRT export
# serves). speechsr.evaluation, speechsr.metrics and speechsr.plots (scipy, librosa,
# matplotlib) are imported where --reference / --plot need them: the lean path stays free of
# them (test_runtime.test_lean_path_never_imports_tensorflow).

SUFFIX = "_upsampled.wav"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio file(s) or folder(s) (.wav .flac .ogg .sph); '-' = a WAV stream on stdin")
    p.add_argument("-o", "--output", help=f"output file (one input; default <stem>{SUFFIX} beside it) "
                                          "or folder (required for several inputs / a folder); "
                                          "'-' = WAV on stdout (the default for input '-')")
    p.add_argument("--reference", action="store_true",
                   help="INPUT is high-res: downsample it, upsample, print the metrics of model, sinc, spline")
    p.add_argument("--no-perceptual", action="store_true",
                   help="with --reference: skip ViSQOL, STOI and DNSMOS P.808 (a few seconds per file)")
    p.add_argument("--plot", metavar="PNG", help="write a spectrogram comparison figure (one input only)")
    cli.add_upsampler_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary lines")
    return p.parse_args(argv)


def plan_outputs(args) -> list[tuple[Path, Path]]:
    """(input, output) pairs; checks a single input is readable and output folders creatable.

    Folder scans skip earlier outputs (``*_upsampled.*``) and anything under the output folder.
    No output (file, or ``--plot``'s figure) may be an input, an audio file found in an input
    folder (skipped ones included) or another output, by name or by link: checked before any write.
    """
    out = Path(args.output) if args.output else None
    many = len(args.inputs) > 1 or Path(args.inputs[0]).is_dir()
    named = {Path(i).resolve() for i in args.inputs}
    scanned = audio.collect_audio_files(args.inputs, exclude=out if many else None)
    found = [(f, rel) for f, rel in scanned if f.resolve() in named or not f.stem.endswith(SUFFIX[:-4])]
    if not found:
        raise AudioError(f"{', '.join(args.inputs)}: no audio files (.wav .flac .ogg .sph)")
    if many:
        what = "several inputs" if len(args.inputs) > 1 else f"{args.inputs[0]} is a folder"
        if out is None:
            raise ValueError(f"{what}: give an output folder with -o")
        if not out.is_dir() and out.suffix.lower() in audio.AUDIO_SUFFIXES:
            raise ValueError(f"{out}: {what}: -o names an output folder, not a file")
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
    check_collisions([f for f, _ in scanned], [d for _, d in pairs], Path(args.plot) if args.plot else None)
    for f, dest in pairs:
        check_output_format(dest)  # '-o out.mp3' is refused, not written as WAV bytes
    if args.plot:  # fail now, not after the upsampling; a missing folder is made, as for outputs
        try:
            cli.check_output_folder(Path(args.plot).parent, "figure folder")
        except AudioError as e:
            raise AudioError(f"{args.plot}: cannot write the figure ({e})") from None
    for folder in sorted({d.parent for _, d in pairs}):
        cli.check_output_folder(folder)
    return pairs


def check_collisions(inputs: list[Path], outputs: list[Path], plot: Path | None) -> None:
    """ValueError (one line) when an output or the figure would replace an input (any audio file
    scanned, earlier ``*_upsampled`` outputs in input folders included) or another output: the
    same name, or the same file through a link (device and inode)."""
    def keys(p: Path) -> set:
        return {p.resolve(), audio.file_key(p)} - {None}

    taken = {k: f for f in inputs for k in keys(f)}
    written: dict = {}
    for dest in outputs + ([plot] if plot else []):
        what = "the figure" if dest is plot else "output"
        hit = next((taken[k] for k in keys(dest) if k in taken), None)
        if hit is not None:
            raise ValueError(f"{dest}: {what} would overwrite the input {hit}; choose another output "
                             "name or folder")
        hit = next((written[k] for k in keys(dest) if k in written), None)
        if hit is not None:
            raise ValueError(f"{dest}: {what} would overwrite the output {hit}" if dest is plot else
                             "two inputs would write the same output name; upsample them separately")
        written.update(dict.fromkeys(keys(dest), dest))


def run_reference(src: Path, dest: Path, upsampler, up, args) -> None:
    from speechsr.evaluation import format_metrics_table, reference_mode  # scipy, librosa: see the top
    res = reference_mode(src, upsampler, args.channel)
    if not args.no_perceptual:
        from speechsr import metrics  # the perceptual metrics' packages: see the top
        ref, rate = res["signals"]["reference"], upsampler.output_rate
        for m, scores in res["metrics"].items():
            scores.update(metrics.perceptual(ref, res["signals"][m], rate))
        res["metrics"]["reference"] = {"p808": metrics.guarded(metrics.dnsmos_p808, ref, rate)}
    subtype = files.output_subtype(src, dest, up.output_subtype)
    y = res["signals"]["model"]
    audio.write_audio(dest, y if subtype == "FLOAT" else np.clip(y, -1, 1), upsampler.output_rate, subtype)
    how = (f"sox-downsampled to {upsampler.input_rate} Hz" if args.channel == "sox" else
           f"through a telephone channel (8 kHz G.711), {getattr(upsampler, 'runtime', 'model')} path")
    print(f"{src} ({res['duration_s']:.2f} s; input: {how})")
    print(format_metrics_table(res["metrics"]))
    print(f"wrote {dest}")
    if args.plot:
        from speechsr.plots import comparison_figure  # matplotlib: see the top
        sig, rates = res["signals"], res["rates"]
        comparison_figure(args.plot, {"input": (sig["low_res"], rates["low_res"]),
                                      "model": (sig["model"], rates["model"]),
                                      "sinc": (sig["sinc"], rates["sinc"]),
                                      "reference": (sig["reference"], rates["reference"])},
                          {m: v for m, v in res["metrics"].items() if "snr" in v}, title=f"{src.name}: reference mode")
        print(f"wrote {args.plot}")


def route_files(pairs, up, args, default_model) -> list:
    """The upsampler of each input (speechsr.routing: 4x model, telephony model or sinc; --model
    wins), each distinct one loaded once, before any file is written."""
    loaded, upsamplers = {}, []
    for src, _ in pairs:
        try:
            route = routing.choose_for_file(src, model=args.model, default_model=default_model)
        except AudioError:
            if len(pairs) == 1:
                raise
            route = routing.choose(model=default_model)  # unreadable: reported by run_files
        if args.model is None or not route.plain:
            routing.log_route(route, src)
        key = (route.kind, str(route.model_path))
        if key not in loaded:
            loaded[key] = routing.load_route(route, up, args.subpixel, args.runtime)
        upsamplers.append(loaded[key])
    return upsamplers


def run_files(pairs, upsamplers, up, args) -> int:
    failed = 0
    bar = tqdm(list(zip(pairs, upsamplers)), unit="file", disable=args.quiet or len(pairs) == 1)
    for (src, dest), upsampler in bar:
        try:
            info = files.upsample_file(src, dest, upsampler, up.output_subtype, up.block_seconds)
        except (AudioError, files.InputBandError, ValueError, OSError) as e:
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
        from speechsr.plots import comparison_figure  # matplotlib: see the top
        src, dest = pairs[0]
        upsampler = upsamplers[0]
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


def run_pipe(args, up) -> int:
    """INPUT '-' and/or '-o -': stream through stdin/stdout (speechsr.pipes), bounded memory.

    Reading stdin, windows run one at a time (unless --batch-size) in blocks of 0.25 s, so
    the first output follows the first window of input.
    """
    if len(args.inputs) > 1 or args.reference or args.plot:
        raise ValueError("'-' (stdin/stdout) takes one input and neither --reference nor --plot")
    stdin, stdout = args.inputs[0] == "-", args.output in (None, "-")
    src = None if stdin else Path(args.inputs[0])
    dest = None if stdout else Path(args.output)
    if src is not None:
        audio_info(src)
    if dest is not None:
        if dest.is_dir() or args.output.endswith(("/", "\\")):
            raise ValueError(f"{dest}: give an output file name for input '-'")
        check_output_format(dest)
        cli.check_output_folder(dest.parent)
    if stdout and sys.stdout.isatty():
        raise ValueError("refusing to write WAV to a terminal: pipe stdout into a program or use -o FILE")
    if stdin and args.batch_size is None:
        up = dataclasses.replace(up, batch_size=1)
    default_model = loading.resolve_model_path(up.model, from_settings=True)
    with (pipes.open_stream(sys.stdin.buffer) if stdin else pipes.open_file(src)) as f:
        # a file is measured on its first minute, a stream on its first seconds (speechsr.routing)
        if stdin:
            measured = args.model in (None, "telephony")  # telephony: to warn on full-band input
            f = pipes.Peeked(f, int(routing.STREAM_PROBE_SECONDS * f.samplerate) if measured else 0)
            route = routing.choose(f.samplerate, f.head, model=args.model, default_model=default_model,
                                   subtype=f.subtype)
        else:
            route = routing.choose_for_file(src, model=args.model, default_model=default_model)
        if args.model is None or not route.plain:
            routing.log_route(route, "stdin" if stdin else src)
        upsampler = routing.load_route(route, up, args.subpixel, args.runtime)
        if src is not None:
            files.check_input_band(src, upsampler.settings)
        try:
            info = pipes.upsample_stream(f, sys.stdout.buffer if stdout else dest, upsampler, up.output_subtype,
                                         0.25 if stdin else up.block_seconds, name=pipes.STDIN if stdin else str(src))
        except audio.WriteError:
            if stdout:  # broken pipe, full disk: no second error when stdout is flushed at exit
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, sys.stdout.fileno())
                os.close(null)
            raise
    if not args.quiet and not stdout:
        print(f"wrote {dest} ({info['seconds']:.2f} s, {info['subtype']}, {info['model_seconds']:.2f} s "
              f"to upsample, runtime {upsampler.runtime})")
    return 0




def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script()
    try:
        up = cli.upsampling_settings_from_args(args)
        if "-" in args.inputs or args.output == "-":
            return run_pipe(args, up)
        pairs = plan_outputs(args)
        default_model = loading.resolve_model_path(up.model, from_settings=True)
        if args.reference:
            route = routing.choose(model=args.model, default_model=default_model,
                                   telephone=args.channel == "telephone")
            routing.log_route(route, pairs[0][0])
            run_reference(*pairs[0], routing.load_route(route, up, args.subpixel, args.runtime), up, args)
            return 0
        return run_files(pairs, route_files(pairs, up, args, default_model), up, args)
    except BaseException as e:  # an interruption first: SIGTERM can surface as another error type
        return cli.failure_exit_code(e, (settings.SettingsError, AudioError, files.InputBandError, ValueError,
                                     OSError, RuntimeError), "\ninterrupted: no partial output was left")


if __name__ == "__main__":
    sys.exit(main())
