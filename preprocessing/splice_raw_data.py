#!/usr/bin/env python
"""Cut a speech corpus into aligned 16 kHz / 4 kHz clip pairs (see ``speechsr.splicing``).

Reads ``data_settings.json`` (``--settings``); flags override single values. Writes
``<output_dir>/clips/<recording>/`` and ``<output_dir>/data_info.json``. Rerunning reuses
the recordings already complete. Exit status: 0 ok, 2 bad settings / missing corpus / an
output that cannot be written (disk full: complete recordings are kept, rerun to resume) / no
clips at all (every recording skipped), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import sys

from speechsr import cli, settings
from speechsr.audio import WriteError
from speechsr.corpus import CorpusError
from speechsr.splicing import splice_corpus


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    settings.add_settings_arguments(p)
    settings.add_override_arguments(p, "--input-dir", "--output-dir", "--start-time", "--end-time", "--splice-duration")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script()
    try:
        cli.check_minimum("--jobs", args.jobs, 1)
        data = settings.load_for_script(args, ["data"])["data"]
        s = splice_corpus(data, jobs=args.jobs, progress=not args.no_progress)
    except BaseException as e:  # an interruption first: SIGTERM can surface as another error type
        if isinstance(e, WriteError) and not cli.interrupted(e):
            print(f"error: {e}; complete recordings are kept, rerun to continue", file=sys.stderr)
            return 2
        return cli.failure_exit_code(e, (settings.SettingsError, CorpusError, ValueError, OSError),
                                 "interrupted: rerun to continue (complete recordings are kept)")
    print(f"recordings: {s.found} found, {s.processed} processed, {s.reused} reused, "
          f"{len(s.skipped)} skipped")
    for sk in s.skipped[:10]:
        print(f"  skipped {sk['recording_id']}: {sk['reason']}")
    if len(s.skipped) > 10:
        print(f"  ... {len(s.skipped) - 10} more in {s.data_info}")
    for w in s.warnings[:10]:
        print(f"  warning: {w['warning']}")
    if len(s.warnings) > 10:
        print(f"  ... {len(s.warnings) - 10} more warnings in {s.data_info}")
    print(f"clips: {s.clips} x {s.clip_duration_s:g} s = {s.total_duration_s:.1f} s "
          f"({s.total_duration_s / 3600:.2f} h)")
    print(f"time: {s.elapsed_s:.1f} s for {s.input_seconds:.1f} s of new input audio "
          f"= {s.throughput:.0f}x real time")
    print(f"wrote {s.data_info}")
    if not s.clips:  # nothing to train on: a run that made nothing is not a success
        print(f"error: no clips written: all {s.found} recordings were skipped (reasons in {s.data_info})",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
