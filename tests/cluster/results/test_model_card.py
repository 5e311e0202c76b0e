from pathlib import Path

import pytest
import torch
import yaml

from hrm.errors import InputError

from cluster.plan import prepare
from cluster.results.metrics import read_leaderboard, read_metrics

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset, run_config, run_in_process
from tests.factories import make_checkpoint

QUOTED = [{"system": "Some LLM", "figure": "pass@1 on a code benchmark", "value": "41.2%",
           "source": "its technical report, table 3"}]


def with_quoted(config, path: Path):
    return config.model_copy(update={"output": config.output.model_copy(update={"quoted_figures": str(path)})})


@pytest.fixture(scope="module")
def carded(tmp_path_factory) -> tuple[str, list]:
    root = tmp_path_factory.mktemp("card")
    data = make_dataset(root / "data")
    paths = make_checkpoint(root / "sweep", steps=(1, 2), vocab_size=VOCAB, seq_len=SEQ_LEN,
                            num_puzzle_identifiers=NUM_IDS)
    (root / "quoted.yaml").write_text(yaml.safe_dump(QUOTED))
    config = with_quoted(run_config([{"run": str(root / "sweep")}], data, str(root / "out")), root / "quoted.yaml")
    return run_in_process(config).run, paths


def test_the_best_checkpoint_gets_a_card_of_figures_measured_in_the_run(carded):
    run, paths = carded
    metrics = read_metrics(run)
    card = metrics["model_card"]
    best = card["checkpoint"]
    assert best == read_leaderboard(run).column("checkpoint")[0].as_py()  # the run's best
    path = next(p for p in paths if best.endswith(p.name))
    assert card["parameters"] == sum(t.numel() for t in torch.load(path, weights_only=True).values())
    assert card["exact_accuracy"] == metrics["checkpoints"][best]["metrics"]["all"]["exact_accuracy"]
    one, full = card["latency"]["batch_1"], card["latency"]["batch_8"]  # the run's batch size is 8
    assert one["examples"] == 1 and full["examples"] == 8 and one["calls"] >= 3 and full["calls"] >= 3
    assert 0 < one["p50_s"] <= one["p95_s"] and 0 < full["p50_s"] <= full["p95_s"]
    assert card["examples_per_s"] > 0 and card["peak_rss_bytes"] > 0 and card["pass_at_1"] is None


def test_quoted_figures_are_shown_apart_with_their_source_and_labelled_quoted(carded):
    report = (Path(carded[0]) / "report.md").read_text()
    card = report.split("## Model card", 1)[1].split("\n## ", 1)[0]
    measured, quoted = card.split("Quoted, not measured", 1)
    assert "41.2%" not in measured and "| Some LLM | pass@1 on a code benchmark | 41.2% | its technical report, table 3 |" in quoted


def test_a_quoted_figure_without_its_source_is_refused_before_the_run(tmp_path):
    (tmp_path / "quoted.yaml").write_text(yaml.safe_dump([{"system": "X", "figure": "pass@1", "value": "90%"}]))
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "sweep", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    config = with_quoted(run_config([{"run": str(tmp_path / "sweep")}], data, str(tmp_path / "out")),
                         tmp_path / "quoted.yaml")
    with pytest.raises(InputError, match=r"quoted.yaml: 0.source: Field required"):
        prepare(config)
