"""The failure gallery: for a few checkpoints, a few examples each got wrong, drawn as the
puzzles they are — Sudoku boards with the wrong cells marked, mazes with the predicted and the
answer's path, ARC input | prediction | answer grids in the ARC palette — or, for text, the
decoded completion against the reference. Anything else is shown as token rows.

Which examples: a checkpoint's failures (exact false) ordered by a fixed-seed hash of (set,
example id), the first `EXAMPLES` of them. The same order for every checkpoint, so an example
two checkpoints both fail tends to be shown for both, and not always the first rows of the
split. Choosing them reads three small columns of every prediction part, one part at a time;
the tokens are then read for the chosen rows only (from the predictions when the run stored
inputs and labels, output.log_samples, else from the dataset).

Each figure's alt text lists every example shown and what is wrong with it, so report.md
readers without the pictures get the same facts.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hrm import storage
from hrm.data.dataset import Dataset
from hrm.data.reader import open_dataset
from hrm.errors import InputError
from hrm.puzzles.arc_grids import ARC_SIDE, crop_tokens
from hrm.puzzles.maze import CHARSET, MAZE_GOAL, MAZE_PATH, MAZE_START, MAZE_WALL
from hrm.puzzles.sudoku import BOX_FOR_CELLS
from hrm.puzzles.text import EOS, FIRST_TOKEN, PAD
from hrm.puzzles.tokenizers import Tokenizer, text_tokenizer

from cluster.report import plots
from cluster.report.document import Block, Figure, Table, Text
from cluster.report.format import count
from cluster.report.results import RunResults
from cluster.results.layout import prediction_parts, predictions_prefix, read_prediction_part

EXAMPLES = 4  # failed examples per checkpoint
TOP = 3  # the leaderboard's first checkpoints shown, then the newest one
GALLERY_SEED = "hrm-eval failure gallery v1"  # changing it changes which failures are shown
TOKENS_SHOWN = 48  # per row of the token table of an unknown family
SUDOKU_KINDS = {"sudoku-csv", "demo-sudoku-4x4"}

Kind = Literal["sudoku", "maze", "arc", "text", "tokens"]


@dataclass
class Family:
    """How a dataset's tokens read: its kind and what is needed to draw it."""

    kind: Kind
    why: str  # how the kind was known, for the section's first line
    shape: tuple[int, int] | None = None  # grid rows x columns (Sudoku, maze)
    # text: the tokenizer the dataset records, or (a dataset converted before datasets recorded
    # it) the summary's name of it, "bytes" or "keywords:<file>"
    tokenizer: Tokenizer | str | None = None


@dataclass
class Failure:
    set: str
    example_id: int
    pred: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray


def failure_gallery(r: RunResults) -> list[Block]:
    m = r.manifest
    if m is None:
        return [Text("No failure gallery: the dataset the examples come from is named in the run's manifest, "
                     "which this run lacks.")]
    uri, split = m.dataset["uri"], m.dataset["split"]
    try:
        dataset = open_dataset(uri)
        meta = dataset.metadata(split)
    except InputError as err:  # the report is built later than the run: the data may have moved
        return [Text(f"No failure gallery: the run's dataset cannot be read now ({err}).")]
    family = dataset_family(dataset, meta.seq_len, meta.vocab_size)
    ignore = meta.ignore_label_id
    blocks: list[Block] = [Text(
        f"Up to {EXAMPLES} failed examples (not exactly right) of each of {describe_chosen(r)}, chosen by a "
        f"fixed hash of their set and example id (the same for every checkpoint and every build of this report). "
        f"{family.why}")]
    for name in gallery_checkpoints(r):
        try:
            chosen = choose_failures(r.run, name, EXAMPLES)
        except InputError as err:  # a partial run's checkpoint whose predictions are not all readable
            blocks.append(Text(f"{name}: no gallery: {err}."))
            continue
        if not chosen.failed:
            blocks.append(Text(f"{name}: no failed example among its {chosen.examples} stored predictions."))
            continue
        failures = read_failures(r.run, name, chosen.parts, dataset, split)
        head = f"{name}: {len(failures)} of its {chosen.failed} failures among {chosen.examples} stored predictions"
        blocks.append(draw(name, head, failures, family, ignore))
    return blocks


def describe_chosen(r: RunResults) -> str:
    names = gallery_checkpoints(r)
    return f"the {len(names)} checkpoint(s) {', '.join(names)} (the leaderboard's first {TOP}, then the newest)"


