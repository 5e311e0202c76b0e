"""Small models, checkpoints and datasets made by the tests themselves."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm.checkpoint.loading import ARCH_NAMES, ArchSpec, save_checkpoint
from hrm.data.schema import DatasetSizes
from hrm.model.models import build_model
from hrm.puzzles.sudoku_generator import SudokuPuzzle

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # reference material beside the checkout: conformance vectors, data
CONFORMANCE = SHARED / "conformance"

TINY_SIZES = DatasetSizes(vocab_size=11, seq_len=16, num_puzzle_identifiers=3)  # make_checkpoint's defaults

TINY_ARCH: dict[str, Any] = dict(
    hidden_size=32, num_heads=2, expansion=2, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2,
    halt_max_steps=4, halt_exploration_prob=0.1, puzzle_emb_ndim=32, pos_encodings="rope",
    forward_dtype="float32",
)


def tiny_arch(family: str = "hrm", **overrides: Any) -> dict[str, Any]:
    arch = {**TINY_ARCH, "name": ARCH_NAMES[family],
            "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}}
    if family == "trm":
        arch.update(H_layers=0, puzzle_emb_len=2, mlp_t=False, no_ACT_continue=True)
    arch.update(overrides)
    return arch


def make_checkpoint(
    run_dir: Path, family: str = "hrm", *, vocab_size: int = 11, seq_len: int = 16, num_puzzle_identifiers: int = 3,
    steps: tuple[int, ...] = (10,), seed: int = 0, compiled_prefix: bool = False, q_scale: float = 0.0, q_halt_bias: float = 0.0,
    **arch_overrides: Any,
) -> list[Path]:
    """A run directory in the reference layout with random weights, one step_N per `steps`.
    `q_scale` > 0 gives the q-head random weights, so halting logits vary by example and step;
    `q_halt_bias` shifts q_halt (negative: halt later)."""
    arch = tiny_arch(family, **arch_overrides)
    spec = ArchSpec(family=family, loss_type=arch["loss"]["loss_type"], arch=arch, source=str(run_dir))
    config = spec.model_config(DatasetSizes(vocab_size=vocab_size, seq_len=seq_len, num_puzzle_identifiers=num_puzzle_identifiers))
    paths = []
    for i, step in enumerate(steps):
        torch.manual_seed(seed + i)
        model = build_model(config)
        with torch.no_grad():
            if config.puzzle_emb_ndim:
                model.puzzle_emb.weights.normal_()
            if q_scale:
                model.q_head.weight.normal_(std=q_scale)
                model.q_head.bias.copy_(torch.tensor([q_halt_bias, 0.0]))
        paths.append(save_checkpoint(model, run_dir, step, spec, {"seed": seed}, compiled_prefix=compiled_prefix))
    return paths


def random_examples(n: int, *, vocab_size: int = 11, seq_len: int = 16, num_ids: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(1, vocab_size, size=(n, seq_len)).astype(np.int32)
    labels = rng.integers(1, vocab_size, size=(n, seq_len)).astype(np.int32)
    labels[:, :2] = 0  # some ignored positions (ignore_label_id 0, as the reference builders use)
    identifiers = rng.integers(1, num_ids, size=n).astype(np.int32)
    return inputs, labels, identifiers


def convert_cli(kind: str):
    """(convert, refused) for `hrm-eval convert KIND`: the first expects success and returns the
    JSON summary, the second expects exit 2 and returns stderr."""
    from jobs.cli import main

    def convert(capsys, *argv: object) -> dict:
        assert main(["convert", kind, *map(str, argv), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    def refused(capsys, *argv: object) -> str:
        assert main(["convert", kind, *map(str, argv)]) == 2
        return capsys.readouterr().err

    return convert, refused


def write_sudoku_csv(path: Path, puzzles: Iterable[SudokuPuzzle], source: str = "generated") -> int:
    """Write the `source,question,answer,rating` CSV the `sudoku-csv` converter reads (the
    layout of the published Sudoku-Extreme CSVs)."""
    written = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "question", "answer", "rating"])
        for puzzle in puzzles:
            writer.writerow([source, puzzle.question_string(), puzzle.answer_string(), puzzle.rating])
            written += 1
    return written


# --------------------------------------------------------------------------- a text HRM that restates its prompt

# An HRM predicts every position of its output at once, from the whole input: "restate the
# program in the prompt" is, position by position, the identity on bytes, which a tiny model
# learns in seconds. A prompt carrying a task's reference then passes its checks, and one carrying
# a deliberately broken program fails them with the status the breakage was made to give, so
# the checkers see real model output with a pass/fail mix the design fixes, not float luck.
RESTATE_SEQ_LEN = 128  # bytes + eos; the tasks below were picked to fit

# Python tasks of tasks/python.jsonl: None, the prompt is the reference; else a one-place edit
# (old, new) of the reference and the status the edited program gets.
RESTATED_PYTHON: dict[str, tuple[tuple[str, str], str] | None] = {
    "easy/digit-sum": None,
    "easy/reverse-words": None,
    "easy/clamp": None,
    "easy/leap-year": None,
    "medium/transpose": None,
    "easy/count-vowels": (("sum(1 ", "sum(2 "), "failed"),  # counts every vowel twice
    "medium/run-length": (("len(list(run))", "len(run)"), "runtime_error"),  # a groupby run has no len()
    "easy/temperature-table": (("hi + 1):", "hi + 1)"), "syntax_error"),  # the for loop's colon
    "easy/running-sum": (("from ", "import no_such_module\nfrom "), "compile_error"),  # its top level fails
}
# Tool-chain tasks of tasks/tool_chains.jsonl, given as compact JSON calls (one per line): None,
# the whole reference chain; else (which calls, tool renamed to, status).
RESTATED_CHAINS: dict[str, tuple[slice, str | None, str] | None] = {
    "git-init-empty-develop": None,
    "git-init-feature-branch": (slice(0, 1), "git_int", "invalid_call"),  # a tool the set does not have
    "deploy-staging-replicas": (slice(-1, None), None, "execution_failed"),  # deploys an image never built
    "git-feature-merge-tag": (slice(0, 1), None, "wrong_end_state"),  # stops after its first call
}

# Measured on 2 shared cores: softmax cross-entropy at lr 3e-3 restated all 13 prompts exactly
# by step 200 at each of seeds 0-5 (10-14 s, one thread). At lr 1e-2 (on 256-byte sequences),
# stablemax was at lm loss 0.62 after 150 steps where softmax was at 0.004; lr 5e-3 restated
# everything sooner but then lost it again at 2 of 4 seeds.
RESTATE_STEPS, RESTATE_EARLY_STEP = 200, 50


def write_restating_tasks(directory: Path) -> dict[str, str]:
    """train.jsonl (plain prompt/completion records) and test.jsonl (the same records as tasks
    of the repository's task set) in `directory`, for `hrm-eval convert jsonl`; every completion
    is its prompt. Returns each task's status once the model restates its prompt exactly."""
    tasks = {task["task_id"]: task for name in ("python.jsonl", "tool_chains.jsonl")
             for task in map(json.loads, (REPO / "tasks" / name).read_text().splitlines())}
    records, statuses = [], {}
    for task_id, edit in RESTATED_PYTHON.items():
        program = tasks[task_id]["reference"]
        if edit is not None:
            (old, new), _ = edit
            assert old in program, f"{task_id}: the edit's target {old!r} is not in the reference"
            program = program.replace(old, new, 1)
        records.append({**tasks[task_id], "prompt": program, "completion": program})
        statuses[task_id] = "passed" if edit is None else edit[1]
    for task_id, edit in RESTATED_CHAINS.items():
        calls = [json.loads(line) for line in tasks[task_id]["reference"].splitlines() if line.strip()]
        if edit is not None:
            which, renamed, _ = edit
            calls = [{**call, "tool": renamed or call["tool"]} for call in calls[which]]
        chain = "".join(json.dumps(call, separators=(",", ":")) + "\n" for call in calls)
        records.append({**tasks[task_id], "prompt": chain, "completion": chain})
        statuses[task_id] = "passed" if edit is None else edit[2]
    too_long = [r["task_id"] for r in records if len(r["prompt"].encode()) + 1 > RESTATE_SEQ_LEN]
    assert not too_long, f"longer than {RESTATE_SEQ_LEN} bytes with eos: {too_long}"
    # Train on exactly what is tested: the point is real model output for the checkers, not
    # generalisation. The train records carry no "kind" (a task_id may be given once per dataset).
    (directory / "train.jsonl").write_text("".join(
        json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in records))
    (directory / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return statuses


def train_restating_hrm(dataset: str | Path, out_dir: Path) -> list[Path]:
    """A tiny HRM trained (CPU, one thread, fixed seed) on the train split of a byte-level
    dataset of `write_restating_tasks`, checkpoints every RESTATE_EARLY_STEP steps up to
    RESTATE_STEPS."""
    from hrm.data.reader import open_dataset
    from hrm.model.models import ModelConfig
    from hrm.train import TrainConfig, train

    data = open_dataset(dataset)
    meta = data.metadata("train")
    model = ModelConfig(
        family="hrm", vocab_size=meta.vocab_size, seq_len=meta.seq_len,
        num_puzzle_identifiers=meta.num_puzzle_identifiers,
        hidden_size=64, num_heads=2, expansion=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1,
        halt_max_steps=2, halt_exploration_prob=0.1, puzzle_emb_ndim=0, pos_encodings="rope", forward_dtype="float32",
    )
    examples = sum(data.num_examples("train", name) for name in data.sets("train"))
    # One batch holds every example; no EMA, whose lag would hide the weights of so short a run.
    config = TrainConfig(model=model, loss_type="softmax_cross_entropy", global_batch_size=examples,
                         lr=3e-3, lr_warmup_steps=20, ema=False, seed=0)
    return train(config, data, out_dir, steps=RESTATE_STEPS, checkpoint_every=RESTATE_EARLY_STEP, threads=1)
