"""The driver: plans a run, schedules its units on evaluation actors, commits and merges
their results, and writes the run's summary files.

`prepare` needs no Ray: config → preflight → units. `execute` needs a connected Ray:

- Long-lived Ray Core actors (`cluster.actor.Evaluator`), each caching built models. On
  sweeps of many checkpoints this beats one Ray Data pipeline per checkpoint by far (each
  pays ~8 s of fixed cost; RAY_NOTES), and on one checkpoint over a big dataset the Core
  pool's overhead (~1.11×) is lower than Ray Data's (~1.36×) on the machines we measured.
- Locality: a unit goes preferably to an actor that holds (or is loading) its checkpoint,
  then to a checkpoint nobody holds; an idle actor steals from a checkpoint another actor
  is working on only when splitting the remaining units saves more than a load costs.
- Each actor has at most `units_in_flight` units queued, so it never waits for the driver.
- Exactness: the driver accepts each unit id once, commits its record, and merges exact
  statistics: 1 actor and N actors give bit-identical metrics.
- Faults: Ray restarts a dead actor once and retries its tasks once (max_restarts=1,
  max_task_retries=1 survived os._exit with nothing lost or duplicated, RAY_NOTES pitfall 8);
  past that the driver replaces the actor and requeues its units. A unit that fails
  `max_attempts` times, or raises InputError (bad input never gets better), fails the run,
  and the manifest names it.
- Resume: units whose records are committed under the run are not evaluated again.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray

from hrm.dataset import Shard, open_dataset
from hrm.errors import InputError
from hrm.metrics import StatsTable

from cluster import results
from cluster.actor import Evaluator
from cluster.config import RunConfig
from cluster.health import write_health
from cluster.plan import CheckpointRef, Unit, plan_shards, plan_units, preflight
from cluster.report import write_report
from cluster.results import ActorInfo, CheckpointEntry, Manifest, UnitRecord, UnitState
from cluster.votes import apply_votes, check_votes

# RAY_NOTES pitfall 8: bounded, and enough to survive one crash per actor without the driver.
ACTOR_MAX_RESTARTS = 1
ACTOR_MAX_TASK_RETRIES = 1
ACTOR_START_TIMEOUT_S = 600.0  # a run with no live actor for this long fails (no resources)
WAIT_TICK_S = 1.0  # progress is refreshed at least this often
LOG_INTERVAL_S = 10.0  # non-TTY progress: one line this often
VERSIONED_PACKAGES = ("hrm-eval", "ray", "torch", "numpy", "pyarrow", "pydantic")


class RunFailed(Exception):
    """The run stopped before every unit was committed; `manifest` says why and which unit."""

    def __init__(self, message: str, manifest: Manifest):
        super().__init__(message)
        self.manifest = manifest


@dataclass
class PreparedRun:
    config: RunConfig
    run_id: str
    run: str  # results URI of this run
    dataset_hash: str
    sets: list[str]
    shards: list[Shard]
    checkpoints: list[CheckpointRef]
    units: list[Unit]
    started_at: float  # time.time()
    preflight_s: float


def prepare(config: RunConfig) -> PreparedRun:
    """Everything before Ray: preflight (raises InputError listing every problem) and planning."""
    started, clock = time.time(), time.perf_counter()
    dataset, checkpoints = preflight(config)
    split = config.dataset.split
    sets = config.dataset.sets or dataset.sets(split)
    shards = plan_shards(dataset, split, sets, config.cluster.shard_size, config.eval.batch_size)
    dataset_hash = dataset.content_hash()
    tta_copies = check_votes(config, dataset, [ref.name for ref in checkpoints])
    run_id = config.resolved_run_id(started)
    return PreparedRun(
        config=config,
        run_id=run_id,
        run=results.run_uri(config.output.uri, run_id),
        dataset_hash=dataset_hash,
        sets=sets,
        shards=shards,
        checkpoints=checkpoints,
        units=plan_units(checkpoints, shards, dataset_hash, config.eval_identity(), tta_copies),
        started_at=started,
        preflight_s=time.perf_counter() - clock,
    )


# --------------------------------------------------------------------------- scheduling


class Scheduler:
    """Which pending unit an actor should take next. Pure bookkeeping, no Ray."""

    def __init__(self, units: list[Unit]):
        self.pending: OrderedDict[str, deque[Unit]] = OrderedDict()
        for unit in units:
            self.pending.setdefault(unit.checkpoint, deque()).append(unit)
        self._unit_seconds: list[float] = []
        self._load_seconds: list[float] = []

    def remaining(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def requeue(self, unit: Unit) -> None:
        self.pending.setdefault(unit.checkpoint, deque()).appendleft(unit)

    def observe(self, unit_s: float, load_s: float | None) -> None:
        """Measured costs (a unit's work; its model load, if it paid one) drive stealing."""
        self._unit_seconds.append(unit_s)
        if load_s is not None:
            self._load_seconds.append(load_s)

    def next_for(self, actor: ActorSlot, others: list[ActorSlot]) -> Unit | None:
        """The unit `actor` should take next, given what the other actors hold and do:
        1. one of a checkpoint it holds or is loading (newest first);
        2. one of a checkpoint no other actor holds;
        3. one of a checkpoint held elsewhere but not being worked on there;
        4. one of the checkpoint with most units left that another actor is working on, if
           splitting those units saves more time than loading the model costs."""
        busy = {unit.checkpoint for other in others for unit in other.in_flight.values()}
        held = busy | {name for other in others for name in other.cached}
        for name in actor.holds():
            if self.pending.get(name):
                return self._pop(name)
        live = [name for name, queue in self.pending.items() if queue]
        for name in live:
            if name not in held:
                return self._pop(name)
        for name in live:
            if name not in busy:
                return self._pop(name)
        if live:
            most = max(live, key=lambda name: len(self.pending[name]))
            if self._worth_stealing(len(self.pending[most])):
                return self._pop(most)
        return None

    def _worth_stealing(self, pending_units: int) -> bool:
        """Splitting n remaining units between two actors saves ~n/2 unit times and costs one
        model load. Before anything is measured, take the work."""
        if not self._unit_seconds or not self._load_seconds:
            return True
        unit_s = sum(self._unit_seconds) / len(self._unit_seconds)
        load_s = sum(self._load_seconds) / len(self._load_seconds)
        return pending_units * unit_s / 2 > load_s

    def _pop(self, name: str) -> Unit:
        return self.pending[name].popleft()


@dataclass
class ActorSlot:
    key: int
    handle: Any  # ray.actor.ActorHandle
    ready: Any | None  # ObjectRef of the readiness probe, None once ready
    info: ActorInfo | None = None
    cached: list[str] = field(default_factory=list)  # as the actor last reported, LRU first
    in_flight: dict[Any, Unit] = field(default_factory=dict)  # ObjectRef -> unit, in dispatch order

    def holds(self) -> list[str]:
        """Checkpoints it is working on (newest dispatch first), then those it caches (MRU first)."""
        working = [unit.checkpoint for unit in reversed(self.in_flight.values())]
        return list(dict.fromkeys(working + self.cached[::-1]))


# --------------------------------------------------------------------------- progress


class RunProgress:
    """Units done/total, examples/s, ETA and checkpoints finished on the driver: a live bar on
    a terminal, one log line every LOG_INTERVAL_S otherwise (what `ray job submit` shows),
    and a summary table at the end. Subclass it to observe a run."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._bar = None

    def start(self, prepared: PreparedRun, resumed: list[UnitRecord]) -> None:
        self.prepared = prepared
        self.total_units = len(prepared.units)
        self.total_examples = sum(u.examples for u in prepared.units)
        self.done_units = len(resumed)
        self.done_examples = sum(r.examples for r in resumed)
        self.evaluated_examples = 0
        self.units_left = Counter(u.checkpoint for u in prepared.units)
        for record in resumed:
            self.units_left[record.checkpoint] -= 1
        self.started = self._last_log = time.perf_counter()
        self.actors = 0
        self.event(
            f"run {prepared.run_id}: {len(prepared.checkpoints)} checkpoint(s) × {len(prepared.shards)} "
            f"shard(s) = {self.total_units} units, {self.total_examples} examples; {len(resumed)} units already "
            f"committed; results: {prepared.run}"
        )
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("units {task.completed}/{task.total}"), BarColumn(bar_width=12),
                                 TextColumn("{task.fields[status]}"), transient=True)
            self._task = self._bar.add_task("units", total=self.total_units, completed=self.done_units,
                                            status=self.status())
            self._bar.start()

    def unit_done(self, record: UnitRecord) -> None:
        self.done_units += 1
        self.done_examples += record.examples
        self.evaluated_examples += record.examples
        self.units_left[record.checkpoint] -= 1
        self.tick()

    def actors_changed(self, ready: int) -> None:
        self.actors = ready

    def event(self, message: str) -> None:
        line = f"[hrm-eval {time.strftime('%H:%M:%S')}] {message}"
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, file=self.stream, flush=True)

    def tick(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done_units, status=self.status())
        elif time.perf_counter() - self._last_log >= LOG_INTERVAL_S:
            self._last_log = time.perf_counter()
            self.event(f"units {self.done_units}/{self.total_units} · {self.status()}")

    def status(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.evaluated_examples / elapsed if elapsed > 0 else 0.0
        left = self.total_examples - self.done_examples
        eta = f"{left / rate:,.0f} s" if rate > 0 else "–"
        finished = sum(1 for n in self.units_left.values() if n == 0)
        return (f"{self.done_examples}/{self.total_examples} ex · {rate:,.1f} ex/s · ETA {eta} · "
                f"ckpts {finished}/{len(self.units_left)} · actors {self.actors}")

    def finish(self, manifest: Manifest, metrics: dict[str, Any] | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        counts, timings = manifest.counts, manifest.timings
        # a fully resumed run evaluated nothing: it has no rate to state
        work = (f"{timings['evaluate_s']:.1f} s evaluating, {timings['examples_per_s']:.1f} examples/s; "
                if counts["evaluated"] else "nothing left to evaluate; ")
        self.event(
            f"{manifest.status}: {counts['evaluated']} units evaluated, {counts['resumed']} resumed, "
            f"{counts['failed']} failed, {counts['pending']} pending; {work}"
            f"{manifest.scheduling['model_loads']} model loads"
        )
        if metrics is not None:
            print_summary(manifest, metrics)


def print_summary(manifest: Manifest, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {manifest.run_id}: {manifest.dataset['uri']} [{manifest.dataset['split']}]")
    for column in ("checkpoint", "step", "examples", "exact (95% CI)", "token acc", "q-halt acc", "mean steps",
                   "lm loss", "loads"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")
    loads = {c.name: c.loads for c in manifest.checkpoints}
    for name, entry in metrics["checkpoints"].items():
        m = entry["metrics"]["all"]
        table.add_row(
            name, str(entry["step"]), str(m["count"]),
            f"{m['exact_accuracy']:.4f} ({m['exact_ci_low']:.4f}–{m['exact_ci_high']:.4f})",
            f"{m['token_accuracy']:.4f}", f"{m['q_halt_accuracy']:.4f}", f"{m['mean_steps']:.2f}",
            f"{m['lm_loss']:.4f}", str(loads[name]),
        )
    Console(width=160).print(table)


# --------------------------------------------------------------------------- execution


def execute(prepared: PreparedRun, progress: RunProgress | None = None) -> Manifest:
    """Evaluate every uncommitted unit on Ray actors and write metrics, leaderboard and
    manifest. Ray must be connected. Raises RunFailed (after writing a failed manifest)."""
    return Driver(prepared, progress or RunProgress()).run()


class Driver:
    def __init__(self, prepared: PreparedRun, progress: RunProgress):
        self.prepared = prepared
        self.config = prepared.config
        self.cluster = prepared.config.cluster
        self.progress = progress
        self.checkpoints = {ref.name: ref for ref in prepared.checkpoints}
        self.units = {unit.id: unit for unit in prepared.units}
        self.records: dict[str, UnitRecord] = {}
        self.resumed: set[str] = set()
        self.attempts: Counter[str] = Counter()
        self.errors: dict[str, str] = {}
        self.loads: Counter[str] = Counter()
        self.actors: dict[int, ActorSlot] = {}
        self.actor_infos: dict[str, ActorInfo] = {}  # by instance, latest report
        self.next_actor_key = 0
        self.counters = Counter()  # actor_restarts, actor_replacements, failed_starts, duplicates_ignored
        self.failure: tuple[str | None, str] | None = None
        self.timings: dict[str, float] = {"preflight_s": prepared.preflight_s}

    def run(self) -> Manifest:
        clock = time.perf_counter()
        committed = results.read_unit_records(self.prepared.run, set(self.units))
        self.records.update(committed)
        self.resumed = set(committed)
        self.timings["resume_scan_s"] = time.perf_counter() - clock
        self.progress.start(self.prepared, list(committed.values()))
        todo = [unit for unit in self.prepared.units if unit.id not in committed]
        clock = time.perf_counter()
        if todo:
            try:
                self._evaluate(todo)
            finally:
                for slot in list(self.actors.values()):
                    self._discard(slot)
        self.timings["evaluate_s"] = time.perf_counter() - clock
        return self._finish()

    # -- the scheduling loop ------------------------------------------------------------
    def _evaluate(self, todo: list[Unit]) -> None:
        self.scheduler = Scheduler(todo)
        low, high = self.cluster.actor_range
        self.min_actors = min(low, len(todo))
        for _ in range(min(high, len(todo))):
            self._start_actor()
        self.no_actor_since = time.perf_counter()
        self.loop_started = time.perf_counter()
        while self.failure is None and (self.scheduler.remaining() or self._in_flight()):
            for slot in list(self.actors.values()):
                self._fill(slot)
            waiting = self._in_flight() + [slot.ready for slot in self.actors.values() if slot.ready is not None]
            if not waiting:
                self._fail(None, "no evaluation actor is alive or starting")
                break
            done, _ = ray.wait(waiting, num_returns=1, timeout=WAIT_TICK_S)
            for ref in done:
                self._handle(ref)
            self._check_actor_supply()
            self.progress.tick()

    def _in_flight(self) -> list[Any]:
        return [ref for slot in self.actors.values() for ref in slot.in_flight]

    def _fill(self, slot: ActorSlot) -> None:
        if self.failure is not None or slot.ready is not None or slot.key not in self.actors:
            return
        others = [s for s in self.actors.values() if s is not slot and s.ready is None]
        while len(slot.in_flight) < self.cluster.units_in_flight:
            unit = self.scheduler.next_for(slot, others)
            if unit is None:
                return
            self.attempts[unit.id] += 1
            ref = slot.handle.__call__.remote(unit, self.checkpoints[unit.checkpoint])
            slot.in_flight[ref] = unit

    def _handle(self, ref: Any) -> None:
        slot = next(s for s in self.actors.values() if ref == s.ready or ref in s.in_flight)
        if ref == slot.ready:
            self._actor_ready(slot)
            return
        unit = slot.in_flight.pop(ref)
        try:
            record = ray.get(ref)
        except ray.exceptions.RayActorError as err:
            self._actor_died(slot, unit, err)
            return
        except ray.exceptions.RayTaskError as err:
            self._unit_failed(unit, err)
            self._fill(slot)
            return
        self._commit(slot, record)
        self._fill(slot)  # first, so the actor that just finished keeps its checkpoint's units

    def _actor_ready(self, slot: ActorSlot) -> None:
        try:
            info = ray.get(slot.ready)
        except ray.exceptions.RayError as err:
            self.counters["failed_starts"] += 1
            self.progress.event(f"actor {slot.key} failed to start: {_first_line(err)}")
            self._discard(slot)
            if self.counters["failed_starts"] >= self.cluster.max_attempts:
                self._fail(None, f"evaluation actors failed to start {self.counters['failed_starts']} times; "
                                 f"last error: {_error_text(err)}")
            else:
                self._start_actor()
            return
        slot.ready, slot.info = None, info
        self.actor_infos[info.instance] = info
        ready = sum(1 for s in self.actors.values() if s.ready is None)
        if "actors_ready_s" not in self.timings:
            self.timings["actors_ready_s"] = time.perf_counter() - self.loop_started
        self.progress.actors_changed(ready)
        self.progress.event(f"actor {slot.key} ready on {info.hostname} (pid {info.pid}, {info.device}, "
                            f"{info.torch_threads} torch threads)")

    def _commit(self, slot: ActorSlot, record: UnitRecord) -> None:
        if slot.info is not None and record.actor.instance != slot.info.instance:
            self.counters["actor_restarts"] += 1
            self.progress.event(f"actor {slot.key} was restarted by Ray (pid {slot.info.pid} → "
                                f"{record.actor.pid}); its units were retried")
        slot.info, slot.cached = record.actor, record.actor.cached
        self.actor_infos[record.actor.instance] = record.actor
        if record.unit_id in self.records:
            self.counters["duplicates_ignored"] += 1  # accepted once, whatever Ray retried
            return
        record = record.model_copy(update={"attempts": self.attempts[record.unit_id]})
        results.commit_unit(self.prepared.run, record)
        self.records[record.unit_id] = record
        self.errors.pop(record.unit_id, None)
        if record.model_loaded:
            self.loads[record.checkpoint] += 1
        t = record.timings
        self.scheduler.observe(t["read_s"] + t["eval_s"] + t["write_s"], t["load_s"] if record.model_loaded else None)
        self.progress.unit_done(record)

    def _actor_died(self, slot: ActorSlot, unit: Unit, err: Exception) -> None:
        """Ray gave up on the actor (its restart is used up): requeue everything it had and
        put a fresh actor in its place."""
        lost = [unit, *slot.in_flight.values()]
        slot.in_flight.clear()
        self._discard(slot)
        self.progress.event(f"actor {slot.key} died ({_first_line(err)}); requeueing {len(lost)} unit(s)")
        for lost_unit in lost:
            self._retry_or_fail(lost_unit, f"actor died: {_first_line(err)}")
        if self.failure is None:
            self.counters["actor_replacements"] += 1
            self._start_actor()

    def _unit_failed(self, unit: Unit, err: ray.exceptions.RayTaskError) -> None:
        cause = err.cause if isinstance(err.cause, BaseException) else err
        if isinstance(cause, InputError):
            self.errors[unit.id] = str(cause)
            self._fail(unit.id, f"unit {unit.id} ({unit.checkpoint}, {_shard_text(unit)}): {cause}")
            return
        self._retry_or_fail(unit, _error_text(cause))

    def _retry_or_fail(self, unit: Unit, error: str) -> None:
        self.errors[unit.id] = error
        if self.attempts[unit.id] >= self.cluster.max_attempts:
            self._fail(unit.id, f"unit {unit.id} ({unit.checkpoint}, {_shard_text(unit)}) failed "
                                f"{self.attempts[unit.id]} times; last error: {error}")
        else:
            self.progress.event(f"retrying unit {unit.id} ({unit.checkpoint}, {_shard_text(unit)}) after: "
                                f"{error.splitlines()[0] if error else 'unknown error'}")
            self.scheduler.requeue(unit)

    def _fail(self, unit_id: str | None, message: str) -> None:
        if self.failure is None:
            self.failure = (unit_id, message)

    def _check_actor_supply(self) -> None:
        """Fail when no actor has been alive for ACTOR_START_TIMEOUT_S (the cluster cannot place
        one), or when fewer than the configured minimum came up in that time."""
        now = time.perf_counter()
        ready = sum(1 for s in self.actors.values() if s.ready is None)
        if ready:
            self.no_actor_since = now
        elif now - self.no_actor_since > ACTOR_START_TIMEOUT_S:
            self._fail(None, f"no evaluation actor could start within {ACTOR_START_TIMEOUT_S:.0f} s; each needs "
                             f"{self.cluster.cpus_per_actor} CPU and {self.cluster.gpus_per_actor} GPU "
                             f"(cluster has {ray.cluster_resources()})")
        if ready < self.min_actors and now - self.loop_started > ACTOR_START_TIMEOUT_S and ready < len(self.actors):
            self._fail(None, f"only {ready} of at least {self.min_actors} actors started within "
                             f"{ACTOR_START_TIMEOUT_S:.0f} s (cluster.actors)")

    def _start_actor(self) -> None:
        cluster = self.cluster
        remote = ray.remote(Evaluator).options(
            num_cpus=cluster.cpus_per_actor,
            num_gpus=cluster.gpus_per_actor,
            max_restarts=ACTOR_MAX_RESTARTS,
            max_task_retries=ACTOR_MAX_TASK_RETRIES,
        )
        handle = remote.remote(
            dataset_uri=self.config.dataset.uri,
            split=self.config.dataset.split,
            run=self.prepared.run,
            eval_config=self.config.eval,
            device=self.config.device,
            cache_size=cluster.cache_size,
            torch_threads=cluster.torch_threads or max(1, math.ceil(cluster.cpus_per_actor)),
            checkpoint_cache_dir=cluster.checkpoint_cache_dir,
        )
        key = self.next_actor_key
        self.next_actor_key += 1
        self.actors[key] = ActorSlot(key=key, handle=handle, ready=handle.info.remote())

    def _discard(self, slot: ActorSlot) -> None:
        self.actors.pop(slot.key, None)
        ray.kill(slot.handle, no_restart=True)
        self.progress.actors_changed(sum(1 for s in self.actors.values() if s.ready is None))

    # -- results ------------------------------------------------------------------------
    def _finish(self) -> Manifest:
        completed = self.failure is None and len(self.records) == len(self.units)
        metrics = self._metrics() if completed else None
        manifest = self._manifest("completed" if completed else "failed")
        run = self.prepared.run
        if metrics is not None:
            metrics = apply_votes(self.config, run, open_dataset(self.config.dataset.uri), metrics)
            results.write_metrics(run, metrics)
            results.write_leaderboard(run, leaderboard_rows(metrics))
            write_health(run, manifest)
        results.write_manifest(run, manifest)  # last: the commit point of the run
        self.progress.finish(manifest, metrics)
        if metrics is not None:
            html, _ = write_report(run)  # reads the manifest: after the commit point, regenerable from results
            self.progress.event(f"report: {html}")
        if not completed:
            raise RunFailed(manifest.error or "run incomplete", manifest)
        return manifest

    def _metrics(self) -> dict[str, Any]:
        per_checkpoint: dict[str, StatsTable] = {name: StatsTable() for name in self.checkpoints}
        for unit in self.prepared.units:
            if unit.tta is not None:
                continue  # test-time-augmentation copies count only in their votes
            record = self.records[unit.id]
            per_checkpoint[unit.checkpoint].merge(StatsTable.from_dict(record.stats))
        config = self.config
        return {
            "run_id": self.prepared.run_id,
            "dataset": config.dataset.uri,
            "split": config.dataset.split,
            "sets": self.prepared.sets,
            "eval": config.eval_identity(),
            "checkpoints": {
                name: {
                    "step": ref.step,
                    "family": ref.family,
                    "content_hash": ref.content_hash,
                    "metrics": per_checkpoint[name].finalize(),
                    "stats": per_checkpoint[name].to_dict(),
                }
                for name, ref in self.checkpoints.items()
            },
        }

    def _manifest(self, status: str) -> Manifest:
        evaluated = [r for uid, r in self.records.items() if uid not in self.resumed]
        evaluate_s = self.timings["evaluate_s"]
        examples = sum(r.examples for r in evaluated)
        failed_unit, error = self.failure if self.failure else (None, None)
        if status == "failed" and error is None:
            error = f"{len(self.units) - len(self.records)} unit(s) not committed"
        states = [self._unit_state(unit, failed_unit) for unit in self.prepared.units]
        loads = sum(self.loads.values())
        actors = list(self.actor_infos.values())
        return Manifest(
            run_id=self.prepared.run_id,
            status=status,
            error=error,
            failed_unit=failed_unit,
            started_at=_iso(self.prepared.started_at),
            finished_at=_iso(time.time()),
            config=self.config.model_dump(mode="json"),
            config_hash=self.config.config_hash(),
            versions=_versions(),
            git_sha=_git_sha(),
            dataset={
                "uri": self.config.dataset.uri,
                "split": self.config.dataset.split,
                "sets": self.prepared.sets,
                "content_hash": self.prepared.dataset_hash,
                "examples": sum(shard.stop - shard.start for shard in self.prepared.shards),
            },
            checkpoints=[
                CheckpointEntry(
                    **ref.model_dump(),
                    units=sum(1 for u in self.prepared.units if u.checkpoint == name),
                    examples=sum(u.examples for u in self.prepared.units if u.checkpoint == name),
                    loads=self.loads[name],
                )
                for name, ref in self.checkpoints.items()
            ],
            counts={
                "planned": len(self.units),
                "resumed": len(self.resumed),
                "evaluated": len(evaluated),
                "failed": sum(1 for s in states if s.state == "failed"),
                "pending": sum(1 for s in states if s.state == "pending"),
            },
            scheduling={
                "actors": list(self.cluster.actor_range),
                "actor_instances": len(actors),
                "units_in_flight": self.cluster.units_in_flight,
                "cache_size": self.cluster.cache_size,
                "model_loads": loads,
                "loads_per_checkpoint": loads / len(self.loads) if self.loads else 0.0,
                **{name: self.counters[name] for name in
                   ("actor_restarts", "actor_replacements", "failed_starts", "duplicates_ignored")},
            },
            timings={
                **self.timings,
                "total_s": time.time() - self.prepared.started_at,
                "examples_per_s": examples / evaluate_s if evaluate_s > 0 else 0.0,
                **{f"actor_{key}_total": sum(r.timings[key] for r in evaluated)
                   for key in ("load_s", "read_s", "eval_s", "write_s")},
            },
            hardware={
                "driver": _driver_hardware(),
                "cluster_resources": ray.cluster_resources() if ray.is_initialized() else {},
                "actors": [a.model_dump() for a in actors],
                "peak_actor_rss_bytes": max((a.peak_rss_bytes for a in actors), default=None),
                "peak_actor_gpu_bytes": max((a.peak_gpu_bytes for a in actors if a.peak_gpu_bytes is not None),
                                            default=None),
            },
            units=states,
        )

    def _unit_state(self, unit: Unit, failed_unit: str | None) -> UnitState:
        record = self.records.get(unit.id)
        if unit.id in self.resumed:
            state = "resumed"
        elif record is not None:
            state = "committed"
        elif unit.id == failed_unit:
            state = "failed"
        else:
            state = "pending"
        return UnitState(
            id=unit.id, checkpoint=unit.checkpoint, set=unit.shard.set, start=unit.shard.start,
            stop=unit.shard.stop, state=state,
            attempts=record.attempts if record else self.attempts[unit.id],
            error=self.errors.get(unit.id),
            actor=record.actor.instance if record else None,
            seconds=sum(record.timings.values()) if record else None,
        )


def leaderboard_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per checkpoint, best exact accuracy first (then token accuracy, then plan order)."""
    rows = []
    for name, entry in metrics["checkpoints"].items():
        m = entry["metrics"]["all"]
        rows.append({
            "checkpoint": name,
            "step": entry["step"],
            "family": entry["family"],
            **{key: m[key] for key in ("count", "exact_accuracy", "exact_ci_low", "exact_ci_high", "token_accuracy",
                                       "q_halt_accuracy", "mean_steps", "lm_loss", "q_halt_auroc")},
            "content_hash": entry["content_hash"],
        })
    rows.sort(key=lambda r: (-(r["exact_accuracy"] or 0.0), -(r["token_accuracy"] or 0.0)))
    return [{"rank": i + 1, **row} for i, row in enumerate(rows)]


# --------------------------------------------------------------------------- small helpers


def _shard_text(unit: Unit) -> str:
    return f"set {unit.shard.set} examples {unit.shard.start}–{unit.shard.stop}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _git_sha() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout (a `ray job submit`
    working directory is a copy without .git: then None)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _driver_hardware() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
