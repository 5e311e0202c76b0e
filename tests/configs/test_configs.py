"""The run configs in configs/: each parses and validates, names plausible paths or well-formed
s3:// URIs, documents how to make its data and run it, and passes preflight against a small
fake of the paths it names (tiny checkpoints and a tiny dataset where the config expects the
real ones: preflight checks layout, discovery and shapes, not the size of the model)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest

from hrm import storage
from hrm.data.reader import open_dataset
from hrm.puzzles.sudoku_generator import write_demo_sudoku

from cluster.config import CheckpointSource, RunConfig, load_run_config
from cluster.plan import prepare, source_checkpoints

from jobs.cli import main as cli_main

from tests.cluster_factories import make_dataset
from tests.factories import REPO, make_checkpoint

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
# The benchmark configs (quickstart.yaml is the demo's and documented by it).
BENCHMARKS = ["sudoku-extreme", "maze-hard", "arc-1", "arc-2", "sweep-300-s3"]
# The layout each local config's header says its data is made in.
REFERENCE_LAYOUT = {"sudoku-extreme", "maze-hard"}
S3_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
TINY_STEPS = (10, 20, 30)  # three: enough for quickstart's top-3 ensemble


def config_path(name: str) -> Path:
    return REPO / "configs" / f"{name}.yaml"


def local_configs() -> list[Path]:
    return [p for p in CONFIGS if not is_s3_config(load_run_config(p))]


def uris(config: RunConfig) -> list[str]:
    """Every storage location a config names."""
    found = [config.dataset.uri, config.output.uri]
    for source in config.checkpoints:
        found += [u for u in (source.path, source.run, source.config) if u is not None]
    if config.cluster.checkpoint_cache_dir is not None:
        found.append(config.cluster.checkpoint_cache_dir)
    return found


def is_s3_config(config: RunConfig) -> bool:
    return any(u.startswith("s3://") for u in uris(config))


def header(path: Path) -> str:
    """The leading comment block, '#' stripped and backslash continuations joined."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines).replace("\\\n", " ")


def convert_commands(name: str) -> list[str]:
    return [line[line.index("hrm-eval convert"):] for line in header(config_path(name)).splitlines()
            if "hrm-eval convert" in line]


# --------------------------------------------------------------------------- parsing, paths


def test_every_benchmark_config_the_issue_asks_for_is_in_configs():
    assert {p.stem for p in CONFIGS} >= set(BENCHMARKS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_parses_and_validates(path):
    config = load_run_config(path)
    assert config.checkpoints and config.dataset.uri


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_path_is_relative_and_inside_the_run_directory_or_a_well_formed_s3_uri(path):
    for uri in uris(load_run_config(path)):
        if "://" in uri:
            scheme, _, rest = uri.partition("://")
            bucket, _, key = rest.partition("/")
            assert scheme == "s3", uri
            assert S3_BUCKET_NAME.match(bucket), f"{uri}: not a valid bucket name"
            assert key and "//" not in key and not key.endswith("/"), f"{uri}: needs a clean key prefix"
        else:
            parts = PurePosixPath(uri).parts
            assert not PurePosixPath(uri).is_absolute() and ".." not in parts and "~" not in uri, uri
            assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in parts), f"{uri}: odd characters"


@pytest.mark.parametrize("name", ["sudoku-extreme", "maze-hard", "arc-1", "arc-2", "sweep-300-s3"])
def test_benchmark_configs_evaluate_on_gpu_actors_with_the_reference_protocol(name):
    config = load_run_config(config_path(name))
    assert config.eval.protocol == "fixed"
    assert config.device == "cuda" and config.cluster.gpus_per_actor >= 1
    # Shards are whole batches, so no unit ends in a padded batch but the last of a set.
    assert config.cluster.shard_size % config.eval.batch_size == 0


@pytest.mark.parametrize("name", ["arc-1", "arc-2"])
def test_arc_configs_vote_over_augmentations_with_pass_k_up_to_1000_and_a_submission(name):
    voting = load_run_config(config_path(name)).voting
    assert voting.enabled and voting.submission
    assert voting.pass_k[:2] == [1, 2] and voting.pass_k[-1] == 1000


def test_the_sweep_reads_and_writes_s3_with_step_filters_and_a_growing_gpu_actor_pool():
    config = load_run_config(config_path("sweep-300-s3"))
    (source,) = config.checkpoints
    assert source.run.startswith("s3://") and source.run.split("/")[-2] == "checkpoints"
    assert config.dataset.uri.startswith("s3://") and config.output.uri.startswith("s3://")
    assert source.glob and source.min_step is not None and source.last == 300
    low, high = config.cluster.actor_range
    assert low < high


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_header_says_how_to_run_the_config_embedded_and_with_ray_job_submit(name):
    text = header(config_path(name))
    assert f"hrm-eval run configs/{name}.yaml" in text
    assert re.search(rf"ray job submit --address \S+ --working-dir \. +-- +"
                     rf"python -m jobs\.evaluate --config configs/{re.escape(name)}\.yaml", text)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_header_has_a_convert_command_that_parses_and_writes_the_configs_dataset(name):
    """The documented `hrm-eval convert …` lines are accepted by the real argument parser, and
    (where one is the only way shown) writes exactly the dataset the config reads."""
    import jobs.convert

    config = load_run_config(config_path(name))
    commands = convert_commands(name)
    assert commands, "the header must say how to make the data"
    for command in commands:
        parser = argparse.ArgumentParser(prog="hrm-eval convert")
        jobs.convert.configure(parser)
        args = parser.parse_args(shlex.split(command)[2:])
        assert args.output == config.dataset.uri
        assert args.format == ("reference" if name in REFERENCE_LAYOUT else "parquet")
        if name.startswith("arc-"):
            assert args.augment == 1000


