#!/usr/bin/env python
"""Split the spliced clips into train.csv / validation.csv / test.csv (see ``speechsr.split``).

Grouped by recording by default (no recording in two splits), seeded and deterministic.
Reads ``data_settings.json`` (``--settings``); flags override single values.
Exit status: 0 ok, 2 bad settings / fractions / missing clips.
"""

from __future__ import annotations

import argparse
import os
import sys

from speechsr import cli, settings
from speechsr.split import SPLITS, write_splits


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    settings.add_settings_arguments(p)
    settings.add_override_arguments(p, "--output-dir", "--by", "--seed", "--test-fraction", "--validation-fraction")
    p.add_argument("--csv-dir", help="where the CSVs go (default: output_dir)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.start_script()
    try:
        data = settings.load_for_script(args, ["data"])["data"]
        s = write_splits(data, csv_dir=os.path.abspath(args.csv_dir) if args.csv_dir else None)
    except BaseException as e:  # an interruption first: SIGTERM can surface as another error type
        return cli.failure_exit_code(e, (settings.SettingsError, ValueError, OSError),
                                     "interrupted: rerun to write the splits (each CSV is written whole or not at all)")
    print(f"split by {data.split_by}, seed {data.split_seed}:")
    for name in SPLITS:
        print(f"  {name:<10} {s.recordings[name]:6d} recordings {s.clips[name]:7d} clips "
              f"{s.duration_s[name] / 60:8.1f} min  -> {s.csv[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
