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
from collections import Counter

from cluster.config import RunConfig, load_run_config
from cluster.driver import RunFailed, execute
from cluster.plan import PreparedRun, prepare
from cluster.results.layout import committed_unit_ids


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
    parser.add_argument(
        "--dry-run", action="store_true",
        help="validate, preflight and plan only: print the checkpoints, shards, units and examples, and how many "
             "units a rerun of output.run_id would resume; start no Ray, evaluate and write nothing",
    )


def run(args: argparse.Namespace) -> int:
    return run_config_file(args.config, args.overrides, dry_run=args.dry_run)


def run_config_file(path: str, overrides: list[str], dry_run: bool = False) -> int:
    """Validate, preflight, connect to Ray, evaluate. 0 on success, 1 if the run failed
    (the manifest says which unit and why); bad input raises InputError before Ray starts."""
    config = load_run_config(path, overrides)
    prepared = prepare(config)
    if dry_run:
        print(describe_plan(prepared, committed_unit_ids(prepared.run, {unit.id for unit in prepared.units})))
        return 0
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


def describe_plan(prepared: PreparedRun, committed: set[str]) -> str:
    """What a run would do: per checkpoint its units and examples, per set its shards, and
    what of it is already committed under the run."""
    units = prepared.units
    resumed = [u for u in units if u.id in committed]
    shards, examples = Counter(), Counter()
    for shard in prepared.shards:
        shards[shard.set] += 1
        examples[shard.set] += shard.examples
    tally = prepared.units_per_checkpoint()
    lines = [
        f"run {prepared.run_id}: results {prepared.run}",
        f"dataset {prepared.config.dataset.uri} [{prepared.config.dataset.split}], sha256 {prepared.dataset_hash[:16]}…",
        *(f"  set {name}: {examples[name]} examples in {shards[name]} shard(s)" for name in prepared.sets),
        f"{len(prepared.checkpoints)} checkpoint(s):",
        *(f"  {ref.name} (step {ref.step}, {ref.family}): {tally[ref.name][0]} units, "
          f"{tally[ref.name][1]} examples" for ref in prepared.checkpoints),
        f"{len(units)} units, {sum(u.examples for u in units)} example evaluations; already committed (a rerun "
        f"resumes them): {len(resumed)} units, {sum(u.examples for u in resumed)} examples; to evaluate: "
        f"{len(units) - len(resumed)} units",
        f"preflight and planning: {prepared.preflight_s:.1f} s",
    ]
    return "\n".join(lines)


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
