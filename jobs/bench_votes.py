"""`python -m jobs.bench votes`: ARC augmentation voting and a checkpoint ensemble at ARC
aug-1000 size, to show that votes stream the stored predictions in bounded memory.

Under a fresh directory in `--tmp`: a synthetic ARC-shaped dataset of `--puzzles` puzzles,
each with one test input, in 1 + `--augment` versions (400 × 1000 = 400,000 examples of 900
tokens by default), written by the project's dataset writer with identifiers.json and
test_puzzles.json as the ARC converter makes them; then `--members` checkpoints' predictions,
stored exactly as a run stores them: one part per shard of the run's plan (`--shard-size`),
under predictions/checkpoint=<name>/. A member predicts, per example, the augmented answer,
one of a few wrong answers of its puzzle, or a grid of its own (a distinct candidate), so the
votes have real candidates to rank.

Each vote then runs in a fresh Python process (`python -m jobs.bench_votes`), through
`cluster.results.votes.apply_votes` as a run calls it: ARC voting of the first checkpoint
(pass@k and submission.json), and the ensemble of all members at both vote levels (the voted
parquet files and McNemar against the best member). Peak RSS is that process's own
(`hrm.memory.peak_rss_bytes`), so building the data does not count; the peak before the vote (imports, opening the
dataset) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrm.data.reader import open_dataset
from hrm.data.schema import TEST_PUZZLES_FILE, DatasetMetadata, PuzzleArrays
from hrm.data.writer import write_dataset
from hrm.eval.engine import EngineResult
from hrm.eval.predictions import prediction_table
from hrm.eval.votes import score_tokens
from hrm.memory import peak_rss_bytes
from hrm.puzzles.arc import VOCAB_SIZE
from hrm.puzzles.arc_grids import ARC_COLOUR_OFFSET, ARC_EOS, ARC_NUM_COLOURS, ARC_SIDE, ArcAugmentation, ArcIdentifier
from hrm.puzzles.grids import dihedral_transform

from cluster.config import ClusterConfig, EvalConfig, RunConfig
from cluster.plan import plan_shards
from cluster.results.layout import prediction_key, write_predictions
from cluster.results.votes import apply_votes

SPLIT, SET = "test", "all"
WRONG_ANSWERS = 4  # per puzzle: the wrong answers members share, so they gather votes
# Per member: the mean chance of the right answer (per puzzle, uniform between 0 and twice
# it) and the chance of a grid of its own; the rest is one of the puzzle's wrong answers.
# Members get weaker in order.
MEMBER_SKILL = ((0.35, 0.20), (0.30, 0.25), (0.25, 0.30))
RSS_LIMIT_BYTES = 2 << 30  # the acceptance bound: ARC aug-1000 votes in at most 2 GiB


def configure_votes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--puzzles", type=int, default=400)
    parser.add_argument("--augment", type=int, default=999, help="augmented versions per puzzle besides the original")
    parser.add_argument("--members", type=int, default=3, choices=range(2, len(MEMBER_SKILL) + 1),
                        help="checkpoints of the ensemble; the first is also the ARC-voted one")
    parser.add_argument("--shard-size", type=int, default=ClusterConfig().shard_size,
                        help="examples per stored part, as a run's cluster.shard_size")
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"), help="where the data and predictions are built")
    parser.add_argument("--seed", type=int, default=0)


def run_votes(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hrm-bench-votes-", dir=args.tmp))
    members = [f"member{i}" for i in range(args.members)]
    report: dict[str, Any] = {"command": args.command, "workdir": str(work), "cpus": os.cpu_count(),
                              "load_before": os.getloadavg()}
    started = time.perf_counter()
    puzzles = build_dataset(work / "data", args.puzzles, args.augment, args.seed)
    examples = args.puzzles * (args.augment + 1)
    report["dataset"] = {"examples": examples, "seq_len": ARC_SIDE * ARC_SIDE, "puzzles": args.puzzles,
                         "versions_per_puzzle": args.augment + 1, "build_s": time.perf_counter() - started}
    print(f"dataset: {examples:,} examples × {ARC_SIDE * ARC_SIDE} tokens in {report['dataset']['build_s']:.1f} s",
          flush=True)
    started = time.perf_counter()
    parts = store_predictions(work, members, puzzles, args.shard_size, args.seed)
    report["predictions"] = {"members": members, "parts_per_member": parts,
                             "bytes_per_member": folder_bytes(work / "run" / "predictions" / f"checkpoint={members[0]}"),
                             "build_s": time.perf_counter() - started}
    print(f"predictions: {len(members)} members × {parts} parts in {report['predictions']['build_s']:.1f} s",
          flush=True)
    report["votes"] = {vote: measure_in_subprocess(vote, work, members) for vote in ("arc", "ensemble")}
    for vote, figures in report["votes"].items():
        print(format_vote(vote, figures, report["dataset"]["examples"], parts), flush=True)
    report["peak_rss_within_limit"] = all(v["peak_rss_bytes"] <= RSS_LIMIT_BYTES for v in report["votes"].values())
    report["load_after"] = os.getloadavg()
    print(f"peak RSS of every vote ≤ {RSS_LIMIT_BYTES / 2**30:.0f} GiB: {report['peak_rss_within_limit']}; "
          f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f} "
          f"({report['cpus']} CPUs); data in {work}")
    return report


# -- the dataset ----------------------------------------------------------------------------
@dataclass
class SyntheticPuzzle:
    """What members' wrong predictions are made of: the puzzle's wrong answers (original
    frame) and its versions' augmentations, in dataset order."""

    wrong: list[np.ndarray]
    augmentations: list[ArcAugmentation]


