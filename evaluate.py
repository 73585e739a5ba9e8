#!/usr/bin/env python3
"""Evaluate a trained model on high-res audio against the sinc and spline baselines.

Each file is sox-downsampled to the model's input rate (as preprocessing does; --channel
telephone: sent through a phone line, 8 kHz G.711, see speechsr.channel), upsampled,
and compared with the original: SNR, LSD (+LF/HF), high-band energy, pause noise, ViSQOL,
STOI and DNSMOS P.808 (README "Metrics", src/speechsr/metrics.py). Writes results.md,
results.csv, results.png and the listening page results.html (+ listening/) into OUT_DIR;
prints the mean table and the RTF.

Examples:
  python evaluate.py                                     # test split of the data settings
  python evaluate.py --test-csv data/librispeech_clips/test.csv --max-files 100
  python evaluate.py --input some/folder other.flac -o results/mine
  python evaluate.py --channel telephone --max-files 10   # phone input: telephony model, else sinc
"""

import argparse
import csv
import sys
from pathlib import Path

import speechsr  # noqa: F401  (sets TF environment defaults before TensorFlow loads)
from speechsr import audio, cli, loading, routing, settings
from speechsr.audio import AudioError

# speechsr.evaluation and speechsr.plots (scipy, librosa, matplotlib; perceptual-metric workers)
# are imported after the argument and file checks, like TensorFlow (loaded with the model).


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--test-csv", help="split CSV with a 'high_res' column, paths relative to its folder "
                                        "(default: <data output_dir>/test.csv)")
    src.add_argument("--input", nargs="+", metavar="DIR_OR_FILE", help="high-res files or folders (recursive)")
    p.add_argument("-o", "--output-dir", help="output folder (default: results/<model name>)")
    p.add_argument("--max-files", type=int, help="evaluate only the first N files")
    cli.add_upsampler_arguments(p)
    p.add_argument("--no-perceptual", action="store_true",
                   help="skip ViSQOL, STOI and DNSMOS (the slow metrics)")
    p.add_argument("--jobs", type=int, help="processes scoring the perceptual metrics (default: all cores)")
    p.add_argument("--listen", type=int, default=3, metavar="N",
                   help="listening page: the first N files and the N worst by ViSQOL gain over sinc "
                        "(0 = no page) (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def files_from_csv(csv_path: Path) -> list[Path]:
    """High-res paths of a split CSV (column ``high_res``, relative to the CSV's folder)."""
    if not csv_path.is_file():
        raise AudioError(f"{csv_path}: test CSV not found (make one with preprocessing/test_train_split.py, "
                         "or pass --input)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "high_res" not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path}: no 'high_res' column")
        return [(csv_path.parent / r["high_res"]) for r in reader if r.get("high_res")]


def model_name(path: Path) -> str:
    """Name for the results folder: the file stem, or its folder's name for model/best.keras."""
    path = path.resolve()
    if path.suffix != ".keras":
        return path.name  # a run folder
    return path.parent.name if path.stem in ("model", "best") else path.stem


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script()
    made = []  # output folders this run created: removed again when it fails
    try:
        up = cli.upsampling_settings_from_args(args)
        cli.check_minimum("--max-files", args.max_files, 1)
        cli.check_minimum("--jobs", args.jobs, 1)
        cli.check_minimum("--listen", args.listen, 0)
        base = None
        if args.input:
            files = [f for f, _ in audio.collect_audio_files(args.input)]
            base = Path(args.input[0]) if len(args.input) == 1 and Path(args.input[0]).is_dir() else None
        else:
            # one rule for every script: a flag is relative to the current folder, a settings
            # path to the project root
            csv_path = (Path(args.test_csv) if args.test_csv else
                        settings.project_path(settings.load("data", args.settings).output_dir) / "test.csv")
            files = files_from_csv(csv_path)
            base = csv_path.parent
        files = files[:args.max_files] if args.max_files else files
        if not files:
            raise AudioError("no audio files to evaluate")
        cli.check_readable(files)  # unreadable inputs fail before any work
        route = routing.choose(model=args.model, telephone=args.channel == "telephone",
                               default_model=loading.resolve_model_path(up.model, from_settings=True))
        routing.log_route(route, "evaluation")
        model_path = route.model_path or Path("sinc")
        out_dir = Path(args.output_dir or Path("results") / (model_name(model_path) + (
            "-telephone" if args.channel == "telephone" else "")))
        made = cli.check_output_folder(out_dir)
        upsampler = routing.load_route(route, up, args.subpixel, args.runtime)
        from speechsr.evaluation import evaluate, pick_listening_files, write_listening_page, write_tables
        from speechsr.plots import evaluation_figure
        rows = evaluate(files, upsampler, progress=not args.quiet, perceptual=not args.no_perceptual, jobs=args.jobs,
                        channel=args.channel)
        title = f"Evaluation of {route.describe() if route.kind == 'sinc' else settings.shown_path(model_path)}" + (
            " (input through a telephone channel)" if args.channel == "telephone" else "")
        summary = write_tables(rows, out_dir, title=title, base=base)
        evaluation_figure(out_dir / "results.png", rows)
        page = None
        if args.listen:
            page = write_listening_page(rows, pick_listening_files(rows, args.listen, args.listen), upsampler,
                                        out_dir, title, base, args.channel)
    except BaseException as e:  # an interruption first: SIGTERM can surface as another error type
        cli.remove_empty_folders(made)
        return cli.failure_exit_code(e, (settings.SettingsError, AudioError, ValueError, OSError, RuntimeError),
                                     "\ninterrupted: no results were written")
    print(summary["mean_table"])
    print(f"RTF {summary['rtf']:.4f} (model {summary['model_seconds']:.2f} s for {summary['duration_s']:.1f} s of audio)")
    print(f"wrote {summary['md']}, {summary['csv']}, {out_dir / 'results.png'}" + (f", {page}" if page else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
