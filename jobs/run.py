"""`hrm-eval run CONFIG [--set key=value …]`: the config-driven evaluation job.

The config is validated and every checkpoint preflighted before Ray starts, so a typo or a
checkpoint that does not fit the data costs a second, not a cluster start. Then it runs on
the Ray cluster at RAY_ADDRESS (which `ray job submit` sets for its jobs) or, without one,
on an embedded local Ray started in this process. The same code and the same metrics
either way; `python -m jobs.evaluate --config CONFIG` lands here too.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from cluster.config import RunConfig, load_run_config
from cluster.driver import RunFailed, execute
from cluster.plan import prepare


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a config-driven evaluation job: checkpoints × dataset shards on Ray actors, exact "
        "metrics, per-example predictions, resumable. Uses the cluster at RAY_ADDRESS if set, "
        "else starts an embedded local Ray."
    )
    parser.add_argument("config", metavar="CONFIG", help="run config (YAML), e.g. configs/quickstart.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set eval.batch_size=128 --set output.run_id=my-run (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    return run_config_file(args.config, args.overrides)


def run_config_file(path: str, overrides: list[str]) -> int:
    """Validate, preflight, connect to Ray, evaluate. 0 on success, 1 if the run failed
    (the manifest says which unit and why); bad input raises InputError before Ray starts."""
    config = load_run_config(path, overrides)
    prepared = prepare(config)
    import ray  # after validation and preflight: importing and starting Ray is the slow part

    connected_here = not ray.is_initialized()
    if connected_here:
        connect(config)
    try:
        execute(prepared)
    except RunFailed as err:
        print(f"hrm-eval run: failed: {err}", file=sys.stderr)
        return 1
    finally:
        if connected_here:
            ray.shutdown()
    return 0


def connect(config: RunConfig) -> None:
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    # address="local": never attach to some other `ray start` cluster on this machine.
    # A fixed CPU count (not Ray's guess inside containers), at least enough for the actors:
    # their real parallelism is cluster.torch_threads, not this logical count.
    low, high = config.cluster.actor_range
    cpus = max(len(os.sched_getaffinity(0)), math.ceil(high * config.cluster.cpus_per_actor))
    ray.init(address="local", num_cpus=cpus, include_dashboard=False)
