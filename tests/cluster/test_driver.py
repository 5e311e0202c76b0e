"""The driver: its parts that need no Ray (scheduling policy, the evaluator class run in-process,
the results layout, the leaderboard), and on an embedded Ray, what it does when a checkpoint
cannot be used."""

import io
import threading
import time
from collections import Counter, OrderedDict

import boto3
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from hrm import storage
from hrm.data.schema import Shard
from hrm.errors import InputError
from hrm.eval.metrics import StatsTable

from cluster.actor import Evaluator
from cluster.driver import RunFailed, execute
from cluster.manifest import read_manifest, read_unit_states
from cluster.plan import Unit, prepare
from cluster.progress import RunProgress
from cluster.results.layout import (
    Segment,
    commit_unit,
    read_committed,
    read_predictions,
    read_unit_records,
    write_segment,
)
from cluster.results.metrics import METRICS_VERSION, leaderboard_rows, read_metrics, run_metrics
from cluster.scheduler import ActorSlot, Scheduler

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, evaluate_in_process, make_dataset, run_config
from tests.factories import make_checkpoint
from tests.s3server import start_s3_server


def units_for(checkpoints: int, shards: int) -> list[Unit]:
    return [Unit(id=f"c{c}-s{s}", checkpoint=f"c{c}", shard=Shard("test", "all", s, s + 1))
            for c in range(checkpoints) for s in range(shards)]


def slot(key: int, cached=(), working=()) -> ActorSlot:
    s = ActorSlot(key=key, handle=None, ready=None, cached=list(cached))
    for i, name in enumerate(working):
        s.in_flight[(key, i)] = Unit(id=f"{name}-busy{i}", checkpoint=name, shard=Shard("test", "all", 0, 1))
    return s


def test_an_actor_keeps_taking_units_of_the_checkpoint_it_holds():
    scheduler = Scheduler(units_for(3, 4))
    assert scheduler.next_for(slot(0, cached=["c2"]), []).checkpoint == "c2"
    assert scheduler.next_for(slot(0, working=["c1"], cached=["c2"]), []).checkpoint == "c1"


def test_a_second_actor_takes_a_checkpoint_nobody_holds_before_sharing_one():
    scheduler = Scheduler(units_for(3, 4))
    busy = slot(0, working=["c0"])
    assert scheduler.next_for(slot(1), [busy]).checkpoint == "c1"
    idle_holder = slot(0, cached=["c0", "c1"])
    assert scheduler.next_for(slot(1), [idle_holder]).checkpoint == "c2"


def test_an_idle_actor_steals_only_when_splitting_the_rest_beats_a_load():
    scheduler = Scheduler(units_for(1, 5))
    owner = slot(0, working=["c0"])
    scheduler.observe(unit_s=1.0, load_s=4.0)
    assert scheduler.next_for(slot(1), [owner]) is None  # 5 units / 2 = 2.5 s saved < 4 s load
    scheduler.observe(unit_s=1.0, load_s=0.0)  # loads average 2 s now
    assert scheduler.next_for(slot(1), [owner]).checkpoint == "c0"


def test_a_requeued_unit_is_taken_next():
    units = units_for(1, 3)
    scheduler = Scheduler(units)
    first = scheduler.next_for(slot(0), [])
    scheduler.requeue(first)
    assert scheduler.remaining() == 3
    assert scheduler.next_for(slot(0), []) == first


def simulate(checkpoints: int, shards: int, actors: int, unit_s: float, load_s: float, cache_size: int = 2,
             in_flight: int = 2) -> tuple[int, float]:
    """The driver's dispatch loop against simulated actors that run their queue in order
    with an LRU model cache; returns (model loads, makespan)."""
    scheduler = Scheduler(units_for(checkpoints, shards))
    slots = [slot(i) for i in range(actors)]
    caches = [OrderedDict() for _ in range(actors)]
    free_at = [0.0] * actors
    loads = 0

    def fill(s: ActorSlot) -> None:
        while len(s.in_flight) < in_flight:
            unit = scheduler.next_for(s, [o for o in slots if o is not s])
            if unit is None:
                return
            s.in_flight[unit.id] = unit

    for s in slots:
        fill(s)
    while any(s.in_flight for s in slots):
        i = min((k for k, s in enumerate(slots) if s.in_flight), key=lambda k: free_at[k])
        s = slots[i]
        unit = s.in_flight.pop(next(iter(s.in_flight)))
        cache, loaded = caches[i], unit.checkpoint not in caches[i]
        if loaded:
            loads += 1
            cache[unit.checkpoint] = True
            while len(cache) > cache_size:
                cache.popitem(last=False)
        cache.move_to_end(unit.checkpoint)
        free_at[i] += unit_s + (load_s if loaded else 0.0)
        s.cached = list(cache)
        scheduler.observe(unit_s, load_s if loaded else None)
        fill(s)
        for other in slots:
            fill(other)
    return loads, max(free_at)


