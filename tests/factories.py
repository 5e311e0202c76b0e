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
