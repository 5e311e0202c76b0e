from pathlib import Path

import numpy as np
import pytest

from hrm import storage
from hrm.checkpoint.loading import load_checkpoint
from hrm.data.reader import open_dataset
from hrm.data.schema import Shard
from hrm.errors import InputError

from cluster import plan
from cluster.config import CheckpointSource
from cluster.plan import (
    CheckpointRef,
    Sample,
    plan_shards,
    plan_units,
    preflight,
    read_examples,
    source_checkpoints,
    unit_id,
)

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset, run_config
from tests.factories import make_checkpoint


def fake_run(run_dir: Path, steps) -> Path:
    """Discovery reads names only: empty step files are enough."""
    run_dir.mkdir(parents=True)
    (run_dir / "all_config.yaml").write_text("arch: {}\n")
    for step in steps:
        (run_dir / f"step_{step}").write_bytes(b"")
    return run_dir


def steps_of(source: CheckpointSource) -> list[int]:
    return [ref.step for ref in source_checkpoints(source)]


def test_a_run_source_finds_every_step_in_step_order_and_names_them_after_the_run(tmp_path):
    run = fake_run(tmp_path / "sudoku-run", [1000, 200, 30])
    refs = source_checkpoints(CheckpointSource(run=str(run)))
    assert [r.step for r in refs] == [30, 200, 1000]
    assert [r.name for r in refs] == ["sudoku-run-step_30", "sudoku-run-step_200", "sudoku-run-step_1000"]
    assert all(r.config_uri == str(run / "all_config.yaml") for r in refs)


@pytest.mark.parametrize("filters, expected", [
    ({"min_step": 300, "max_step": 700}, [300, 400, 500, 600, 700]),
    ({"every": 3}, [100, 400, 700, 1000]),  # counted back from the newest, which is always kept
    ({"last": 2}, [900, 1000]),
    ({"max_step": 800, "every": 2, "last": 3}, [400, 600, 800]),  # range, then every Nth, then last K
])
def test_step_filters_select_a_range_every_nth_and_the_last_k(tmp_path, filters, expected):
    run = fake_run(tmp_path / "run", range(100, 1001, 100))
    assert steps_of(CheckpointSource(run=str(run), **filters)) == expected


def test_step_filters_that_select_no_checkpoint_are_refused_naming_the_steps_there_are(tmp_path):
    run = fake_run(tmp_path / "run", [100, 200, 300])
    with pytest.raises(InputError) as err:
        source_checkpoints(CheckpointSource(run=str(run), min_step=5000))
    assert str(err.value) == f"{run}: min_step 5000 / max_step None select none of its 3 checkpoint(s) (steps 100..300)"


def test_a_glob_selects_files_and_a_path_to_a_run_directory_means_its_newest_step(tmp_path):
    run = fake_run(tmp_path / "run", [5, 50])
    (run / "ema_step_50").write_bytes(b"")
    assert [r.name for r in source_checkpoints(CheckpointSource(run=str(run), glob="ema_*"))] == ["run-ema_step_50"]
    (ref,) = source_checkpoints(CheckpointSource(path=str(run), name="best"))
    assert (ref.name, ref.step, ref.uri) == ("best", 50, str(run / "step_50"))


