"""Bad input through the command line, as a user meets it (docs/errors.md): for each kind,
the exact line `hrm-eval CMD: error: …` that names the file and the field (preflight: its
count, then one line per problem), exit status 2, and nothing published where the command
would write.

Each case damages its own copy of one small, valid setup (a checkpoint run directory, a
Parquet dataset and a run config that would evaluate them) and gives the argv to run. The
converters' bad input is in tests/hrm/puzzles and tests/hrm/data, next to their formats."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset
from tests.factories import make_checkpoint


@dataclass
class Setup:
    """A valid evaluation in `root`: the argv of each command still has to be built."""

    root: Path
    run: Path  # checkpoint run directory: all_config.yaml, step_10
    data: Path  # Parquet dataset, sets easy and hard
    output: Path  # where a command would publish; must not exist afterwards

    @property
    def step(self) -> Path:
        return self.run / "step_10"

    @property
    def config(self) -> Path:
        return self.run / "all_config.yaml"

    def evaluate(self, *flags: object, checkpoint: object = None, data: object = None) -> list[str]:
        return ["evaluate", "--checkpoint", str(checkpoint or self.run), "--data", str(data or self.data),
                "--output", str(self.output), *map(str, flags)]

    def run_config(self, change: Callable[[dict], object] = lambda doc: None, text: str | None = None) -> Path:
        doc = {"checkpoints": [{"run": str(self.run)}], "dataset": {"uri": str(self.data)},
               "eval": {"batch_size": 8}, "output": {"uri": str(self.output)}}
        change(doc)
        path = self.root / "run.yaml"
        path.write_text(yaml.safe_dump(doc) if text is None else text)
        return path

    def edit_config(self, old: str, new: str) -> None:
        self.config.write_text(self.config.read_text().replace(old, new, 1))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    make_checkpoint(root / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    make_dataset(root / "data")
    return root


@pytest.fixture
def setup(pristine, tmp_path) -> Setup:
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    return Setup(tmp_path, tmp_path / "run", tmp_path / "data", tmp_path / "out")


class Payload:
    """Unpickling it would run code."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def replace_dataset_json(s: Setup, text: str) -> None:
    (s.data / "dataset.json").write_text(text)


