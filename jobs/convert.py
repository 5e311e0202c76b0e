"""`hrm-eval convert KIND …`: raw data → puzzle datasets.

Each KIND lives in its own module under `hrm.converters` exposing
`configure(parser)` and `convert(args) -> dict` (the summary, also written into
dataset.json). This module only dispatches and prints the summary.
"""

from __future__ import annotations

import argparse
import importlib
import json

KINDS: dict[str, str] = {
    "sudoku-csv": "hrm.converters.sudoku",
    "arc": "hrm.converters.arc",
    "maze": "hrm.converters.maze",
    "jsonl": "hrm.converters.jsonl",
    "reference": "hrm.converters.reference",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert raw data into a puzzle dataset (our Parquet layout or the reference numpy "
        "layout), locally or on s3://. Run `hrm-eval convert KIND --help` for each kind."
    )
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, module_name in KINDS.items():
        module = importlib.import_module(module_name)
        kind_parser = sub.add_parser(kind, help=(module.__doc__ or "").strip().splitlines()[0],
                                     description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure(kind_parser)
        kind_parser.add_argument("--json", action="store_true",
                                 help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    summary = importlib.import_module(KINDS[args.kind]).convert(args)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0