def gallery_checkpoints(r: RunResults) -> list[str]:
    """The leaderboard's first TOP, best first, then the newest checkpoint (plan order) when
    it is not among them: a small report that still shows where training ended."""
    ranked = [row["checkpoint"] for row in r.leaderboard][:TOP]
    newest = r.names[-1:] if r.names else []
    return ranked + [n for n in newest if n not in ranked]


# --------------------------------------------------------------------------- which dataset family


def dataset_family(dataset: Dataset, seq_len: int, vocab_size: int) -> Family:
    """The `kind` our converters record in dataset.json's summary; else the shapes the
    reference builders give (Sudoku 81/11 and 16/6, ARC 900/12, maze vocab 6 on a square)."""
    index = getattr(dataset, "index", None)  # our layout has a summary; the reference layout has none
    summary = index.summary if index is not None else {}
    kind = summary.get("kind")
    side = math.isqrt(seq_len)
    if kind in SUDOKU_KINDS or (kind is None and (seq_len, vocab_size) in ((81, 11), (16, 6))):
        return Family("sudoku", _known_by(kind, "Sudoku"), (side, side))
    if kind == "arc" or (kind is None and (seq_len, vocab_size) == (ARC_SIDE * ARC_SIDE, 12)):
        return Family("arc", _known_by(kind, "ARC"))
    if kind == "maze" or (kind is None and vocab_size == len(CHARSET) + 1 and side * side == seq_len):
        rows, _, cols = str(summary.get("grid", f"{side}x{side}")).partition("x")
        return Family("maze", _known_by(kind, "maze"), (int(rows), int(cols)))
    if kind == "jsonl" and (recorded := text_tokenizer(dataset)) is not None:
        missing = summary.get("words_without_token")
        lossy = (f" Its tokenizer is lossy ({recorded.spec().kind}): {count(missing)} word(s) of the data had no token "
                 "and are missing from the decoded text, as is whatever else it drops (case, punctuation)."
                 if recorded.lossy and missing is not None else
                 " Its tokenizer is lossy: the decoded text is what it kept." if recorded.lossy else "")
        return Family("text", f"The dataset is text, decoded below by the tokenizer it records.{lossy}",
                      tokenizer=recorded)
    if kind == "jsonl":
        tokenizer = str(summary.get("tokenizer", "bytes"))
        lossy = "" if tokenizer == "bytes" else (
            " Its keyword tokenizer kept only vocabulary words (case, punctuation and other words are lost) and "
            "the vocabulary file is not stored with the dataset, so tokens are shown as keyword numbers: k1 is "
            "the file's first keyword.")
        return Family("text", f"The dataset is text (tokenizer {tokenizer}), decoded below.{lossy}",
                      tokenizer=tokenizer)
    return Family("tokens", f"The dataset's family is not known (dataset.json records no kind{_kind(kind)}, and "
                            f"seq_len {seq_len} with vocab {vocab_size} is none of Sudoku, ARC or maze): failed "
                            f"examples are shown as token rows, the first {TOKENS_SHOWN} tokens.")


def _known_by(kind: str | None, name: str) -> str:
    how = f"its dataset.json records kind {kind}" if kind else "its seq_len and vocabulary are the reference's"
    return f"The dataset is {name} ({how})."


def _kind(kind: object) -> str:
    return "" if kind is None else f" this report draws ({kind})"


# --------------------------------------------------------------------------- choosing and reading failures


