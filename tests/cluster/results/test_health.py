"""Checkpoint health of a run, measured in stretches of training runs by Ray tasks."""

from types import SimpleNamespace

import pytest

from hrm import storage

from cluster.manifest import CheckpointEntry
from cluster.results import health
from cluster.results.health import collect_health

from tests.factories import make_checkpoint


def manifest_of(paths, cache_dir):
    """What collect_health reads of a manifest: the checkpoints as planned, and the cache."""
    entries = [CheckpointEntry(name=p.name, uri=str(p), config_uri=str(p.parent / "all_config.yaml"), step=step,
                               family="hrm", version=storage.version(str(p)), units=1, examples=1, loads=1)
               for step, p in paths]
    return SimpleNamespace(checkpoints=entries, config=SimpleNamespace(cluster=SimpleNamespace(
        checkpoint_cache_dir=str(cache_dir))))


@pytest.mark.ray
def test_stretches_measured_on_ray_tasks_give_the_health_of_one_pass_over_the_run(tmp_path, ray_runtime,
                                                                                  monkeypatch):
    steps = (1, 2, 3, 4, 5)
    paths = list(zip(steps, make_checkpoint(tmp_path / "sweep", steps=steps)))
    manifest = manifest_of(paths, tmp_path / "cache")
    whole = health.measure_stretch(manifest.checkpoints, None)
    monkeypatch.setattr(health, "HEALTH_STRETCH", 2)  # stretches 1-3, 3-5: they share step 3
    measured = collect_health(manifest)
    assert measured == {"checkpoints": whole["checkpoints"], "drift": whole["drift"]}
    assert [(d["from"], d["to"]) for d in measured["drift"]] == [(f"step_{a}", f"step_{b}")
                                                                 for a, b in zip(steps, steps[1:])]
