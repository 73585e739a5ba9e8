#!/usr/bin/env python3
"""Upsample an archive of speech files to 16 kHz on Ray Data: this machine or a Ray cluster.

Examples:
  python batch_upsample.py recordings/ -o upsampled/                  # local Ray, one worker per CPU
  python batch_upsample.py 'calls/**/*.wav' -o upsampled/             # a glob (quoted)
  python batch_upsample.py files.parquet -o s3://bucket/upsampled/    # a manifest; object storage
  python batch_upsample.py recordings/ -o upsampled/ --address auto   # join the Ray cluster here

INPUT is a folder (recursively), a glob, or a manifest: a .csv or .parquet file with a column
`path` (relative to the manifest's folder, or absolute, or a URI) and optionally `output`
(relative to the output root). Each file is upsampled exactly as `speechsr upsample` does it
(routing per file: 4 kHz -> the 4x model, 8 kHz phone speech -> the telephony model; same
bytes out) into OUTPUT, which mirrors the input tree (sub/NAME.flac -> sub/NAME_upsampled.wav),
plus OUTPUT/results.parquet and results.csv: one row per input (duration, route and why,
status ok / skipped / error: <why>, seconds, model and version).

A file that fails is a row with its error; the job goes on (exit code 0; the summary line
counts them). A re-run with the same OUTPUT skips the files whose output and row are complete,
so an interrupted job resumes. Ray is the optional extra speechsr[distributed]; without it this
command says how to install it (exit 2). Errors: one line on stderr, exit code 2; Ctrl-C: 130.
"""

import argparse
import sys
import time
from pathlib import Path

from speechsr import cli, runtime, settings, storage
from speechsr.audio import AudioError

# speechsr.batch (numpy, soundfile) and speechsr.cluster (Ray) are imported after the checks.


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="folder, glob, or manifest (.csv/.parquet with a path column)")
    p.add_argument("-o", "--output", required=True, help="output root (a folder or a URI)")
    p.add_argument("--address", help="join a Ray cluster: auto (the one started on this machine by `ray "
                                     "start`), ray://HOST:PORT (Ray Client) or HOST:PORT; default: start Ray here")
    p.add_argument("--num-workers", type=int, help="workers (actors; default: the cluster's CPUs / --cpus-per-worker)")
    p.add_argument("--cpus-per-worker", type=int, default=1,
                   help="CPUs per worker, one LiteRT interpreter each (default: 1)")
    p.add_argument("--model", help="a model for every file (path, or pretrained|fast|telephony); default: "
                                   "chosen per file, as speechsr upsample")
    settings.add_settings_arguments(p)
    p.add_argument("--runtime", choices=runtime.RUNTIMES, default="auto",
                   help="as speechsr upsample (default auto: the LiteRT export when it matches the model)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the workers' log lines")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    return p.parse_args(argv)


def check(args) -> None:
    """Flags, the input and the output root, before Ray or any model is loaded."""
    cli.check_minimum("--num-workers", args.num_workers, 1)
    cli.check_minimum("--cpus-per-worker", args.cpus_per_worker, 1)
    if not storage.is_remote(args.input) and not any(c in args.input for c in "*?[") \
            and not storage.local_path(args.input).exists():
        raise AudioError(f"{args.input}: not found")
    if not storage.is_remote(args.output):
        cli.check_output_folder(storage.local_path(args.output))


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script()
    expected = (settings.SettingsError, AudioError, ValueError, OSError, RuntimeError)
    try:
        check(args)
        up = cli.upsampling_settings_from_args(args)
        from speechsr import batch, cluster  # after the checks (see the top)
        if not cluster.available():
            print(f"error: {cluster.INSTALL_HINT}", file=sys.stderr)
            return 2
        tasks = batch.plan(args.input, args.output)
        from tqdm import tqdm
        expected += cluster.errors()
        resources = cluster.connect(args.address, quiet=not args.verbose)
        workers = args.num_workers or cluster.default_workers(args.cpus_per_worker)
        if not args.quiet:
            print(f"{len(tasks)} files; Ray: {resources.get('CPU', 0):g} CPUs, {workers} workers x "
                  f"{args.cpus_per_worker} CPU", file=sys.stderr)
        bar = tqdm(total=len(tasks), unit="file", disable=args.quiet)
        t0 = time.perf_counter()
        rows = batch.run(tasks, args.output,
                         lambda todo: cluster.execute(todo, {"up": up, "model": args.model, "runtime": args.runtime},
                                                      workers, args.cpus_per_worker),
                         on_row=lambda row: bar.update(1), on_skip=bar.update)
        bar.close()
        if not args.quiet:
            print(batch.summary(rows, time.perf_counter() - t0))
            print(f"wrote {batch.results_paths(args.output)[0]} and .csv")
        return 0
    except BaseException as e:  # an interruption first: SIGTERM can surface as another error type
        return cli.failure_exit_code(e, expected, "\ninterrupted: finished files are in the manifest; re-run to resume")


if __name__ == "__main__":
    sys.exit(main())