def example_order(set_name: str, example_id: int) -> int:
    """The fixed-seed hash that orders failures: stable across runs, checkpoints and Python."""
    digest = hashlib.blake2b(f"{GALLERY_SEED}\0{set_name}\0{example_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class Chosen:
    """The failures chosen among a checkpoint's stored predictions, and what was scanned."""

    parts: dict[str, list[tuple[str, int]]]  # part name -> (set, example id) of the chosen rows it holds
    failed: int  # failures among the stored predictions
    examples: int  # stored predictions


def choose_failures(run: str, checkpoint: str, k: int) -> Chosen:
    """The k failures first in `example_order`, reading three columns of one part at a time."""
    kept: list[tuple[int, str, int, str]] = []  # (-hash, set, id, part): the heap's top is the largest hash kept
    failed = examples = 0
    for part in prediction_parts(run, checkpoint):
        table = read_prediction_part(run, checkpoint, part, columns=["set", "example_id", "exact"])
        exact = np.asarray(table.column("exact").to_numpy(zero_copy_only=False), dtype=bool)
        sets, ids = table.column("set").to_pylist(), table.column("example_id").to_pylist()
        examples += len(exact)
        for i in np.flatnonzero(~exact):
            failed += 1
            item = (-example_order(sets[i], ids[i]), sets[i], ids[i], part)
            if len(kept) < k:
                heapq.heappush(kept, item)
            elif item > kept[0]:
                heapq.heapreplace(kept, item)
    parts: dict[str, list[tuple[str, int]]] = {}
    for _, set_name, example_id, part in sorted(kept, key=lambda item: (item[1], item[2])):
        parts.setdefault(part, []).append((set_name, example_id))
    return Chosen(parts, failed, examples)


def read_failures(run: str, checkpoint: str, chosen: dict[str, list[tuple[str, int]]], dataset: Dataset,
                  split: str) -> list[Failure]:
    """The chosen rows' tokens: inputs and labels from the predictions when stored there
    (output.log_samples), else from the dataset, one example at a time."""
    out: list[Failure] = []
    for part, wanted in chosen.items():
        uri = storage.join(run, predictions_prefix(checkpoint), part)
        logged = {"inputs", "labels"} <= set(storage.parquet_metadata(uri).schema.names)
        columns = ["example_id", "pred"] + (["inputs", "labels"] if logged else [])
        table = read_prediction_part(run, checkpoint, part, columns=columns)
        ids = table.column("example_id").to_pylist()
        for set_name, example_id in wanted:
            row = ids.index(example_id)
            pred = np.asarray(table.column("pred")[row].as_py())
            if logged:
                inputs = np.asarray(table.column("inputs")[row].as_py())
                labels = np.asarray(table.column("labels")[row].as_py())
            else:
                batch = dataset.examples(split, set_name, example_id, example_id + 1)
                inputs, labels = np.asarray(batch.inputs[0]), np.asarray(batch.labels[0])
            out.append(Failure(set_name, example_id, pred, inputs, labels))
    return out


# --------------------------------------------------------------------------- drawing


def draw(checkpoint: str, head: str, failures: list[Failure], family: Family, ignore: int | None) -> Block:
    if family.kind == "sudoku":
        return sudoku_figure(checkpoint, head, failures, family, ignore)
    if family.kind == "maze":
        return maze_figure(checkpoint, head, failures, family, ignore)
    if family.kind == "arc":
        return arc_figure(checkpoint, head, failures)
    if family.kind == "text":
        return text_table(head, failures, family)
    return token_table(head, failures, ignore)


def example_name(f: Failure) -> str:
    return f"set {f.set} example {f.example_id}"


def wrong_tokens(f: Failure, ignore: int | None) -> np.ndarray:
    """Labelled positions the prediction misses: what the exact metric counts."""
    labelled = f.labels != ignore if ignore is not None else np.ones_like(f.labels, dtype=bool)
    return labelled & (f.pred != f.labels)


def _figure_block(checkpoint: str, png: bytes, head: str, facts: list[str], legend: str) -> Figure:
    return Figure(f"gallery-{_slug(checkpoint)}", png, f"{head}: " + "; ".join(facts) + ".",
                  f"{head} ({', '.join(fact.split(':')[0] for fact in facts)}). {legend}")


def sudoku_figure(checkpoint: str, head: str, failures: list[Failure], family: Family, ignore: int | None) -> Figure:
    side = family.shape[0]
    box = BOX_FOR_CELLS.get(side * side, max(1, math.isqrt(side)))
    panels, facts = [], []
    for f in failures:
        wrong = wrong_tokens(f, ignore)
        digits = np.where((f.pred >= 2) & (f.pred <= side + 1), f.pred - 1, 0)  # token = digit + 1
        given = f.inputs > 1  # blank is token 1
        answer = np.clip(f.labels - 1, 0, None)
        grids = [a.reshape(side, side).tolist() for a in (digits, given, wrong, answer)]
        panels.append(plots.SudokuPanel(f"{example_name(f)}\n{int(wrong.sum())} wrong", *grids, box))
        facts.append(f"{example_name(f)}: {int(wrong.sum())} of {side * side} cells wrong")
    return _figure_block(checkpoint, plots.sudoku_gallery(panels), head, facts,
                         "Givens in bold black, predicted digits in blue; a wrong cell is shaded red with the "
                         "answer's digit small in its corner.")


def maze_figure(checkpoint: str, head: str, failures: list[Failure], family: Family, ignore: int | None) -> Figure:
    rows, cols = family.shape
    token = {ch: i + 1 for i, ch in enumerate(CHARSET)}  # "# SGo" -> 1..5
    panels, facts = [], []
    for f in failures:
        wrong = wrong_tokens(f, ignore)
        inputs = f.inputs.reshape(rows, cols)
        predicted = (f.pred == token[MAZE_PATH]).reshape(rows, cols)
        answer = (f.labels == token[MAZE_PATH]).reshape(rows, cols)
        panels.append(plots.MazePanel(f"{example_name(f)}\n{int(wrong.sum())} cells wrong",
                                      (inputs == token[MAZE_WALL]).tolist(), predicted.tolist(), answer.tolist(),
                                      _find(inputs, token[MAZE_START]), _find(inputs, token[MAZE_GOAL])))
        facts.append(f"{example_name(f)}: {int(wrong.sum())} of {rows * cols} cells wrong, predicted path "
                     f"{int(predicted.sum())} cells, the answer's {int(answer.sum())}")
    return _figure_block(checkpoint, plots.maze_gallery(panels), head, facts,
                         "Walls dark; the predicted path in red dots, the answer's path in green outlines.")


def _find(grid: np.ndarray, value: int) -> tuple[int, int] | None:
    where = np.argwhere(grid == value)
    return (int(where[0][0]), int(where[0][1])) if len(where) else None


def arc_figure(checkpoint: str, head: str, failures: list[Failure]) -> Figure:
    panels, facts = [], []
    for f in failures:
        grids = [crop_tokens(f.inputs), crop_tokens(f.pred), crop_tokens(f.labels)]
        same_shape = grids[1].shape == grids[2].shape
        panels.append(plots.ArcPanel(example_name(f), [(label, g.tolist()) for label, g in
                                                      zip(("input", "prediction", "answer"), grids)],
                                     {1: (grids[1] != grids[2]).tolist()} if same_shape else {}))
        facts.append(f"{example_name(f)}: {arc_difference(grids[1], grids[2])}")
    return _figure_block(checkpoint, plots.arc_gallery(panels), head, facts,
                         "Each row: input | prediction | answer, cropped to the grid's extent (its end marks), "
                         "in the ARC palette, at one cell size per row; a wrong cell of a prediction of the "
                         "answer's shape is outlined.")


def arc_difference(prediction: np.ndarray, answer: np.ndarray) -> str:
    if prediction.shape != answer.shape:
        return f"prediction {_shape(prediction)}, answer {_shape(answer)}"
    return f"{int((prediction != answer).sum())} of {answer.size} cells wrong ({_shape(answer)})"


def _shape(grid: np.ndarray) -> str:
    return f"{grid.shape[0]}×{grid.shape[1]}"


def text_table(head: str, failures: list[Failure], family: Family) -> Table:
    rows = [[f.set, str(f.example_id), decode_text(f.inputs, family.tokenizer),
             decode_text(f.pred, family.tokenizer), decode_text(f.labels, family.tokenizer)] for f in failures]
    return Table(["set", "example", "prompt", "completion (predicted)", "reference"], rows,
                 caption=f"{head}, decoded (a line break shows as ⏎)")


def decode_text(tokens: np.ndarray, tokenizer: Tokenizer | str | None) -> str:
    """Up to the first end mark (eos) or padding. By the dataset's recorded tokenizer; for a
    dataset without one: bytes exactly (an invalid UTF-8 sequence, which a model can predict,
    as U+FFFD), keywords as their numbers."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.decode(tokens).replace("\r\n", "⏎").replace("\n", "⏎")
    ends = np.flatnonzero((tokens == EOS) | (tokens == PAD))
    body = tokens[: ends[0]] if len(ends) else tokens
    if tokenizer == "bytes":
        text = bytes(int(t) - FIRST_TOKEN for t in body).decode("utf-8", errors="replace")
        return text.replace("\r\n", "⏎").replace("\n", "⏎")
    return " ".join(f"k{int(t) - FIRST_TOKEN + 1}" for t in body)


def token_table(head: str, failures: list[Failure], ignore: int | None) -> Table:
    def row(tokens: np.ndarray) -> str:
        more = f" … (+{len(tokens) - TOKENS_SHOWN})" if len(tokens) > TOKENS_SHOWN else ""
        return " ".join(map(str, tokens[:TOKENS_SHOWN].tolist())) + more

    rows = [[f.set, str(f.example_id), f"{int(wrong_tokens(f, ignore).sum())} of "
             f"{int((f.labels != ignore).sum()) if ignore is not None else len(f.labels)}", row(f.pred), row(f.labels)]
            for f in failures]
    return Table(["set", "example", "tokens wrong", "predicted tokens", "answer tokens"], rows, caption=head)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)