@pytest.mark.parametrize("unit_s, load_s", [(1.0, 2.0), (1.0, 0.5), (1.0, 8.0)])
def test_a_sweep_of_20_checkpoints_by_8_shards_on_2_actors_loads_each_about_once_and_ends_near_ideal(unit_s, load_s):
    loads, makespan = simulate(20, 8, 2, unit_s, load_s)
    ideal = (20 * 8 * unit_s + 20 * load_s) / 2  # one process doing everything, split over two
    assert loads / 20 <= 1.2
    assert makespan <= 1.15 * ideal


def test_one_checkpoint_over_many_shards_is_shared_by_both_actors():
    loads, makespan = simulate(1, 40, 2, unit_s=1.0, load_s=2.0)
    assert loads == 2
    assert makespan <= 1.15 * (40 + 2) / 2 + 2


# --------------------------------------------------------------------------- the evaluator in-process


def test_a_dropped_checkpoints_units_are_never_handed_out_again_even_when_requeued():
    units = units_for(2, 3)
    scheduler = Scheduler(units)
    taken = scheduler.next_for(slot(0, cached=["c0"]), [])
    assert [u.id for u in scheduler.drop("c0")] == ["c0-s1", "c0-s2"]
    scheduler.requeue(taken)
    handed = [scheduler.next_for(slot(0, cached=["c0"]), []) for _ in range(4)]
    assert [u.id if u else None for u in handed] == ["c1-s0", "c1-s1", "c1-s2", None]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    data = make_dataset(root / "data")
    make_checkpoint(root / "run", steps=(1, 2), q_scale=0.3, vocab_size=VOCAB, seq_len=SEQ_LEN,
                    num_puzzle_identifiers=NUM_IDS)
    config = run_config([{"run": str(root / "run")}], data, str(root / "out"),
                        cluster={"cache_size": 1, "shard_size": 16})
    return prepare(config)


def evaluator(prepared, cache_size: int) -> Evaluator:
    config = prepared.config.model_copy(update={"cluster": prepared.config.cluster.model_copy(update={"cache_size": cache_size})})
    return Evaluator(config, prepared.run)


def test_units_evaluated_one_by_one_merge_into_exactly_the_whole_set_result(sweep):
    actor = evaluator(sweep, cache_size=2)
    reference = evaluate_in_process(sweep)
    records = [actor(unit, next(r for r in sweep.checkpoints if r.name == unit.checkpoint)) for unit in sweep.units]
    assert len(sweep.units) == 2 * 5  # 40 easy + 24 hard examples in shards of 16
    for ref in sweep.checkpoints:
        merged = StatsTable()
        for record in records:
            if record.checkpoint == ref.name:
                merged.merge(StatsTable.from_dict(record.stats))
        whole, table = reference[ref.name]
        assert merged.to_dict() == whole.to_dict()
        assert merged.finalize() == whole.finalize()
        assert ("easy", "1") in merged.groups  # grouped by set × tier
        stored = read_predictions(sweep.run, ref.name)
        assert stored.equals(table)


def test_every_checkpoints_predictions_read_as_one_table_with_a_checkpoint_column(sweep):
    actor = evaluator(sweep, cache_size=2)
    refs = {r.name: r for r in sweep.checkpoints}
    for unit in sweep.units:
        actor(unit, refs[unit.checkpoint])
    table = pq.read_table(f"{sweep.run}/predictions")
    assert Counter(table.column("checkpoint").to_pylist()) == {name: 64 for name in refs}