def build_dataset(uri: Path, puzzles: int, augment: int, seed: int) -> list[SyntheticPuzzle]:
    """Write the dataset: per puzzle one test input and its output, in every version."""
    rng = np.random.default_rng(seed)
    versions = augment + 1
    n = puzzles * versions
    inputs = np.zeros((n, ARC_SIDE * ARC_SIDE), np.uint8)
    labels = np.zeros_like(inputs)
    identifiers = ["<blank>"]
    test_puzzles, made = {}, []
    for p in range(puzzles):
        name = f"bench{p:04d}"
        grid_in, grid_out, *wrong = (random_grid(rng) for _ in range(2 + WRONG_ANSWERS))
        test_puzzles[name] = {"train": [], "test": [{"input": grid_in.tolist(), "output": grid_out.tolist()}]}
        augmentations = distinct_augmentations(rng, versions)
        identifiers += [ArcIdentifier(name, aug).format("trm") for aug in augmentations]
        rows = slice(p * versions, (p + 1) * versions)
        inputs[rows], labels[rows] = augmented_canvases(grid_in, augmentations), augmented_canvases(grid_out, augmentations)
        made.append(SyntheticPuzzle(wrong, augmentations))
    offsets = np.arange(n + 1, dtype=np.int32)  # one example per puzzle version
    arrays = PuzzleArrays(inputs, labels, np.arange(1, n + 1, dtype=np.int32), offsets,
                          np.arange(0, n + 1, versions, dtype=np.int32))
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=VOCAB_SIZE,
                           seq_len=ARC_SIDE * ARC_SIDE, num_puzzle_identifiers=len(identifiers), total_groups=puzzles,
                           mean_puzzle_examples=1.0, total_puzzles=n, sets=[SET])
    write_dataset(uri, {SPLIT: {SET: arrays}}, {SPLIT: meta}, identifiers,
                  extra_files={TEST_PUZZLES_FILE: test_puzzles})
    return made


def random_grid(rng: np.random.Generator) -> np.ndarray:
    height, width = rng.integers(1, ARC_SIDE + 1, size=2)
    return rng.integers(0, ARC_NUM_COLOURS, size=(height, width), dtype=np.uint8)


def distinct_augmentations(rng: np.random.Generator, count: int) -> list[ArcAugmentation]:
    """The identity, then distinct random augmentations drawn as the converter draws them."""
    legacy = np.random.RandomState(int(rng.integers(2**32)))
    found = {ArcAugmentation(): None}  # a dict keeps the order of drawing
    while len(found) < count:
        found.setdefault(ArcAugmentation.random(legacy))
    return list(found)