def upload_run(local, prefix: str) -> None:
    """A run directory of steps 10 and 20 made at `local` and copied to the object prefix."""
    make_checkpoint(local, steps=(10, 20), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    for file in local.iterdir():
        storage.write_bytes_atomic(storage.join(prefix, file.name), file.read_bytes())


def test_a_run_prefix_on_s3_is_discovered_and_downloaded_once_into_the_cache(tmp_path, s3_bucket):
    local, prefix = tmp_path / "run", f"{s3_bucket}/runs/tiny"
    upload_run(local, prefix)
    refs = source_checkpoints(CheckpointSource(run=prefix, last=1))
    assert [(r.name, r.uri) for r in refs] == [("tiny-step_20", f"{prefix}/step_20")]
    cache = tmp_path / "cache"
    weights, config = storage.local_copy(refs[0].uri, str(cache)), storage.local_copy(refs[0].config_uri, str(cache))
    assert weights.read_bytes() == (local / "step_20").read_bytes()
    assert config.read_bytes() == (local / "all_config.yaml").read_bytes()
    modified = weights.stat().st_mtime_ns
    assert storage.local_copy(refs[0].uri, str(cache)).stat().st_mtime_ns == modified  # cached, not fetched again
    ckpt = load_checkpoint(refs[0].uri, cache_dir=str(cache))
    assert (ckpt.step, ckpt.uri) == (20, refs[0].uri)


def test_preflight_of_checkpoints_on_s3_checks_their_shapes_without_downloading_them(tmp_path, s3_bucket):
    local, prefix = tmp_path / "run", f"{s3_bucket}/runs/tiny"
    upload_run(local, prefix)
    cache = tmp_path / "cache"
    config = run_config([{"run": prefix}], make_dataset(tmp_path / "data"), str(tmp_path / "out"),
                        cluster={"checkpoint_cache_dir": str(cache)})
    _, refs = preflight(config)
    assert [r.version for r in refs] == [storage.version(f"{prefix}/step_{n}") for n in (10, 20)]
    assert not cache.exists()


def test_preflight_reports_every_problem_at_once_and_names_file_and_key(tmp_path):
    data = make_dataset(tmp_path / "data")
    good = make_checkpoint(tmp_path / "good", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)[0]
    wrong_vocab = make_checkpoint(tmp_path / "vocab", vocab_size=VOCAB + 1, seq_len=SEQ_LEN,
                                  num_puzzle_identifiers=NUM_IDS)[0]
    wrong_ids = make_checkpoint(tmp_path / "ids", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=7)[0]
    wrong_width = make_checkpoint(tmp_path / "width", vocab_size=VOCAB, seq_len=SEQ_LEN,
                                  num_puzzle_identifiers=NUM_IDS)[0]
    (tmp_path / "width" / "all_config.yaml").write_text(
        (tmp_path / "width" / "all_config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 48"))
    config = run_config(
        [{"path": str(p)} for p in (good, wrong_vocab, wrong_ids, wrong_width)]
        + [{"run": str(tmp_path / "nowhere")}],
        data, str(tmp_path / "out"), dataset={"sets": ["easy", "medium"]},
    )
    with pytest.raises(InputError) as err:
        preflight(config)
    message = str(err.value)
    assert message.startswith("preflight found 5 problem(s)")
    assert "has no set(s) medium" in message
    assert f"{wrong_vocab}: tensor 'embed_tokens.embedding_weight' has shape (12, 32)" in message
    assert f"{wrong_ids}: tensor 'puzzle_emb.weights' has shape (7, 32)" in message
    assert f"{wrong_width}: tensor" in message and "the config and dataset give" in message
    assert "checkpoints.4: " in message and "nowhere: no checkpoint files" in message
    assert str(good) not in message


def test_preflight_passes_good_checkpoints_with_their_storage_versions(tmp_path):
    data = make_dataset(tmp_path / "data")
    paths = make_checkpoint(tmp_path / "run", steps=(1, 2), vocab_size=VOCAB, seq_len=SEQ_LEN,
                            num_puzzle_identifiers=NUM_IDS)
    config = run_config([{"run": str(tmp_path / "run")}, {"path": str(paths[1])}], data, str(tmp_path / "out"))
    dataset, refs = preflight(config)
    assert [r.name for r in refs] == ["run-step_1", "run-step_2"]  # the same file named twice counts once
    assert [r.version for r in refs] == [storage.version(str(p)) for p in paths]
    assert {r.family for r in refs} == {"hrm"}
    assert dataset.sets("test") == ["easy", "hard"]


def test_two_checkpoints_with_one_name_are_refused(tmp_path):
    data = make_dataset(tmp_path / "data")
    a = make_checkpoint(tmp_path / "a" / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)[0]
    b = make_checkpoint(tmp_path / "b" / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)[0]
    config = run_config([{"path": str(a)}, {"path": str(b)}], data, str(tmp_path / "out"))
    with pytest.raises(InputError, match="checkpoint name 'run-step_10' is also .*give `name:`"):
        preflight(config)


def test_shards_are_whole_batches_and_cover_every_example_once(tmp_path):
    dataset = open_dataset(make_dataset(tmp_path / "data", {"easy": 40, "hard": 7}))
    shards = plan_shards(dataset, "test", ["easy", "hard"], shard_size=10, batch_size=8)
    assert shards == [Shard("test", "easy", 0, 16), Shard("test", "easy", 16, 32), Shard("test", "easy", 32, 40),
                      Shard("test", "hard", 0, 7)]


def test_a_unit_id_changes_with_checkpoint_data_eval_settings_and_shard_and_nothing_else():
    shard = Shard("test", "easy", 0, 16)
    ckpt = CheckpointRef(name="a", uri="run/step_1", config_uri="run/all_config.yaml", step=1, version="v1")
    base = unit_id(ckpt, "data", {"protocol": "fixed"}, shard)
    assert base == unit_id(ckpt.model_copy(update={"uri": "moved/step_1"}), "data", {"protocol": "fixed"},
                           Shard("test", "easy", 0, 16))
    others = [
        unit_id(ckpt.model_copy(update={"version": "v2"}), "data", {"protocol": "fixed"}, shard),
        unit_id(ckpt.model_copy(update={"name": "b"}), "data", {"protocol": "fixed"}, shard),
        unit_id(ckpt, "data2", {"protocol": "fixed"}, shard),
        unit_id(ckpt, "data", {"protocol": "adaptive"}, shard),
        unit_id(ckpt, "data", {"protocol": "fixed"}, Shard("test", "easy", 16, 32)),
        unit_id(ckpt, "data", {"protocol": "fixed"}, shard, samples=True),  # predictions stored with inputs/labels
    ]
    assert base not in others and len(set(others)) == 6


def test_units_pair_every_checkpoint_with_every_shard_checkpoint_by_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "run", steps=(1, 2), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    config = run_config([{"run": str(tmp_path / "run")}], data, str(tmp_path / "out"))
    dataset, refs = preflight(config)
    shards = plan_shards(dataset, "test", ["easy", "hard"], 16, 8)
    units = plan_units(refs, shards, dataset.content_hash(), config.eval_identity())
    assert [(u.checkpoint, u.shard) for u in units] == [(r.name, s) for r in refs for s in shards]
    assert len({u.id for u in units}) == len(units)


@pytest.mark.parametrize("fmt", ["parquet", "reference"])
def test_a_set_without_examples_is_refused_before_planning(tmp_path, fmt):
    data = make_dataset(tmp_path / "data", {"all": 0}, format=fmt)
    make_checkpoint(tmp_path / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    with pytest.raises(InputError) as err:
        preflight(run_config([{"run": str(tmp_path / "run")}], data, str(tmp_path / "out")))
    assert str(err.value) == ("preflight found 1 problem(s):\n"
                              f"  {data}: split 'test' set(s) all hold no examples; there is nothing to evaluate")



def test_a_limit_plans_the_first_n_examples_of_each_set_only(tmp_path):
    dataset = open_dataset(make_dataset(tmp_path / "data", {"easy": 40, "hard": 7}))
    shards = plan_shards(dataset, "test", ["easy", "hard"], shard_size=8, batch_size=8, limit=12)
    assert shards == [Shard("test", "easy", 0, 8), Shard("test", "easy", 8, 12), Shard("test", "hard", 0, 7)]


def test_a_seeded_sample_is_n_distinct_examples_in_dataset_order_the_same_for_a_seed_and_another_for_another():
    rows = Sample(seed=3, limit=50).rows(1000)
    assert len(set(rows.tolist())) == 50 and (np.diff(rows) > 0).all() and rows.max() < 1000
    assert rows.tolist() == Sample(seed=3, limit=50).rows(1000).tolist()
    assert rows.tolist() != Sample(seed=4, limit=50).rows(1000).tolist()
    assert rows.tolist() != list(range(50))  # not the first N
    assert Sample(seed=3, limit=50).rows(7).tolist() == list(range(7))  # a set smaller than N: all of it


def test_a_sampled_shard_reads_exactly_its_sampled_examples_window_by_window(tmp_path, monkeypatch):
    dataset = open_dataset(make_dataset(tmp_path / "data", {"all": 300}))
    monkeypatch.setattr(plan, "SAMPLE_READ_TOKENS", 40 * SEQ_LEN)  # windows of 40 examples
    ranges = []
    examples = dataset.examples
    monkeypatch.setattr(dataset, "examples", lambda *a: ranges.append(a[2:]) or examples(*a))
    sample = Sample(seed=1, limit=60)
    batch = read_examples(dataset, Shard("test", "all", 10, 50), sample)
    expected = sample.rows(300)[10:50]
    assert batch.example_id.tolist() == expected.tolist()
    whole = examples("test", "all", 0, 300)
    assert (batch.inputs == whole.inputs[expected]).all() and (batch.labels == whole.labels[expected]).all()
    assert len(ranges) > 1 and all(stop - start <= 40 for start, stop in ranges)
    assert sum(stop - start for start, stop in ranges) < 300 - 100  # not the set, nor most of it


def test_a_sample_plans_the_limits_positions_and_another_seed_or_size_makes_other_units(tmp_path):
    dataset = open_dataset(make_dataset(tmp_path / "data", {"all": 40}))
    ref = CheckpointRef(name="run-step_1", uri="run/step_1", config_uri="run/all_config.yaml", step=1)
    shards = plan_shards(dataset, "test", ["all"], shard_size=8, batch_size=8, limit=12)

    def units(sample):
        return plan_units([ref], shards, "hash", {"protocol": "fixed"}, sample=sample)

    first, sampled = units(None), units(Sample(seed=1, limit=12))
    assert [u.shard for u in sampled] == shards and sum(u.examples for u in sampled) == 12
    assert all(u.sample == Sample(seed=1, limit=12) for u in sampled) and all(u.sample is None for u in first)
    ids = [{u.id for u in units(sample)} for sample in (None, Sample(seed=1, limit=12), Sample(seed=2, limit=12),
                                                          Sample(seed=1, limit=13))]
    assert all(not a & b for i, a in enumerate(ids) for b in ids[i + 1:])  # no unit shared by two of them