def test_the_model_cache_loads_a_checkpoint_once_and_evicts_the_least_recently_used(sweep):
    refs = {r.name: r for r in sweep.checkpoints}
    first, second = [[u for u in sweep.units if u.checkpoint == name] for name in refs]
    actor = evaluator(sweep, cache_size=1)
    loaded = [actor(u, refs[u.checkpoint]).model_loaded for u in (first[0], first[1], second[0], first[2])]
    assert loaded == [True, False, True, True]
    assert actor.info().cached == [first[0].checkpoint]
    roomy = evaluator(sweep, cache_size=2)
    loaded = [roomy(u, refs[u.checkpoint]).model_loaded for u in (first[0], second[0], first[1], second[1])]
    assert loaded == [True, True, False, False]


def test_committed_records_are_read_back_and_only_those_of_the_plan(sweep, tmp_path):
    actor = evaluator(sweep, cache_size=1)
    unit = sweep.units[0]
    record = actor(unit, sweep.checkpoints[0])
    run = str(tmp_path / "run")
    commit_unit(run, record)
    commit_unit(run, record.model_copy(update={"unit_id": "not-in-this-plan"}))
    assert list(read_unit_records(run, {u.id for u in sweep.units})) == [record]


def test_the_leaderboard_ranks_by_exact_then_token_accuracy():
    def entry(exact, token):
        figures = {key: 0.0 for key in ("count", "exact_ci_low", "exact_ci_high", "q_halt_accuracy", "mean_steps",
                                        "lm_loss", "q_halt_auroc", "q_halt_auroc_bound")}
        return {"step": 1, "family": "hrm", "version": "h",
                "metrics": {"all": {**figures, "exact_accuracy": exact, "token_accuracy": token}}}

    metrics = {"checkpoints": {"a": entry(0.1, 0.9), "b": entry(0.5, 0.1), "c": entry(0.1, 0.95)}}
    rows = leaderboard_rows(metrics)
    assert [(r["rank"], r["checkpoint"]) for r in rows] == [(1, "b"), (2, "c"), (3, "a")]


def test_metrics_json_names_its_format_and_version(sweep):
    metrics = run_metrics(sweep, {})
    assert (metrics["format"], metrics["version"]) == ("hrm-eval/metrics", METRICS_VERSION)
    assert set(metrics["checkpoints"]) == {ref.name for ref in sweep.checkpoints}


def quiet_run(config):
    """Plan and execute a run with its progress kept off the test output; (prepared, error)."""
    prepared = prepare(config)
    try:
        execute(prepared, RunProgress(stream=io.StringIO()))
    except RunFailed as err:
        return prepared, err
    return prepared, None


def three_checkpoint_run(root, run_id: str):
    data = make_dataset(root / "data")
    make_checkpoint(root / "run", steps=(1, 2, 3), q_scale=0.3, vocab_size=VOCAB, seq_len=SEQ_LEN,
                    num_puzzle_identifiers=NUM_IDS)
    config = run_config([{"run": str(root / "run")}], data, str(root / "out"), cluster={"actors": 1})
    return config.model_copy(update={"output": config.output.model_copy(update={"run_id": run_id})})


@pytest.mark.ray
def test_a_checkpoint_that_cannot_be_loaded_fails_its_own_units_and_the_others_match_a_clean_run(tmp_path,
                                                                                                 ray_runtime):
    clean, error = quiet_run(three_checkpoint_run(tmp_path / "clean", "clean"))
    assert error is None
    prepared = prepare(three_checkpoint_run(tmp_path / "broken", "broken"))
    (tmp_path / "broken" / "run" / "step_2").write_bytes(b"not a checkpoint")  # after planning
    with pytest.raises(RunFailed, match="1 checkpoint\\(s\\) failed: run-step_2: .*step_2"):
        execute(prepared, RunProgress(stream=io.StringIO()))

    manifest = read_manifest(prepared.run)
    assert manifest.status == "failed"
    assert [c.name for c in manifest.checkpoints if c.error] == ["run-step_2"]
    states = read_unit_states(prepared.run)
    assert {s.state for s in states if s.checkpoint == "run-step_2"} == {"failed"}
    assert {s.state for s in states if s.checkpoint != "run-step_2"} == {"committed"}
    good, reference = read_metrics(prepared.run)["checkpoints"], read_metrics(clean.run)["checkpoints"]
    assert list(good) == ["run-step_1", "run-step_3"]
    for name in good:
        assert good[name]["stats"] == reference[name]["stats"] and good[name]["metrics"] == reference[name]["metrics"]
    report = (tmp_path / "broken" / "out" / "broken" / "report.md").read_text()
    assert "Failed checkpoints" in report and "run-step_2" in report


