"""`hrm-eval report RESULTS_URI`: regenerate a run's report.html and report.md from its stored
results (no model runs). Also `python -m jobs.report RESULTS_URI` on a Ray cluster's head."""

from __future__ import annotations

import argparse
import sys

from cluster.manifest import read_manifest
from cluster.report.build import write_report
from cluster.results.health import write_health


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Build report.html (one self-contained file) and report.md (plots under plots/) of a run from its stored "
        "results: manifest, metrics, leaderboard, health and unit records. RESULTS_URI is the run directory "
        "<output>/<run id>, local or s3://. A run that stopped or failed part-way gets a partial report: the figures "
        "of the units it committed, marked PARTIAL; nothing else is written."
    )
    parser.add_argument("results", metavar="RESULTS_URI", help="a run directory: <output>/<run id>")
    parser.add_argument(
        "--other-protocol", metavar="RUN_URI",
        help="a run of the same checkpoints and data under the other protocol (fixed vs adaptive): adds the "
             "forward steps adaptive halting saved and the accuracy it cost",
    )
    parser.add_argument(
        "--health", action="store_true",
        help="first (re)measure health.json from the run's checkpoints (they must still be readable, unchanged)",
    )


def run(args: argparse.Namespace) -> int:
    if args.health:
        print(f"health: {write_health(args.results, read_manifest(args.results))}")
    html_uri, md_uri = write_report(args.results, args.other_protocol)
    print(f"report: {html_uri}")
    print(f"        {md_uri}")
    return 0


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["report", *sys.argv[1:]]))
