"""`hrm-eval vote RUN`: votes computed again from a finished run's stored predictions."""

from __future__ import annotations

import argparse
import json
import re
import time

from hrm.errors import InputError

from cluster.config import EnsembleConfig
from cluster.report.build import write_report
from cluster.results.layout import revote_uri
from cluster.results.revotes import revote

from jobs.cli import positive_int

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Vote again on a finished run's stored predictions, with other settings: ARC pass@k, checkpoint "
        "ensembles, the TTA vote level. No checkpoint is read, no model runs, no Ray starts; the dataset is read "
        "for its labels (it must be the one the run evaluated). The results go to RUN/revotes/ID/ beside the "
        "run's own votes, which stay as they are, and the report is written again with them."
    )
    parser.add_argument("run", metavar="RUN", help="a finished run's results directory (local or s3://)")
    parser.add_argument("--pass-k", type=positive_int, nargs="+", metavar="K", help="ARC pass@k to report")
    parser.add_argument(
        "--ensemble", action="append", metavar="NAME=top_k:K|NAME=members:A,B,…",
        help="an ensemble to vote (repeatable; replaces the run's ensembles): the K best checkpoints by exact "
             "accuracy, or the checkpoints named")
    parser.add_argument("--method", choices=("sequence", "token", "both"), default="both",
                        help="how the --ensemble members vote (default: both)")
    parser.add_argument("--tta-level", choices=("sequence", "token"), help="vote TTA copies per sequence or token")
    parser.add_argument("--id", dest="revote_id", help="the re-vote's name (default: the time, UTC)")
    parser.add_argument("--json", action="store_true", help="print the re-vote's document as one JSON object")


def run(args: argparse.Namespace) -> int:
    revote_id = args.revote_id or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if not SAFE_ID.match(revote_id):
        raise InputError(f"--id: {revote_id!r}: letters, digits, '.', '_' and '-' only (it names a folder)")
    ensembles = None if args.ensemble is None else [parse_ensemble(spec, args.method) for spec in args.ensemble]
    document = revote(args.run, revote_id, pass_k=args.pass_k, ensembles=ensembles, tta_level=args.tta_level)
    html, _ = write_report(args.run)
    if args.json:
        print(json.dumps(document))
    else:
        print(f"re-vote {revote_id}: {revote_uri(args.run, revote_id)}")
        print(f"report: {html}")
    return 0


def parse_ensemble(spec: str, method: str) -> EnsembleConfig:
    name, sep, selection = spec.partition("=")
    kind, _, value = selection.partition(":")
    if not sep or kind not in ("top_k", "members") or not value:
        raise InputError(f"--ensemble {spec!r}: expected NAME=top_k:K or NAME=members:A,B,…")
    if kind == "top_k" and not value.isdigit():
        raise InputError(f"--ensemble {spec!r}: top_k takes a number of checkpoints")
    chosen = {"top_k": int(value)} if kind == "top_k" else {"members": value.split(",")}
    try:
        return EnsembleConfig(name=name, method=method, **chosen)
    except ValueError as err:
        raise InputError(f"--ensemble {spec!r}: {str(err).splitlines()[-1].strip()}") from None