def with_run_id(config, run_id: str):
    return config.model_copy(update={"output": config.output.model_copy(update={"run_id": run_id})})


@pytest.mark.ray
def test_a_checkpoint_changed_after_planning_is_refused_and_replanned_never_counted_under_its_old_version(
        tmp_path, ray_runtime):
    config = three_checkpoint_run(tmp_path, "before")
    before, error = quiet_run(config)
    assert error is None
    planned = prepare(with_run_id(config, "changed"))
    step_2 = tmp_path / "run" / "step_2"
    other = make_checkpoint(tmp_path / "other", steps=(2,), seed=99, vocab_size=VOCAB, seq_len=SEQ_LEN,
                            num_puzzle_identifiers=NUM_IDS)[0]
    step_2.write_bytes(other.read_bytes())  # same shapes, other weights
    manifest = execute(planned, RunProgress(stream=io.StringIO()))

    assert manifest.status == "completed" and manifest.scheduling["checkpoints_replanned"] == 1
    entry = next(c for c in manifest.checkpoints if c.name == "run-step_2")
    old_version = next(r.version for r in planned.checkpoints if r.name == "run-step_2")
    assert entry.version == storage.version(str(step_2)) != old_version
    old_ids = {u.id for u in planned.units if u.checkpoint == "run-step_2"}
    assert old_ids.isdisjoint(s.id for s in read_unit_states(planned.run))
    fresh, error = quiet_run(with_run_id(config, "fresh"))  # the files as they are now, planned from scratch
    assert error is None
    changed, now = read_metrics(planned.run)["checkpoints"], read_metrics(fresh.run)["checkpoints"]
    assert {name: c["stats"] for name, c in changed.items()} == {name: c["stats"] for name, c in now.items()}
    assert changed["run-step_2"]["stats"] != read_metrics(before.run)["checkpoints"]["run-step_2"]["stats"]


def test_a_segment_is_read_whole_only_when_every_unit_in_it_belongs_to_the_plan(sweep, tmp_path):
    actor = evaluator(sweep, cache_size=2)
    refs = {r.name: r for r in sweep.checkpoints}
    records = [actor(unit, refs[unit.checkpoint]) for unit in sweep.units[:3]]
    run = str(tmp_path / "run")
    for record in records:
        commit_unit(run, record)
    stats = StatsTable()
    for record in records:
        stats.merge(StatsTable.from_dict(record.stats))
    slim = [r.model_copy(update={"stats": {}}) for r in records]
    write_segment(run, Segment(slim, {records[0].checkpoint: stats.to_dict()}))

    whole = list(read_committed(run, {u.id for u in sweep.units}))
    assert len(whole) == 1 and isinstance(whole[0], Segment)
    assert whole[0].records == slim and whole[0].stats == {records[0].checkpoint: stats.to_dict()}
    part = list(read_committed(run, {records[0].unit_id, records[1].unit_id}))  # a plan without the third
    assert {r.unit_id: r for r in part} == {r.unit_id: r for r in records[:2]}  # the records, statistics included


@pytest.mark.ray
def test_a_rerun_resumes_from_segments_and_loose_records_with_the_first_runs_metrics(tmp_path, ray_runtime,
                                                                                     monkeypatch):
    monkeypatch.setattr("cluster.driver.SEGMENT_UNITS", 4)
    config = three_checkpoint_run(tmp_path, "segments")
    first, error = quiet_run(config)
    assert error is None
    units = tmp_path / "out" / "segments" / "units"
    segments = sorted(units.glob("segment-*.parquet"))
    assert len(segments) == 4  # 15 units: three full segments and the rest at the end
    segments[0].unlink()  # its four units are now only in their own records
    metrics = read_metrics(first.run)

    again, error = quiet_run(config)
    assert error is None
    manifest = read_manifest(again.run)
    assert (manifest.counts["resumed"], manifest.counts["evaluated"]) == (15, 0)
    resumed = read_metrics(again.run)
    assert {n: (c["stats"], c["metrics"]) for n, c in resumed["checkpoints"].items()} == \
        {n: (c["stats"], c["metrics"]) for n, c in metrics["checkpoints"].items()}
    assert len(list(units.glob("segment-*.parquet"))) == 4  # the loose four were compacted again


