"""`python -m jobs.bench preflight`: `hrm-eval run CONFIG --dry-run` over a sweep of real-size
checkpoints and a full-size dataset, with the checkpoints on local disk and on a loopback S3
server: what the driver pays before any actor starts.

Under a fresh directory in `--tmp`: a Sudoku-shaped dataset of `--examples` examples (422,786:
Sudoku-Extreme's test split) and `--checkpoints` checkpoints of the `--model` HRM. They are
one set of weights under many names (hard links locally, server-side copies on S3): preflight
reads each file's version, its training config and its tensors' header, never its weights,
so distinct weights would cost it nothing more. Each dry run is a process of its own, timed
from start to exit; its peak RSS is that process's own, measured inside it (`jobs.peak_rss`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from jobs.bench_cluster import make_checkpoints, make_data
from jobs.bench_models import CONFIGS, arch_section


def configure_preflight(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", type=int, default=300)
    parser.add_argument("--examples", type=int, default=422_786, help="examples in the dataset (default: Sudoku-Extreme's test split)")
    parser.add_argument("--model", choices=sorted(CONFIGS), default="paper")
    parser.add_argument("--storage", nargs="+", choices=["local", "s3"], default=["local", "s3"],
                        help="where the checkpoints are: local disk, a loopback S3 server (moto), or both")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the data is made")


def run_preflight(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hrm-bench-preflight-", dir=args.tmp))
    data = make_data(work / "data", args.examples)
    weights = make_checkpoints(work / "model", 1, arch_section(args.model))[0]
    report: dict[str, Any] = {"command": args.command, "workdir": str(work), "cpus": os.cpu_count(),
                              "checkpoints": args.checkpoints, "examples": args.examples, "model": args.model,
                              "checkpoint_bytes": weights.stat().st_size, "load_before": os.getloadavg(), "dry_runs": []}
    for where in args.storage:
        run_dir, env = (local_sweep(work / "local", weights, args.checkpoints), {}) if where == "local" else \
            s3_sweep(weights, args.checkpoints)
        config = work / f"{where}.yaml"
        config.write_text(yaml.safe_dump({"checkpoints": [{"run": run_dir}], "dataset": {"uri": data},
                                          "output": {"uri": str(work / "results"), "run_id": where}}))
        figures = {"storage": where, **dry_run(config, env)}
        report["dry_runs"].append(figures)
        print(format_dry_run(figures, args.checkpoints, args.examples), flush=True)
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f} "
          f"({report['cpus']} CPUs); checkpoint file {report['checkpoint_bytes'] / 2**20:,.1f} MiB")
    return report


def local_sweep(run_dir: Path, weights: Path, count: int) -> str:
    run_dir.mkdir(parents=True)
    os.link(weights.parent / "all_config.yaml", run_dir / "all_config.yaml")
    for step in range(1, count + 1):
        os.link(weights, run_dir / f"step_{step}")
    return str(run_dir)


def s3_sweep(weights: Path, count: int) -> tuple[str, dict[str, str]]:
    """The sweep on a loopback S3 server started for this bench (moto, as the tests use); the
    environment a process needs to reach it. The server lives as long as this process."""
    import boto3

    from tests.s3server import S3_ENV, start_s3_server

    _, endpoint = start_s3_server()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    os.environ.update(env)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="sweep")
    s3.upload_file(str(weights.parent / "all_config.yaml"), "sweep", "run/all_config.yaml")
    s3.upload_file(str(weights), "sweep", "run/step_1")
    for step in range(2, count + 1):
        s3.copy_object(Bucket="sweep", Key=f"run/step_{step}", CopySource={"Bucket": "sweep", "Key": "run/step_1"})
    return "s3://sweep/run", env


def dry_run(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """`hrm-eval run CONFIG --dry-run` in a process of its own (`jobs.peak_rss` reports its peak
    RSS from inside it): wall seconds, peak RSS, its output's head."""
    with tempfile.TemporaryDirectory() as scratch:
        figures = Path(scratch) / "peak.json"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "jobs.peak_rss", str(figures), "jobs.cli", "run", str(config),
                               "--dry-run"], env={**os.environ, **env}, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"dry run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        peak = json.loads(figures.read_text())["peak_rss_bytes"]
    return {"seconds": seconds, "peak_rss_mib": peak / 2**20, "plan_head": done.stdout.splitlines()[:4]}


def format_dry_run(figures: dict[str, Any], checkpoints: int, examples: int) -> str:
    return (f"dry run, {checkpoints} checkpoints on {figures['storage']} × {examples:,} examples: "
            f"{figures['seconds']:.1f} s ({1000 * figures['seconds'] / checkpoints:.1f} ms per checkpoint), "
            f"peak RSS {figures['peak_rss_mib']:.1f} MiB")