# --------------------------------------------------------------------------- preflight


def fake_tree(config: RunConfig, root: str, name: str, scratch: Path) -> None:
    """A tiny dataset and tiny checkpoints shaped for it where the config says: relative paths
    below `root` (the directory the job runs from), s3:// URIs as they are."""
    data = under(root, config.dataset.uri)
    if name.startswith("arc-"):
        make_arc_dataset(name, root, scratch)
    elif name == "quickstart":  # its TTA transforms need the demo's 4×4 Sudoku encoding
        write_demo_sudoku(data, train_size=8, test_size=8)
    else:
        make_dataset(data, format="reference" if name in REFERENCE_LAYOUT else "parquet")
    meta = open_dataset(data).metadata(config.dataset.split)
    sizes = dict(vocab_size=meta.vocab_size, seq_len=meta.seq_len, num_puzzle_identifiers=meta.num_puzzle_identifiers)
    for source in config.checkpoints:
        fake_run(under(root, source.path or source.run), steps_for(source), scratch, sizes)


def under(root: str, uri: str) -> str:
    return uri if "://" in uri else storage.join(root, uri)


def make_arc_dataset(name: str, root: str, scratch: Path) -> None:
    """The header's own `hrm-eval convert arc` command, run on one tiny puzzle per subset it
    names, with 2 augmentations instead of 1000: voting needs what the converter writes
    (identifiers.json, test_puzzles.json)."""
    (command,) = convert_commands(name)
    argv = shlex.split(command)[1:]
    argv[argv.index("--augment") + 1] = "2"
    prefix = Path(root) / argv[2]
    prefix.parent.mkdir(parents=True)
    subsets = argv[argv.index("--subsets") + 1].split(",")
    for i, subset in enumerate(subsets):
        grid = [[i % 10, 1], [2, 3]]
        puzzle = {"train": [{"input": grid, "output": grid[::-1]}], "test": [{"input": grid}]}
        Path(f"{prefix}_{subset}_challenges.json").write_text(json.dumps({f"{subset}-0": puzzle}))
        Path(f"{prefix}_{subset}_solutions.json").write_text(json.dumps({f"{subset}-0": [grid[::-1]]}))
    with contextlib.chdir(root):
        assert cli_main(argv) == 0


def steps_for(source: CheckpointSource) -> tuple[int, ...]:
    if source.min_step is None:
        return TINY_STEPS
    # A run saving every 1000 steps, some before min_step: the filter must drop those.
    return tuple(range(source.min_step - 2000, source.min_step + 4000, 1000))


def fake_run(run: str, steps: tuple[int, ...], scratch: Path, sizes: dict[str, int]) -> None:
    if not run.startswith("s3://"):
        make_checkpoint(Path(run), steps=steps, **sizes)
        return
    # One tiny checkpoint uploaded under every step's name: preflight loads each selected one.
    (weights,) = make_checkpoint(scratch, steps=(steps[0],), **sizes)
    storage.write_bytes_atomic(storage.join(run, "all_config.yaml"), (scratch / "all_config.yaml").read_bytes())
    for step in steps:
        storage.write_bytes_atomic(storage.join(run, f"step_{step}"), weights.read_bytes())


@pytest.mark.parametrize("path", local_configs(), ids=lambda p: p.stem)
def test_preflight_accepts_each_local_config_run_from_a_directory_holding_its_paths(path, tmp_path, monkeypatch):
    config = load_run_config(path)
    fake_tree(config, str(tmp_path), path.stem, tmp_path / "scratch")
    monkeypatch.chdir(tmp_path)  # the configs' paths are relative to where the job runs

    prepared = prepare(config)

    for source in config.checkpoints:
        expected = [TINY_STEPS[-1]] if source.path else list(TINY_STEPS)  # a run directory → newest step
        assert [r.step for r in source_checkpoints(source)] == expected
    assert prepared.units and all(ref.version for ref in prepared.checkpoints)


@pytest.mark.s3
def test_preflight_accepts_the_s3_sweep_against_a_loopback_s3_server(s3_bucket, tmp_path):
    text = config_path("sweep-300-s3").read_text().replace("s3://my-bucket", s3_bucket)
    (tmp_path / "sweep.yaml").write_text(text)
    config = load_run_config(tmp_path / "sweep.yaml", [f"cluster.checkpoint_cache_dir={tmp_path / 'cache'}"])
    fake_tree(config, str(tmp_path), "sweep-300-s3", tmp_path / "scratch")

    prepared = prepare(config)

    (source,) = config.checkpoints
    steps = [ref.step for ref in prepared.checkpoints]
    assert steps and min(steps) >= source.min_step
    assert steps[-1] == max(steps_for(source))  # every Nth counts back from the newest, which is kept
    assert all(b - a == 1000 * source.every for a, b in zip(steps, steps[1:]))
    assert prepared.run.startswith(f"{s3_bucket}/")


def test_the_sweeps_filters_select_300_checkpoints_from_a_long_run(tmp_path):
    """Discovery reads names only: a run saving every 1000 steps for 700k steps, as empty files."""
    (source,) = load_run_config(config_path("sweep-300-s3")).checkpoints
    run = tmp_path / "run"
    run.mkdir()
    for step in range(1000, 700_001, 1000):
        (run / f"step_{step}").write_bytes(b"")
    local = source.model_copy(update={"run": str(run)})
    steps = [ref.step for ref in source_checkpoints(local)]
    assert len(steps) == 300 and steps[-1] == 700_000 and steps[0] >= source.min_step