def augmented_canvases(grid: np.ndarray, augmentations: list[ArcAugmentation]) -> np.ndarray:
    """[len(augmentations), 900]: `grid` under each augmentation as a token canvas, computed a
    dihedral transform at a time over all colour permutations (`ArcAugmentation.apply`)."""
    perms = np.array([aug.perm for aug in augmentations], np.uint8)
    tids = np.array([aug.tid for aug in augmentations])
    colours = np.zeros((len(augmentations), ARC_SIDE, ARC_SIDE), np.uint8)
    heights, widths = np.zeros(len(augmentations), np.int64), np.zeros(len(augmentations), np.int64)
    for tid in np.unique(tids).tolist():
        chosen = np.flatnonzero(tids == tid)
        grids = dihedral_transform(perms[chosen][:, grid], tid)  # perm[colour], then the transform
        colours[chosen, :grids.shape[1], :grids.shape[2]] = grids
        heights[chosen], widths[chosen] = grids.shape[1], grids.shape[2]
    return token_canvases(colours, heights, widths)


def token_canvases(colours: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """[N, 30, 30] colours with each grid's size → [N, 900] canvases as `grid_to_tokens` makes
    them at the top left: colour + 2 inside, eos on the row below and the column right."""
    row = np.arange(ARC_SIDE)[None, :, None]
    col = np.arange(ARC_SIDE)[None, None, :]
    h, w = heights[:, None, None], widths[:, None, None]
    inside = (row < h) & (col < w)
    eos = ((row == h) & (col < w)) | ((col == w) & (row < h))
    canvas = np.where(inside, colours + ARC_COLOUR_OFFSET, np.where(eos, ARC_EOS, 0))
    return canvas.reshape(len(colours), -1).astype(np.uint8)


# -- the predictions ------------------------------------------------------------------------
def store_predictions(work: Path, members: list[str], puzzles: list[SyntheticPuzzle], shard_size: int,
                      seed: int) -> int:
    """Every member's predictions, a part per shard of the run's plan; the parts per member."""
    dataset = open_dataset(str(work / "data"))
    shards = plan_shards(dataset, SPLIT, [SET], shard_size, EvalConfig().batch_size)
    versions = len(puzzles[0].augmentations)
    for m, name in enumerate(members):
        rng = np.random.default_rng([seed, m])
        right, own = MEMBER_SKILL[m]
        right_by_puzzle = rng.uniform(0, 2, len(puzzles)) * right  # some puzzles are harder than others
        for shard in shards:
            batch = dataset.examples(SPLIT, SET, shard.start, shard.stop)
            pred = member_predictions(rng, batch.labels, wrong_answers(puzzles, shard.start, shard.stop),
                                      right_by_puzzle[batch.puzzle_index // versions], own)
            table = prediction_table(engine_result(pred, batch.labels, rng), set_name=SET,
                                     example_id=batch.example_id, puzzle_index=batch.puzzle_index,
                                     puzzle_identifier=batch.puzzle_identifiers)
            write_predictions(str(work / "run"), prediction_key(name, shard), table)
    return len(shards)


def wrong_answers(puzzles: list[SyntheticPuzzle], start: int, stop: int) -> np.ndarray:
    """[WRONG_ANSWERS, stop - start, 900]: per example its puzzle's wrong answers, in the
    example's augmentation."""
    versions = len(puzzles[0].augmentations)
    pieces = []
    for p in range(start // versions, (stop - 1) // versions + 1):
        low, high = max(start - p * versions, 0), min(stop - p * versions, versions)
        augmentations = puzzles[p].augmentations[low:high]
        pieces.append(np.stack([augmented_canvases(grid, augmentations) for grid in puzzles[p].wrong]))
    return np.concatenate(pieces, axis=1)


def member_predictions(rng: np.random.Generator, labels: np.ndarray, wrong: np.ndarray, right: np.ndarray,
                       own: float) -> np.ndarray:
    """Per example: the label with probability `right` (per example), a random grid of its own
    with probability `own`, else one of its puzzle's wrong answers."""
    n = len(labels)
    draw = rng.random(n)
    pred = wrong[rng.integers(0, WRONG_ANSWERS, n), np.arange(n)]
    correct, mine = draw < right, draw >= 1 - own
    pred[correct] = labels[correct]
    colours = rng.integers(0, ARC_NUM_COLOURS, size=(int(mine.sum()), ARC_SIDE, ARC_SIDE), dtype=np.uint8)
    sizes = rng.integers(1, ARC_SIDE + 1, size=(2, int(mine.sum())))
    pred[mine] = token_canvases(colours, sizes[0], sizes[1])
    return pred.astype(np.int32)


def engine_result(pred: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> EngineResult:
    """What the engine would have returned for `pred`, scored as it scores."""
    scored = score_tokens(pred, labels, ignore_label_id=0)
    n = len(pred)
    return EngineResult(pred=pred, q_halt_logit=rng.normal(size=n).astype(np.float32),
                        q_continue_logit=np.zeros(n, np.float32), steps=np.ones(n, np.int32),
                        valid_tokens=scored["valid_tokens"].astype(np.int32),
                        correct_tokens=scored["correct_tokens"].astype(np.int32), exact=scored["exact"],
                        lm_loss=np.zeros(n), exact_per_step=None)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


# -- one vote, in a process of its own ------------------------------------------------------
def measure_in_subprocess(vote: str, work: Path, members: list[str]) -> dict[str, Any]:
    """Run `vote` in a fresh interpreter (so its peak RSS is the vote's alone); its figures."""
    done = subprocess.run([sys.executable, "-m", "jobs.bench_votes", vote, str(work), *members], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def measure(vote: str, work: Path, members: list[str]) -> dict[str, Any]:
    """ARC voting of the first member, or the ensemble of all, as `apply_votes` runs them."""
    dataset = open_dataset(str(work / "data"))
    names = members[:1] if vote == "arc" else members
    config = RunConfig.model_validate({
        "checkpoints": [{"path": "unused"}],  # apply_votes reads the stored predictions only
        "dataset": {"uri": str(work / "data"), "split": SPLIT},
        "output": {"uri": str(work)},
        "voting": {"enabled": vote == "arc"},
        "ensembles": [{"name": "bench", "members": members, "method": "both"}] if vote == "ensemble" else [],
    })
    metrics = {"checkpoints": {name: {"metrics": {"all": {"exact_accuracy": 0.0}}} for name in names}}
    before = peak_rss_bytes()
    started = time.perf_counter()
    votes = apply_votes(config, str(work / "run"), dataset, metrics)["votes"]
    return {"seconds": time.perf_counter() - started, "peak_rss_bytes": peak_rss_bytes(),
            "peak_rss_before_vote_bytes": before,
            "result": votes["arc"][names[0]] if vote == "arc" else votes["ensembles"]}


def format_vote(vote: str, v: dict[str, Any], examples: int, parts: int) -> str:
    what = ("ARC votes of 1 checkpoint" if vote == "arc"
            else f"ensemble of {len(v['result'][0]['members'])} members, sequence and token votes")
    if vote == "arc":
        outcome = "pass@1 (trm) {:.4f}, pass@2 {:.4f}".format(*(v["result"]["pass_at_k"]["trm"][k] for k in ("1", "2")))
    else:
        outcome = ", ".join(f"{e['level']} exact {e['exact_accuracy']:.4f} (best member {e['best_member']} "
                            f"{e['best_member_exact_accuracy']:.4f})" for e in v["result"])
    return (f"{what}: {examples:,} rows × 900 tokens in {parts} parts: {v['seconds']:.1f} s, peak RSS "
            f"{v['peak_rss_bytes'] / 2**20:,.0f} MiB ({v['peak_rss_before_vote_bytes'] / 2**20:,.0f} MiB before "
            f"the vote: imports, opening the dataset); {outcome}")


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])))
