"""`hrm-eval inspect CKPT [CKPT2]`: what is in a checkpoint, and how two differ."""

from __future__ import annotations

import argparse
import json

from hrm.checkpoint.health import describe, relative_change
from hrm.checkpoint.loading import load_checkpoint


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Show a checkpoint's architecture and dimensions, parameter count and bytes per "
        "component (puzzle embeddings, token embeddings, H level, L level, lm head, q head), "
        "dtypes and NaN/Inf counts. With a second checkpoint, also the relative weight change "
        "‖B − A‖/‖A‖ per component. CKPT is a step_N file or a run directory (newest step), local or s3://."
    )
    parser.add_argument("checkpoint", metavar="CKPT")
    parser.add_argument("other", metavar="CKPT2", nargs="?", help="compare against this checkpoint")
    parser.add_argument("--config", metavar="YAML", help="all_config.yaml for checkpoints that lack one")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    first = load_checkpoint(args.checkpoint, args.config)
    report = {"checkpoints": [describe(first)]}
    if args.other:
        second = load_checkpoint(args.other, args.config)
        report["checkpoints"].append(describe(second))
        report["relative_change"] = relative_change(first, second)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for info in report["checkpoints"]:
        arch = info["arch"]
        dims = ", ".join(f"{k}={v}" for k, v in {**arch, **info["inferred"]}.items() if k != "name")
        console.print(f"[bold]{escape(info['checkpoint'])}[/bold]  {info['family'].upper()} "
                      f"({escape(str(arch.get('name')))}), loss {escape(str(info['loss_type']))}")
        console.print(f"  {escape(dims)}")
        for key, sizes in info["disagreements"].items():
            console.print(f"  [yellow]warning:[/yellow] {key}={sizes['tensors']} in the tensors, but all_config.yaml "
                          f"says {sizes['config']}")
        table = Table()
        for column in ("component", "tensors", "parameters", "bytes", "dtypes", "NaN", "Inf"):
            table.add_column(column, justify="left" if column in ("component", "dtypes") else "right")
        for row in info["components"]:
            table.add_row(row["component"], str(row["tensors"]), f"{row['parameters']:,}", f"{row['bytes']:,}",
                          row["dtypes"], str(row["nan"]), str(row["inf"]))
        console.print(table)
    if "relative_change" in report:
        table = Table(title="relative weight change ‖B − A‖ / ‖A‖")
        table.add_column("component")
        table.add_column("change", justify="right")
        for name, value in report["relative_change"].items():
            table.add_row(name, "n/a (zero norm)" if value is None else f"{value:.6f}")
        console.print(table)
