"""The driver: schedules a prepared run's units on evaluation actors, commits their results,
and writes the run's summary files.

- Long-lived Ray Core actors (`cluster.actor.Evaluator`), each caching built models; why
  Core actors rather than Ray Data is in docs/design.md.
- Locality: the `cluster.scheduler.Scheduler` picks each actor's next unit.
- Each actor has at most `units_in_flight` units queued, so it never waits for the driver.
- Exactness: the driver accepts each unit id once, commits its record, and merges exact
  statistics: 1 actor and N actors give bit-identical metrics.
- Faults: Ray restarts a dead actor once and retries its tasks once (docs/ray.md, "Faults");
  past that the driver replaces the actor and requeues its units. A unit that fails
  `max_attempts` times, or raises InputError (bad input never gets better), fails the run,
  and the manifest names it.
- A checkpoint that cannot be loaded (`CheckpointUnusable`: bad bytes) fails its own units
  only: the other checkpoints complete, get their metrics and report, and the run ends
  failed, naming it. A checkpoint whose file changed since planning is planned again under
  its new version (at most MAX_REPLANS times): what was committed for its former bytes no
  longer counts, and results still in flight for them are ignored.
- Resume: units whose records are committed under the run are not evaluated again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import ray

from hrm import storage
from hrm.audits.overlap import audit_overlap
from hrm.data.reader import open_dataset
from hrm.errors import InputError

from cluster.actor import CheckpointUnusable, Evaluator
from cluster.manifest import Manifest, RunLedger, build_manifest, unit_states, write_manifest, write_unit_states
from cluster.plan import PreparedRun, Unit, replan_checkpoint
from cluster.progress import RunProgress
from cluster.report.build import write_report
from cluster.results.health import write_health
from cluster.results.layout import (
    SEGMENT_UNITS,
    Segment,
    UnitFiles,
    UnitRecord,
    commit_unit,
    read_committed,
    stored_predictions,
    unit_files,
    write_segment,
)
from cluster.results.metrics import leaderboard_rows, run_metrics, write_leaderboard, write_metrics
from cluster.results.model_card import model_card
from cluster.results.paired import CheckpointInRun, ablation_comparisons, paired_comparisons
from cluster.results.text_checks import check_run_texts
from cluster.results.votes import apply_votes
from cluster.scheduler import ActorSlot, Scheduler

# Bounded, and enough to survive one crash per actor without the driver (docs/ray.md, "Faults").
ACTOR_MAX_RESTARTS = 1
ACTOR_MAX_TASK_RETRIES = 1
ACTOR_START_TIMEOUT_S = 600.0  # a run with no live actor for this long fails (no resources)
WAIT_TICK_S = 1.0  # progress is refreshed at least this often
MAX_REPLANS = 2  # a checkpoint rewritten more often than this is still being written: it fails


class RunFailed(Exception):
    """The run stopped before every unit was committed; `manifest` says why and which unit."""

    def __init__(self, message: str, manifest: Manifest):
        super().__init__(message)
        self.manifest = manifest


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
        self.ledger = RunLedger(timings={"preflight_s": prepared.preflight_s})
        self.actors: dict[int, ActorSlot] = {}
        self.next_actor_key = 0
        self.replans: Counter[str] = Counter()

    def run(self) -> Manifest:
        clock = time.perf_counter()
        files = unit_files(self.prepared.run)
        for committed in read_committed(self.prepared.run, set(self.units) - self._lost_predictions(files), files):
            if isinstance(committed, Segment):
                self.ledger.adopt(committed)
            else:  # a record no segment holds yet: the next segment will
                self._count(committed, resumed=True)
        self.ledger.timings["resume_scan_s"] = time.perf_counter() - clock
        self.progress.start(self.prepared, list(self.ledger.records.values()))
        if self.ledger.counters["predictions_lost"]:
            self.progress.event(f"{self.ledger.counters['predictions_lost']} committed unit(s) have no stored "
                                "predictions: they are evaluated again", logging.WARNING)
        todo = [unit for unit in self.prepared.units if unit.id not in self.ledger.records]
        clock = time.perf_counter()
        if todo:
            try:
                self._evaluate(todo)
            finally:
                for slot in list(self.actors.values()):
                    self._discard(slot)
        self.ledger.timings["evaluate_s"] = time.perf_counter() - clock
        return self._finish()

    def _lost_predictions(self, files: UnitFiles) -> set[str]:
        """Planned units whose predictions part is not stored (deleted, or lost with a bucket's
        lifecycle rule): a record of them is not resumed, they are evaluated again."""
        stored = stored_predictions(self.prepared.run)
        lost = {unit.id for unit in self.prepared.units if unit.prediction_key not in stored}
        self.ledger.counters["predictions_lost"] = len(files.records & lost)
        return lost

    # -- the scheduling loop ------------------------------------------------------------
    def _evaluate(self, todo: list[Unit]) -> None:
        self._check_cluster_fits_an_actor()
        self.scheduler = Scheduler(todo)
        low, high = self.cluster.actor_range
        self.min_actors = min(low, len(todo))
        for _ in range(min(high, len(todo))):
            self._start_actor()
        self.no_actor_since = time.perf_counter()
        self.loop_started = time.perf_counter()
        while self.ledger.failure is None and (self.scheduler.remaining() or self._in_flight()):
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
        if self.ledger.failure is not None or slot.ready is not None or slot.key not in self.actors:
            return
        others = [s for s in self.actors.values() if s is not slot and s.ready is None]
        while len(slot.in_flight) < self.cluster.units_in_flight:
            unit = self.scheduler.next_for(slot, others)
            if unit is None:
                return
            self.ledger.attempts[unit.id] += 1
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
            if not self._superseded(unit):
                self._unit_failed(unit, err)
            self._fill(slot)
            return
        if self._superseded(unit):
            self._fill(slot)
            return
        self._commit(slot, record)
        self._fill(slot)  # first, so the actor that just finished keeps its checkpoint's units

    def _actor_ready(self, slot: ActorSlot) -> None:
        try:
            info = ray.get(slot.ready)
        except ray.exceptions.RayError as err:
            self.ledger.counters["failed_starts"] += 1
            self.progress.event(f"actor {slot.key} failed to start: {_first_line(err)}", logging.WARNING)
            self._discard(slot)
            if self.ledger.counters["failed_starts"] >= self.cluster.max_attempts:
                self._fail(None, f"evaluation actors failed to start {self.ledger.counters['failed_starts']} times; "
                                 f"last error: {_error_text(err)}")
            else:
                self._start_actor()
            return
        slot.ready, slot.info = None, info
        self.ledger.actors[info.instance] = info
        ready = sum(1 for s in self.actors.values() if s.ready is None)
        if "actors_ready_s" not in self.ledger.timings:
            self.ledger.timings["actors_ready_s"] = time.perf_counter() - self.loop_started
        self.progress.actors_changed(ready)
        self.progress.event(f"actor {slot.key} ready on {info.hostname} (pid {info.pid}, {info.device}, "
                            f"{info.torch_threads} torch threads)")

    def _commit(self, slot: ActorSlot, record: UnitRecord) -> None:
        if slot.info is not None and record.actor.instance != slot.info.instance:
            self.ledger.counters["actor_restarts"] += 1
            self.progress.event(f"actor {slot.key} was restarted by Ray (pid {slot.info.pid} → "
                                f"{record.actor.pid}); its units were retried", logging.WARNING)
        slot.info, slot.cached = record.actor, record.actor.cached
        self.ledger.actors[record.actor.instance] = record.actor
        if record.unit_id in self.ledger.records:
            self.ledger.counters["duplicates_ignored"] += 1  # accepted once, whatever Ray retried
            return
        record = record.model_copy(update={"attempts": self.ledger.attempts[record.unit_id]})
        commit_unit(self.prepared.run, record)
        self._count(record, resumed=False)
        self.ledger.errors.pop(record.unit_id, None)
        if record.model_loaded:
            self.ledger.loads[record.checkpoint] += 1
        t = record.timings
        self.scheduler.observe(t["read_s"] + t["eval_s"] + t["write_s"], t["load_s"] if record.model_loaded else None)
        self.progress.unit_done(record)

    def _count(self, record: UnitRecord, resumed: bool) -> None:
        self.ledger.commit(record, self.units[record.unit_id], resumed)
        if len(self.ledger.segment_records) >= SEGMENT_UNITS:
            self._write_segment()

    def _write_segment(self) -> None:
        segment = self.ledger.take_segment()
        if segment is not None:
            write_segment(self.prepared.run, segment)

    def _actor_died(self, slot: ActorSlot, unit: Unit, err: Exception) -> None:
        """Ray gave up on the actor (its restart is used up): requeue everything it had and
        put a fresh actor in its place."""
        lost = [unit, *slot.in_flight.values()]
        slot.in_flight.clear()
        self._discard(slot)
        self.progress.event(f"actor {slot.key} died ({_first_line(err)}); requeueing {len(lost)} unit(s)",
                            logging.WARNING)
        for lost_unit in lost:
            self._retry_or_fail(lost_unit, f"actor died: {_first_line(err)}")
        if self.ledger.failure is None:
            self.ledger.counters["actor_replacements"] += 1
            self._start_actor()

    def _unit_failed(self, unit: Unit, err: ray.exceptions.RayTaskError) -> None:
        cause = err.cause if isinstance(err.cause, BaseException) else err
        if isinstance(cause, CheckpointUnusable):
            self.ledger.errors[unit.id] = str(cause)
            if cause.changed:
                self._replan(unit.checkpoint, str(cause))
            elif cause.permanent or self.ledger.attempts[unit.id] >= self.cluster.max_attempts:
                self._fail_checkpoint(unit.checkpoint, str(cause))
            else:
                self._retry_or_fail(unit, str(cause))
            return
        if isinstance(cause, InputError):
            self.ledger.errors[unit.id] = str(cause)
            self._fail(unit.id, f"unit {unit.id} ({unit.checkpoint}, {_shard_text(unit)}): {cause}")
            return
        self._retry_or_fail(unit, _error_text(cause))

    def _retry_or_fail(self, unit: Unit, error: str) -> None:
        if self._superseded(unit):
            return
        self.ledger.errors[unit.id] = error
        if unit.checkpoint in self.ledger.failed_checkpoints:
            return  # given up already: nothing of it is evaluated again
        if self.ledger.attempts[unit.id] >= self.cluster.max_attempts:
            self._fail(unit.id, f"unit {unit.id} ({unit.checkpoint}, {_shard_text(unit)}) failed "
                                f"{self.ledger.attempts[unit.id]} times; last error: {error}")
        else:
            self.progress.event(f"retrying unit {unit.id} ({unit.checkpoint}, {_shard_text(unit)}) after: "
                                f"{error.splitlines()[0] if error else 'unknown error'}", logging.WARNING)
            self.scheduler.requeue(unit)

    def _superseded(self, unit: Unit) -> bool:
        """A unit of a checkpoint's former plan (its file has changed since): whatever it
        returns is ignored."""
        if unit.id in self.units:
            return False
        self.ledger.counters["superseded_ignored"] += 1
        return True

    def _replan(self, name: str, why: str) -> None:
        """Plan a checkpoint whose file changed again under its new version; its results so far
        are forgotten. A file that keeps changing, or no longer passes preflight, fails it."""
        if self.replans[name] >= MAX_REPLANS:
            self._fail_checkpoint(name, f"{why} (it changed {self.replans[name] + 1} times during the run: is it "
                                        "still being written?)")
            return
        self.replans[name] += 1
        self.ledger.counters["checkpoints_replanned"] += 1
        try:
            self.prepared = replan_checkpoint(self.prepared, name)
        except InputError as err:
            self._fail_checkpoint(name, f"{why}; and as it is now: {err}")
            return
        self.checkpoints[name] = next(r for r in self.prepared.checkpoints if r.name == name)
        fresh = [u for u in self.prepared.units if u.checkpoint == name]
        self.units = {uid: u for uid, u in self.units.items() if u.checkpoint != name} | {u.id: u for u in fresh}
        forgotten = self.ledger.forget(name)
        self.scheduler.replace(name, fresh)
        self.progress.checkpoint_replanned(name, forgotten, len(fresh))
        self.progress.event(f"checkpoint {name} changed since planning; planned again as "
                            f"{self.checkpoints[name].version} ({len(forgotten)} committed unit(s) no longer count): "
                            f"{why.splitlines()[0]}", logging.WARNING)

    def _fail_checkpoint(self, name: str, message: str) -> None:
        if name in self.ledger.failed_checkpoints:
            return
        self.ledger.failed_checkpoints[name] = message
        skipped = self.scheduler.drop(name)
        self.progress.event(f"checkpoint {name} failed, {len(skipped)} more of its units skipped; the other "
                            f"checkpoints go on: {message.splitlines()[0]}", logging.ERROR)

    def _fail(self, unit_id: str | None, message: str) -> None:
        if self.ledger.failure is None:
            self.ledger.failure = (unit_id, message)

    def _check_cluster_fits_an_actor(self) -> None:
        """Fail at once, naming the config fields, when no node of the cluster could ever hold
        one actor (a GPU request on a cluster without GPUs), unless nodes may still come."""
        if self.cluster.wait_for_nodes:
            return
        need = {"CPU": self.cluster.cpus_per_actor, "GPU": self.cluster.gpus_per_actor}
        fields = {"CPU": "cluster.cpus_per_actor", "GPU": "cluster.gpus_per_actor"}
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        if any(all(node.get(kind, 0.0) >= amount for kind, amount in need.items() if amount > 0) for node in nodes):
            return
        largest = {kind: max((node.get(kind, 0.0) for node in nodes), default=0.0) for kind in need}
        short = [f"{fields[kind]}: {amount:g} {kind} per actor, but the largest node has {largest[kind]:g}"
                 for kind, amount in need.items() if amount > largest[kind]]
        raise InputError("no node of the Ray cluster can hold an evaluation actor: " + "; ".join(short or [
            f"{need} per actor fits no single node ({[{k: n.get(k, 0.0) for k in need} for n in nodes]})"])
            + " (on an autoscaling cluster, set cluster.wait_for_nodes: true)")

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
        handle = remote.remote(self.config, self.prepared.run)
        key = self.next_actor_key
        self.next_actor_key += 1
        self.actors[key] = ActorSlot(key=key, handle=handle, ready=handle.info.remote())

    def _discard(self, slot: ActorSlot) -> None:
        self.actors.pop(slot.key, None)
        ray.kill(slot.handle, no_restart=True)
        self.progress.actors_changed(sum(1 for s in self.actors.values() if s.ready is None))

    # -- results ------------------------------------------------------------------------
    def _finish(self) -> Manifest:
        failed = self.ledger.failed_checkpoints
        evaluated = replace(self.prepared, checkpoints=[r for r in self.prepared.checkpoints if r.name not in failed],
                            units=[u for u in self.prepared.units if u.checkpoint not in failed])
        # Every unit of every checkpoint that did not fail is committed: their results stand.
        completed = (self.ledger.failure is None and bool(evaluated.checkpoints)
                     and all(u.id in self.ledger.records for u in evaluated.units))
        run = self.prepared.run
        self._write_segment()  # what a rerun reads first, before the manifest says how the run ended
        metrics = None
        if completed:
            metrics = run_metrics(evaluated, self.ledger.stats)
            metrics = apply_votes(self.config, run, open_dataset(self.config.dataset.uri), metrics)
            best = leaderboard_rows(metrics)[0]["checkpoint"]  # by the figures alone: what follows keeps it
            metrics = with_paired_comparisons(run, evaluated, metrics, best)
            names = [ref.name for ref in evaluated.checkpoints]
            if self.config.ablations:
                metrics = {**metrics, "ablations": ablation_comparisons(run, names, self.config.ablations)}
            text = check_run_texts(run, names, self.config.dataset.uri)  # None: no tasks to check
            if text is not None:
                metrics = {**metrics, "text": text}
            if self.config.audits:
                metrics = {**metrics, "audits": run_audits(self.config.dataset.uri)}
            metrics = {**metrics, "model_card": model_card(evaluated, metrics, self.ledger.records.values(), best)}
        status = "completed" if completed and not failed else "failed"
        states = unit_states(self.prepared, self.ledger)
        write_unit_states(run, states)
        manifest = build_manifest(self.prepared, self.ledger, status,
                                  ray.cluster_resources() if ray.is_initialized() else {}, states)
        if metrics is not None:
            write_metrics(run, metrics)
            write_leaderboard(run, leaderboard_rows(metrics))
            write_health(run, manifest)
        write_manifest(run, manifest)  # last: the commit point of the run
        self.progress.finish(manifest, metrics)
        # After the commit point (it reads the manifest), regenerable from results; a failed run's
        # report shows what it committed, marked partial.
        html, _ = write_report(run)
        self.progress.report_written(html)
        if status == "failed":
            raise RunFailed(manifest.error or "run incomplete", manifest)
        return manifest


def run_audits(dataset_uri: str) -> dict[str, Any]:
    """The audits (`audits: [overlap]`, the one there is), by a Ray task when Ray is up: they
    read whole splits, which is no work for the driver. The task holds one CPU, so it keys the
    data in its own process instead of starting one per core of its node."""
    if ray.is_initialized():
        return {"overlap": ray.get(ray.remote(num_cpus=1)(overlap_document).remote(dataset_uri, workers=1))}
    return {"overlap": overlap_document(dataset_uri)}


def overlap_document(dataset_uri: str, workers: int | None = None) -> dict[str, Any]:
    return audit_overlap(dataset_uri, workers=workers).model_dump(mode="json")


def with_paired_comparisons(run: str, evaluated: PreparedRun, metrics: dict[str, Any], best: str) -> dict[str, Any]:
    """`metrics` with each checkpoint's McNemar test against the best and its previous step
    (`cluster.results.paired`), when the run has two or more checkpoints."""
    if len(evaluated.checkpoints) < 2:
        return metrics
    checkpoints = [CheckpointInRun(ref.name, storage.parent(ref.config_uri), ref.step) for ref in evaluated.checkpoints]
    return {**metrics, "paired": paired_comparisons(run, checkpoints, best)}


# --------------------------------------------------------------------------- small helpers


def _shard_text(unit: Unit) -> str:
    return f"set {unit.shard.set} examples {unit.shard.start}–{unit.shard.stop}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
