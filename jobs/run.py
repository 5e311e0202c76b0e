"""`hrm-eval run CONFIG [--set key=value …]`: the config-driven evaluation job.

The config is validated and every checkpoint preflighted before Ray starts, so a typo or a
checkpoint that does not fit the data costs a second, not a cluster start. Then it runs on
the Ray cluster at RAY_ADDRESS (which `ray job submit` sets for its jobs) or, without one,
on an embedded local Ray started in this process. The same code and the same metrics
either way; `python -m jobs.evaluate --config CONFIG` lands here too.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections import Counter
from pathlib import Path

from hrm import storage
from hrm.errors import InputError

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
    check_paths_in_a_ray_job(config)
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


# Ray's job supervisor sets this in the environment of a submitted entrypoint, and nothing else
# does: the job's runtime env (with the uploaded working_dir) and submission id (docs/ray.md, "Jobs").
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def check_paths_in_a_ray_job(config: RunConfig) -> None:
    """In a job `ray job submit` started, the working directory is not the submitter's: with
    --working-dir it is Ray's temporary copy of the upload, without it wherever `ray start`
    ran. Relative results would land there (and go with the session), so a relative
    output.uri is refused; relative inputs missing from the upload are refused naming why."""
    job = os.environ.get(RAY_JOB_CONFIG_ENV)
    if job is None:
        return
    cwd = os.getcwd()
    uploaded = _uploads_working_dir(job)
    where = (f"Ray's temporary copy of the --working-dir upload ({cwd})" if uploaded
             else f"the directory `ray start` ran in ({cwd})")
    if _relative(config.output.uri):
        raise InputError(
            f"output.uri: {config.output.uri!r} is relative, and in a Ray job it would resolve against {where}, "
            f"not where you submitted from: give an absolute path on a single machine "
            f"(e.g. --set output.uri=$PWD/{config.output.uri}) or an s3:// URI on a cluster")
    if not uploaded:
        return
    inputs = {"dataset.uri": config.dataset.uri}
    for i, source in enumerate(config.checkpoints):
        inputs |= {f"checkpoints.{i}.{key}": getattr(source, key) for key in ("path", "run", "config")
                   if getattr(source, key) is not None}
    problems = [f"{key}: {uri!r} is not in the job's copy of the --working-dir upload ({cwd}), which leaves out "
                f"what .gitignore names: give an absolute path (e.g. --set {key}=$PWD/{uri}) or an s3:// URI"
                for key, uri in inputs.items() if _relative(uri) and not Path(uri).exists()]
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        raise InputError(f"{len(problems)} inputs not found in the Ray job:\n  " + "\n  ".join(problems))


def _uploads_working_dir(job_config: str) -> bool:
    try:
        return bool(json.loads(job_config).get("runtime_env", {}).get("working_dir"))
    except (ValueError, AttributeError):  # not Ray's JSON: assume the worst, an upload
        return True


def _relative(uri: str) -> bool:
    return storage.is_local(uri) and not Path(uri.removeprefix("file://")).is_absolute()


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

    # Ray sets its own logger's level in ray.init: follow -q/-v (INFO at most, as Ray's default).
    level = max(logging.INFO, logging.getLogger("jobs").getEffectiveLevel())
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=level)
        return
    # address="local": never attach to some other `ray start` cluster on this machine.
    # A fixed CPU count (not Ray's guess inside containers), at least enough for the actors:
    # their real parallelism is cluster.torch_threads, not this logical count.
    low, high = config.cluster.actor_range
    cpus = max(len(os.sched_getaffinity(0)), math.ceil(high * config.cluster.cpus_per_actor))
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=level)
