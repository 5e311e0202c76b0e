"""`hrm-eval compare RUN_A RUN_B`: two runs on the same examples, checkpoint by checkpoint."""

from __future__ import annotations

import argparse
import json

from hrm import storage
from hrm.secrets import redact_document

from cluster.progress import print_metrics_table
from cluster.report.compare import write_comparison
from cluster.results.compare import compare_runs


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare two runs on the same dataset, split and sets (refused otherwise, naming the difference): "
        "checkpoints paired by name (then by file version), each with its exact accuracy in both runs, the "
        "change, the examples only one run gets exactly right, and McNemar's paired test on them (exact "
        "binomial below 25 discordant examples, chi-square with continuity correction above). Evaluation "
        "settings that differ (dtype, protocol, steps, device, …) are listed: they are what is compared. "
        "Reads stored predictions and metrics only; runs no model."
    )
    parser.add_argument("run_a", metavar="RUN_A", help="a run's results directory (local or s3://)")
    parser.add_argument("run_b", metavar="RUN_B")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--output", metavar="URI",
                        help="also write compare.json, compare.md and compare.html there (like the report)")


def run(args: argparse.Namespace) -> int:
    document = compare_runs(args.run_a, args.run_b)
    if args.output:
        storage.write_json_atomic(storage.join(args.output, "compare.json"), redact_document(document), indent=1)
        html, _ = write_comparison(document, args.output)
    if args.json:
        print(json.dumps(document))
    else:
        print_comparison(document)
    if args.output:
        print(f"comparison: {html}")
    return 0


def print_comparison(document: dict) -> None:
    settings = document["settings_compared"]
    compared = ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in settings.items()) or "none (the same evaluation settings)"
    rows = [[row["a"], row["b"], f"{row['exact_a']:.2%}", f"{row['exact_b']:.2%}", f"{row['exact_difference']:+.2%}",
             str(row["only_a"]), str(row["only_b"]), f"{row['p_value']:.3g}", "yes" if row["significant"] else "no"]
            for row in document["pairs"]]
    print_metrics_table(f"{document['b']} against {document['a']}; settings compared: {compared}",
                        ["checkpoint (a)", "checkpoint (b)", "exact a", "exact b", "change", "only a right",
                         "only b right", "McNemar p", "p < 0.05"], rows)
    print(f"{len(document['pairs'])} checkpoint(s) paired, {document['significant']} differ beyond chance; "
          f"only in a: {', '.join(document['only_in_a']) or 'none'}; only in b: {', '.join(document['only_in_b']) or 'none'}")