# (what is wrong, how to make it so and the argv, the expected line after "hrm-eval CMD: error: ";
#  "{root}" stands for the setup's directory, a trailing "…" for the rest of a longer line)
CASES: dict[str, tuple[Callable[[Setup], list[str]], str]] = {
    # --- checkpoints (evaluate, inspect)
    "checkpoint path missing": (
        lambda s: s.evaluate(checkpoint=s.root / "nowhere"),
        "{root}/nowhere: no such checkpoint file, and no step_<N> files below it"),
    "run directory without step files": (
        lambda s: (s.step.unlink(), s.evaluate())[1],
        "{root}/run: no such checkpoint file, and no step_<N> files below it"),
    "checkpoint of random bytes": (
        lambda s: (s.step.write_bytes(bytes(range(256)) * 4), s.evaluate())[1],
        "{root}/run/step_10: refused to load: it is not a plain tensor checkpoint (Unsupported operand 0)"),
    "checkpoint cut short": (
        lambda s: (s.step.write_bytes(s.step.read_bytes()[:2000]), s.evaluate())[1],
        "{root}/run/step_10: not a torch checkpoint file (PytorchStreamReader failed reading zip archive: …"),
    "checkpoint holding a list": (
        lambda s: (torch.save([1, 2], s.step), s.evaluate())[1],
        "{root}/run/step_10: expected a state dict (name → tensor), got list"),
    "checkpoint holding one tensor": (
        lambda s: (torch.save(torch.zeros(3), s.step), s.evaluate())[1],
        "{root}/run/step_10: expected a state dict (name → tensor), got Tensor"),
    "checkpoint whose pickle runs code": (
        lambda s: (torch.save({"w": Payload()}, s.step), s.evaluate())[1],
        "{root}/run/step_10: refused to load: it is not a plain tensor checkpoint (Trying to load unsupported "
        "GLOBAL posix.system whose module posix is blocked)"),
    "inspect of a 0-byte checkpoint": (
        lambda s: (s.step.write_bytes(b""), ["inspect", str(s.step)])[1],
        "{root}/run/step_10: empty file (0 bytes), not a torch checkpoint"),
    "no all_config.yaml beside the checkpoint": (
        lambda s: (s.config.unlink(), s.evaluate())[1],
        "{root}/run/all_config.yaml: missing (a checkpoint needs all_config.yaml beside it, or --config)"),
    "--config naming no file": (
        lambda s: s.evaluate("--config", s.root / "other.yaml"),
        "{root}/other.yaml: missing (a checkpoint needs all_config.yaml beside it, or --config)"),
    "all_config.yaml not YAML": (
        lambda s: (s.config.write_text("arch: [unclosed\n"), s.evaluate())[1],
        "{root}/run/all_config.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    "all_config.yaml a list": (
        lambda s: (s.config.write_text("- arch\n"), s.evaluate())[1],
        "{root}/run/all_config.yaml: key 'arch' is missing or not a mapping"),
    "all_config.yaml without arch": (
        lambda s: (s.config.write_text("lr: 0.0001\n"), s.evaluate())[1],
        "{root}/run/all_config.yaml: key 'arch' is missing or not a mapping"),
    "an architecture we do not know": (
        lambda s: (s.edit_config("name: hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", "name: gpt2@GPT"),
                   s.evaluate())[1],
        "{root}/run/all_config.yaml: arch.name 'gpt2@GPT' is not a supported architecture (known: …"),
    "a size that is not a number": (
        lambda s: (s.edit_config("hidden_size: 32", "hidden_size: wide"), s.evaluate())[1],
        "{root}/run/all_config.yaml: arch.hidden_size: Input should be a valid integer, unable to parse string as "
        "an integer"),
    "a negative size": (
        lambda s: (s.edit_config("hidden_size: 32", "hidden_size: -32"), s.evaluate())[1],
        "{root}/run/all_config.yaml: arch.hidden_size: Input should be greater than or equal to 1"),
    "a config that does not match the tensors": (
        lambda s: (s.edit_config("num_heads: 2", "num_heads: 3"), s.evaluate())[1],
        "{root}/run/step_10: tensor 'H_level.layers.0.self_attn.qkv_proj.weight' has shape (96, 32), the config "
        "and dataset give (90, 32)"),
    "a checkpoint trained on another vocabulary": (
        lambda s: (make_checkpoint(s.root / "wide", vocab_size=VOCAB + 3, seq_len=SEQ_LEN,
                                   num_puzzle_identifiers=NUM_IDS), s.evaluate(checkpoint=s.root / "wide"))[1],
        "{root}/wide/step_10: tensor 'embed_tokens.embedding_weight' has shape (14, 32) but {root}/data has "
        "vocab_size=11: the checkpoint was trained on a different dataset"),
    # --- datasets (evaluate)
    "dataset path missing": (
        lambda s: s.evaluate(data=s.root / "nodata"),
        "{root}/nodata: not a dataset: no dataset.json (our layout) and no <split>/dataset.json (reference layout)"),
    "a file given as the dataset": (
        lambda s: s.evaluate(data=s.config),
        "{root}/run/all_config.yaml: a file, not a dataset: give the directory that holds dataset.json (our "
        "layout) or <split>/dataset.json (reference layout)"),
    "dataset.json not JSON": (
        lambda s: (replace_dataset_json(s, "{splits"), s.evaluate())[1],
        "{root}/data/dataset.json: not valid JSON: line 1 column 2: Expecting property name enclosed in double "
        "quotes"),
    "dataset.json a list": (
        lambda s: (replace_dataset_json(s, "[]"), s.evaluate())[1],
        "{root}/data/dataset.json: (top level): Input should be a valid dictionary or instance of ParquetIndex"),
    "dataset.json of a future version": (
        lambda s: (replace_dataset_json(s, (s.data / "dataset.json").read_text().replace('"version": 1',
                                                                                        '"version": 9')),
                   s.evaluate())[1],
        "{root}/data/dataset.json: version: Input should be 1"),
    "a part that is not Parquet": (
        lambda s: ((s.data / "test" / "part-00000.parquet").write_bytes(b"PAR1 not really"), s.evaluate())[1],
        "{root}/data/test/part-00000.parquet: not a readable Parquet file (Parquet magic bytes not found in "
        "footer. Either the file is corrupted or this is not a parquet file.)"),
    "--sets naming a set the split lacks": (
        lambda s: s.evaluate("--sets", "medium"),
        "{root}/data: split 'test' has no set(s) medium (--sets takes: easy, hard)"),
    "a set without examples": (
        lambda s: (make_dataset(s.root / "empty", {"all": 0}), s.evaluate(data=s.root / "empty"))[1],
        "{root}/empty: split 'test' set(s) all hold no examples; there is nothing to evaluate"),
    "dataset.json declaring fewer examples than its parts hold": (
        lambda s: (replace_dataset_json(s, (s.data / "dataset.json").read_text().replace('"examples": 40',
                                                                                        '"examples": 20', 1)),
                   s.evaluate())[1],
        "{root}/data/dataset.json: splits.test: set 'easy' has 20 examples but its parts hold 40"),
    "--dtype the CLI does not offer": (
        lambda s: s.evaluate("--dtype", "float16"),
        "argument --dtype: invalid choice: 'float16' (choose from 'float32', 'bfloat16')"),
    # --- run configs (run; all refused before Ray starts)
    "run config missing": (
        lambda s: ["run", str(s.root / "nope.yaml")],
        "{root}/nope.yaml: cannot read it: No such file or directory"),
    "run config not YAML": (
        lambda s: ["run", str(s.run_config(text="checkpoints: [\n"))],
        "{root}/run.yaml:2: not valid YAML: expected the node content, but found '<stream end>'"),
    "run config a list": (
        lambda s: ["run", str(s.run_config(text="- checkpoints\n"))],
        "{root}/run.yaml: a run config is a mapping of sections (checkpoints, dataset, eval, …)"),
    "run config empty": (
        lambda s: ["run", str(s.run_config(text=""))],
        "{root}/run.yaml: a run config is a mapping of sections (checkpoints, dataset, eval, …)"),
    "a misspelt section": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(evals={})))],
        "{root}/run.yaml: evals: unknown key"),
    "actors min above max": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(cluster={"actors": {"min": 3, "max": 2}})))],
        "{root}/run.yaml: cluster.actors: min 3 > max 2"),
    "no actors": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(cluster={"actors": 0})))],
        "{root}/run.yaml: cluster.actors: Input should be greater than or equal to 1"),
    "a run id with a path in it": (
        lambda s: ["run", str(s.run_config(lambda d: d["output"].update(run_id="../other")))],
        "{root}/run.yaml: output.run_id: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]*$'"),
    "--set without a value": (
        lambda s: ["run", str(s.run_config()), "--set", "eval.batch_size"],
        "--set 'eval.batch_size': expected KEY=VALUE, e.g. eval.batch_size=128"),
    "--set of a misspelt key": (
        lambda s: ["run", str(s.run_config()), "--set", "eval.batchsize=3"],
        "{root}/run.yaml: eval.batchsize: unknown key"),
    "--set of a value of the wrong type": (
        lambda s: ["run", str(s.run_config()), "--set", "eval.batch_size=many"],
        "{root}/run.yaml: eval.batch_size: Input should be a valid integer, unable to parse string as an integer"),
    "--set below a value": (
        lambda s: ["run", str(s.run_config()), "--set", "output.uri.deeper=1"],
        "--set output.uri.deeper: output.uri is a value, not a section"),
    "step filters that select no checkpoint": (
        lambda s: ["run", str(s.run_config(lambda d: d["checkpoints"][0].update(min_step=500)))],
        "preflight found 1 problem(s):\n  checkpoints.0: {root}/run: min_step 500 / max_step None select none of "
        "its 1 checkpoint(s) (steps 10..10)"),
    "no checkpoints": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(checkpoints=[])))],
        "{root}/run.yaml: checkpoints: List should have at least 1 item after validation, not 0"),
    "a checkpoint source that is both a path and a run": (
        lambda s: ["run", str(s.run_config(lambda d: d["checkpoints"][0].update(path=str(s.step))))],
        "{root}/run.yaml: checkpoints.0: give exactly one of `path` (one checkpoint) or `run` (a sweep)"),
    "an ensemble of more checkpoints than the run has": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(ensembles=[{"name": "top", "top_k": 5}])))],
        "1 problem(s) with the votes of the run config:\n  ensembles.0.top_k: 5 members, but the run has 1 checkpoints"),
    "an ensemble member that is not a checkpoint of the run": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(ensembles=[{"name": "e", "members": ["x"]}])))],
        "1 problem(s) with the votes of the run config:\n  ensembles.0.members: no checkpoint named 'x' (the run's checkpoints: "
        "run-step_10)"),
    "an ensemble name that is a path": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(ensembles=[{"name": "../../x", "top_k": 1}])))],
        "{root}/run.yaml: ensembles.0.name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]*$'"),
    "pass@0": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(voting={"pass_k": [0]})))],
        "{root}/run.yaml: voting.pass_k.0: Input should be greater than or equal to 1"),
    "ARC voting on a dataset without test puzzles": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(voting={"enabled": True})))],
        "1 problem(s) with the votes of the run config:\n  voting.enabled: ARC voting needs the dataset's test_puzzles.json, which "
        "{root}/data lacks"),
    "Sudoku TTA on boards that are not Sudoku": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(tta={"enabled": True, "transform": "sudoku"})))],
        "1 problem(s) with the votes of the run config:\n  tta.transform: sudoku needs a 4×4 Sudoku board …"),
    "more maze TTA copies than a maze has transforms": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(tta={"enabled": True, "transform": "maze",
                                                                   "copies": 9})))],
        "1 problem(s) with the votes of the run config:\n  tta.copies: a maze has 7 non-identity dihedral transforms, got 9"),
    "a split the dataset lacks": (
        lambda s: ["run", str(s.run_config(lambda d: d["dataset"].update(split="validation")))],
        "preflight found 1 problem(s):\n  {root}/data: no split 'validation' (splits: test)"),
    "work units of no examples": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(cluster={"shard_size": 0})))],
        "{root}/run.yaml: cluster.shard_size: Input should be greater than or equal to 1"),
    "actors with no CPU": (
        lambda s: ["run", str(s.run_config(lambda d: d.update(cluster={"cpus_per_actor": 0})))],
        "{root}/run.yaml: cluster.cpus_per_actor: Input should be greater than 0"),
}


@pytest.mark.parametrize("make, expected", CASES.values(), ids=CASES.keys())
def test_bad_input_gets_one_line_naming_the_file_and_field_exit_2_and_nothing_published(setup, capsys, monkeypatch,
                                                                                     make, expected):
    argv = make(setup)
    monkeypatch.chdir(setup.root)  # a payload that ran would leave its mark here
    with pytest.raises(SystemExit) as exit_:  # argparse's refusals exit; the rest return
        raise SystemExit(main(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    prefix = f"hrm-eval {argv[0]}: error: "
    assert prefix in err, err
    message = err[err.index(prefix) + len(prefix):].rstrip("\n")  # argparse prints its usage lines first
    want = expected.replace("{root}", str(setup.root))
    if want.endswith("…"):
        assert message.startswith(want[:-1]), message
    else:
        assert message == want
    assert not setup.output.exists()
    assert not (setup.root / "pwned").exists()
