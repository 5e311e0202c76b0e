"""`python -m jobs.bench scale`: the real job at the sizes you choose, with a tiny model, so
that what is measured is the driver, the storage and the summary files, not the model.

For each size N (`--sizes`): a dataset of N random Sudoku-shaped examples (every input
distinct, so every example has a halting logit of its own), `--checkpoints` tiny HRM
checkpoints, and one `hrm-eval run` over all of them in a fresh process, so that the driver's
peak RSS is that run's alone. Then the same command again, which finds every unit committed:
its resume scan is timed. Reported per size: driver peak RSS; preflight and planning seconds
(per checkpoint); the actors' time per unit split into load, read, eval and write, and the
share that is the model's (eval); the resume scan; the bytes of metrics.json, manifest.json
and leaderboard.parquet.

Every figure comes from the runs it prints (their manifests and files); the load average is
recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from jobs.bench_cluster import make_checkpoints, make_data, spawn_run

TINY_ARCH: dict[str, Any] = {  # a model whose evaluation costs little next to everything around it
    "name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
    "loss": {"name": "losses@ACTLossHead", "loss_type": "softmax_cross_entropy"},
    "hidden_size": 32, "num_heads": 2, "expansion": 2, "H_layers": 1, "L_layers": 1, "H_cycles": 1, "L_cycles": 1,
    "halt_max_steps": 2, "halt_exploration_prob": 0.1, "puzzle_emb_ndim": 0, "pos_encodings": "rope",
    "forward_dtype": "float32",
}
SUMMARY_FILES = ("metrics.json", "manifest.json", "leaderboard.parquet")


def configure_scale(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 80_000], help="examples per run")
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hrm-bench-scale-"))
    checkpoints = make_checkpoints(work / "ckpt", args.checkpoints, TINY_ARCH)
    report: dict[str, Any] = {"command": args.command, "workdir": str(work), "cpus": os.cpu_count(),
                              "load_before": os.getloadavg(), "sizes": []}
    for n in args.sizes:
        data = make_data(work / f"data-{n}", n)
        config = work / f"run-{n}.yaml"
        config.write_text(yaml.safe_dump({
            "checkpoints": [{"run": str(checkpoints[0].parent)}],
            "dataset": {"uri": data},
            "cluster": {"actors": args.actors, "torch_threads": 1},
            "output": {"uri": str(work / "results"), "run_id": f"n{n}"},
        }))
        run = work / "results" / f"n{n}"
        first = run_job(config, run)
        resumed = run_job(config, run)
        report["sizes"].append(size_figures(n, first, resumed, run))
        print(format_size(report["sizes"][-1]), flush=True)
    report["load_after"] = os.getloadavg()
    print(format_scale_report(report))
    return report


def run_job(config: Path, run: Path) -> dict[str, Any]:
    """One `hrm-eval run` in a process of its own; its manifest."""
    process = spawn_run(config, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if process.wait():
        raise subprocess.CalledProcessError(process.returncode, process.args)
    return json.loads((run / "manifest.json").read_text())


def size_figures(n: int, first: dict[str, Any], resumed: dict[str, Any], run: Path) -> dict[str, Any]:
    t, units = first["timings"], first["counts"]["evaluated"]
    actor = {key: t[f"actor_{key}_s_total"] / units for key in ("load", "read", "eval", "write")}
    checkpoints = len(first["checkpoints"])
    return {
        "examples": n,
        "checkpoints": checkpoints,
        "units": units,
        "driver_peak_rss_mib": first["hardware"]["driver"]["peak_rss_bytes"] / 2**20,
        "preflight_and_planning_s": t["preflight_s"],
        "preflight_s_per_checkpoint": t["preflight_s"] / checkpoints,
        "evaluate_s": t["evaluate_s"],
        "actor_s_per_unit": actor,
        "model_share_of_actor_time": actor["eval"] / sum(actor.values()),
        "resume_scan_s": resumed["timings"]["resume_scan_s"],
        "resumed_units": resumed["counts"]["resumed"],
        "file_bytes": {name: (run / name).stat().st_size for name in SUMMARY_FILES},
    }


def format_size(s: dict[str, Any]) -> str:
    a = s["actor_s_per_unit"]
    files = ", ".join(f"{name} {size:,} B" for name, size in s["file_bytes"].items())
    return (f"{s['examples']:,} examples × {s['checkpoints']} checkpoints ({s['units']} units): driver peak RSS "
            f"{s['driver_peak_rss_mib']:.1f} MiB; preflight+planning {s['preflight_and_planning_s']:.2f} s "
            f"({s['preflight_s_per_checkpoint']:.3f} s per checkpoint); per unit load {a['load']:.3f} s, read "
            f"{a['read']:.3f} s, eval {a['eval']:.3f} s, write {a['write']:.3f} s (model "
            f"{100 * s['model_share_of_actor_time']:.1f}%); resume scan of {s['resumed_units']} units "
            f"{s['resume_scan_s']:.2f} s; {files}")


def format_scale_report(report: dict[str, Any]) -> str:
    lines = [f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f} "
             f"({report['cpus']} CPUs)"]
    sizes = report["sizes"]
    for small, large in zip(sizes, sizes[1:]):
        rss = _growth(small["driver_peak_rss_mib"], large["driver_peak_rss_mib"])
        metrics = _growth(small["file_bytes"]["metrics.json"], large["file_bytes"]["metrics.json"])
        lines.append(f"{small['examples']:,} → {large['examples']:,} examples: driver peak RSS {rss:+.1f}%, "
                     f"metrics.json {metrics:+.1f}%")
    return "\n".join(lines)


def _growth(before: float, after: float) -> float:
    return 100 * (after / before - 1)