@pytest.mark.ray
def test_a_gpu_request_on_a_cluster_without_gpus_fails_at_once_naming_the_field(tmp_path, ray_runtime):
    config = three_checkpoint_run(tmp_path, "gpu")
    config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"gpus_per_actor": 1.0})})
    prepared = prepare(config)
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"cluster.gpus_per_actor: 1 GPU per actor, but the largest node has 0"):
        execute(prepared, RunProgress(stream=io.StringIO()))
    assert time.perf_counter() - started < 30
    assert not storage.list_files(prepared.run)  # nothing published


@pytest.mark.ray
def test_a_committed_unit_whose_predictions_are_gone_is_evaluated_again_with_the_same_results(tmp_path,
                                                                                            ray_runtime):
    config = three_checkpoint_run(tmp_path, "lost")
    first, error = quiet_run(config)
    assert error is None
    before = {name: c["stats"] for name, c in read_metrics(first.run)["checkpoints"].items()}
    lost = first.units[3]
    storage.delete(storage.join(first.run, lost.prediction_key))

    again, error = quiet_run(config)
    manifest = read_manifest(again.run)
    assert error is None and manifest.counts["evaluated"] == 1 and manifest.scheduling["predictions_lost"] == 1
    assert storage.exists(storage.join(again.run, lost.prediction_key))
    assert {name: c["stats"] for name, c in read_metrics(again.run)["checkpoints"].items()} == before


class OutageProgress(RunProgress):
    """Takes the object store down for `seconds` once the first unit is committed."""

    def __init__(self, server: ThreadedMotoServer, seconds: float):
        super().__init__(stream=io.StringIO())
        self.server, self.seconds, self.restart = server, seconds, None

    def unit_done(self, record):
        super().unit_done(record)
        if self.restart is None:
            self.units_left_at_outage = len(self.prepared.units) - self.done_units
            host, port = self.server.get_host_and_port()
            self.server.stop()
            self.restart = threading.Timer(self.seconds, ThreadedMotoServer(ip_address=host, port=port,
                                                                              verbose=False).start)
            self.restart.start()


@pytest.mark.ray
@pytest.mark.s3
def test_a_run_whose_object_store_goes_away_for_10_seconds_completes_with_a_clean_runs_metrics(
        tmp_path, s3_endpoint, ray_runtime):
    clean, error = quiet_run(three_checkpoint_run(tmp_path / "clean", "clean"))
    assert error is None
    server, endpoint = start_s3_server()
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    config = three_checkpoint_run(tmp_path / "outage", "outage")
    output = config.output.model_copy(update={"uri": f"s3://outage/out?endpoint_override={endpoint}&scheme=http"})
    prepared = prepare(config.model_copy(update={"output": output}))
    progress = OutageProgress(server, seconds=10.0)
    manifest = execute(prepared, progress)
    progress.restart.join()
    assert progress.units_left_at_outage > 0  # each of them wrote its predictions and record through the outage
    assert manifest.status == "completed" and manifest.counts["evaluated"] == len(prepared.units)
    stats = lambda run: {name: c["stats"] for name, c in read_metrics(run)["checkpoints"].items()}  # noqa: E731
    assert stats(prepared.run) == stats(clean.run)


def test_an_actor_builds_its_engines_with_the_run_configs_compile_mode(sweep, monkeypatch):
    import cluster.actor

    seen, build_engine = [], cluster.actor.build_engine

    def recording(*args, **settings):
        seen.append((settings["compile"], settings["compile_mode"]))
        return build_engine(*args, **{**settings, "compile": False, "compile_mode": None})  # no compiler needed

    monkeypatch.setattr(cluster.actor, "build_engine", recording)
    tuned = sweep.config.eval.model_copy(update={"compile": True, "compile_mode": "max-autotune"})
    actor = Evaluator(sweep.config.model_copy(update={"eval": tuned}), sweep.run)
    unit = sweep.units[0]
    actor(unit, next(r for r in sweep.checkpoints if r.name == unit.checkpoint))
    assert seen == [(True, "max-autotune")]
