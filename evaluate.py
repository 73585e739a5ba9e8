#!/usr/bin/env python3
"""Evaluate a trained model on high-res audio against the sinc and spline baselines.

Each file is sox-downsampled to the model's input rate (as preprocessing does), upsampled,
and compared with the original (SNR in dB, LSD; src/speechsr/metrics.py). Writes
results.md, results.csv and results.png into OUT_DIR; prints the mean row and the RTF.

Examples:
  python evaluate.py                                     # test split of the data settings
  python evaluate.py --test-csv data/librispeech_clips/test.csv --max-files 100
  python evaluate.py --input some/folder other.flac -o results/mine
"""

import argparse
import csv
import logging
import os
import sys
from pathlib import Path

import speechsr  # noqa: F401  (sets TF environment defaults before TensorFlow loads)
from speechsr import settings
from speechsr.audio import AudioError, audio_info
from speechsr.inference import add_upsampler_arguments


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--test-csv", help="split CSV with a 'high_res' column, paths relative to its folder "
                                        "(default: <data output_dir>/test.csv)")
    src.add_argument("--input", nargs="+", metavar="DIR_OR_FILE", help="high-res files or folders (recursive)")
    p.add_argument("-o", "--output-dir", help="output folder (default: results/<model name>)")
    p.add_argument("--max-files", type=int, help="evaluate only the first N files")
    add_upsampler_arguments(p)
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from speechsr import inference
    try:
        up = inference.upsampling_settings_from_args(args)
        if args.max_files is not None and args.max_files < 1:
            raise ValueError("--max-files must be >= 1")
        base = None
        if args.input:
            files = [f for f, _ in inference.collect_audio_files(args.input)]
            base = Path(args.input[0]) if len(args.input) == 1 and Path(args.input[0]).is_dir() else None
        else:
            csv_path = Path(args.test_csv or Path(settings.load("data", args.settings).output_dir) / "test.csv")
            files = files_from_csv(csv_path)
            base = csv_path.parent
        files = files[:args.max_files] if args.max_files else files
        if not files:
            raise AudioError("no audio files to evaluate")
        for f in files:
            audio_info(f)  # unreadable inputs fail before any work
        model_path = inference.resolve_model_path(args.model or up.model, from_settings=not args.model)
        out_dir = Path(args.output_dir or Path("results") / model_name(model_path))
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AudioError(f"{out_dir}: cannot create output folder ({e.strerror or e})") from None
        if not os.access(out_dir, os.W_OK):
            raise AudioError(f"{out_dir}: output folder is not writable")
        upsampler = inference.load_upsampler(model_path, up, args.subpixel)
        from speechsr.evaluation import evaluate, write_tables
        from speechsr.plots import evaluation_figure
        rows = evaluate(files, upsampler, progress=not args.quiet)
        summary = write_tables(rows, out_dir, title=f"Evaluation of {model_path}", base=base)
        evaluation_figure(out_dir / "results.png", rows)
    except (settings.SettingsError, AudioError, ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("| file | duration (s) | model SNR | model LSD | sinc SNR | sinc LSD | spline SNR | spline LSD | model time (s) |")
    print(summary["mean_row"])
    print(f"RTF {summary['rtf']:.4f} (model {summary['model_seconds']:.2f} s for {summary['duration_s']:.1f} s of audio)")
    print(f"wrote {summary['md']}, {summary['csv']}, {out_dir / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
