"""Benchmark: our models beside the peers' published outputs on the same inputs (one command).

For every utterance folder of a peer set (``reference.wav``, ``lr.wav``, ``aero.wav``,
``seanet.wav``, ...; ``../shared/data/peer-samples/README.md``) it runs ``speechsr upsample
lr.wav`` (the default command, routing included; ``--model`` adds other systems), makes sinc
and spline from the same ``lr.wav``, and scores every output against ``reference.wav`` with the
field's protocol (:mod:`speechsr.peers`): ViSQOL-a48 and LSD (headline), SNR, LSD-HF, high-band
energy, HF coherence, DNSMOS P.808 and the lattice ViSQOL (reported only). It prints the mean
table and writes, under ``--out``: ``peers.md`` (mean table), ``peers.csv`` (one row per
utterance and system), ``peers.png`` (spectrograms of the first utterance: reference, AERO,
SEANet, ours, sinc) and the outputs themselves. Works for 4 -> 16 kHz and 8 -> 16 kHz sets
alike. Examples::

    python benchmarks/bench_peers.py ../shared/data/peer-samples/4to16
    python benchmarks/bench_peers.py ../shared/data/peer-samples/8to16 --model default= --model fast=fast
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("peer_set", type=Path, help="a peer-set folder, e.g. ../shared/data/peer-samples/4to16")
    p.add_argument("--model", action="append", metavar="LABEL=MODEL",
                   help="a system of ours: LABEL=MODEL runs 'speechsr upsample --model MODEL' (a name or a "
                        ".keras path; empty MODEL: the default command). Repeatable; default: the default command")
    p.add_argument("--out", type=Path, help="output folder (default: out/peers/<peer set's name>)")
    p.add_argument("--no-perceptual", action="store_true", help="skip ViSQOL and P.808 (fast)")
    p.add_argument("--jobs", type=int, default=None, help="scoring processes (default: all cores)")
    p.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    return p.parse_args(argv)


def systems_from(specs: list[str] | None) -> dict[str, str | None]:
    """``LABEL=MODEL`` specs -> {label: model or None}; ValueError on a spec without '='."""
    if not specs:
        return {"speechsr (default command)": None}
    out = {}
    for spec in specs:
        label, sep, model = spec.partition("=")
        if not sep or not label:
            raise ValueError(f"--model {spec!r}: expected LABEL=MODEL (e.g. 'fast=fast', 'default=')")
        out[label] = model or None
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        systems = systems_from(args.model)
        from speechsr import peers  # checks the folder before any work
        folders = peers.utterances(args.peer_set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or Path("out") / "peers" / args.peer_set.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows = peers.run_benchmark(args.peer_set, systems, out, perceptual=not args.no_perceptual, jobs=args.jobs,
                                   limit=args.limit, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except RuntimeError as e:  # one of our systems failed: its error line
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = min(len(folders), args.limit or len(folders))
    title = f"{args.peer_set.resolve().name}: means over {n} utterance(s)"
    table = peers.markdown_table(rows, title)
    routes = sorted({f"- {r['system']}: {r['route']}" for r in rows if r["route"]})

    from speechsr.audio import atomic_path
    with atomic_path(out / "peers.md") as tmp:
        tmp.write_text(table + "\n\nRoutes taken by our systems:\n" + "\n".join(routes) + "\n")
    keys = ["utterance", "system", "kind", *peers.METRICS, "route", "output"]
    with atomic_path(out / "peers.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    figure(rows, out / "peers.png", systems, args.peer_set.resolve().name)
    print(table)
    print("\n".join(routes))
    print(f"wrote {out / 'peers.md'}, {out / 'peers.csv'}, {out / 'peers.png'}")
    return 0


def figure(rows: list[dict], path: Path, systems: dict, peer_set: str) -> None:
    """Spectrograms of the first utterance: reference, AERO, SEANet, our systems, published sinc;
    titled with the utterance and the peer set's name (e.g. ``4to16``)."""
    from speechsr import audio
    from speechsr.plots import comparison_figure
    first = rows[0]["utterance"]
    wanted = ["reference (real 16 kHz)", "AERO", "SEANet", *systems, "sinc (published)"]
    by_name = {r["system"]: r for r in rows if r["utterance"] == first}
    signals, scores = {}, {}
    for name in wanted:
        if name in by_name:
            x, rate = audio.read_audio(by_name[name]["output"])
            signals[name] = (x, rate)
            if name != "reference (real 16 kHz)":
                scores[name] = by_name[name]
    comparison_figure(path, signals, scores, title=f"{first}: {peer_set}")


if __name__ == "__main__":
    sys.exit(main())
