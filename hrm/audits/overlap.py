"""The overlap audit: which test examples also occur in the training data, exactly or up to
the dataset's own augmentations, and which test examples repeat each other.

The test side is split "test" of DATA (every set); the reference ("train" in the report's
field names) is split "train" of DATA, or every split of OTHER when one is given. Every
example gets four keys computed chunk by chunk (`hrm.audits.canonical`): the digest of its
input row, of its input-then-label row, and of the canonical forms of both under the
family's augmentations. Matching is then sorting and binary search over the reference keys,
never a pairwise search. Sudoku has no canonical form cheap enough to compute, so its
canonical key is a bucket key only (an invariant of the group), and a test example matches
up to augmentation only when `sudoku_equivalent` finds a transform onto a reference example
of its bucket.

What is reported, per level (the input alone; the input with its label, mapped by one and the
same transform):
- exact_in_train: the test example's tokens occur as they are in the reference;
- augmented_in_train: they occur only up to augmentation (not exactly);
- duplicates_within_test: groups of test examples equal up to augmentation (exact included).
Test examples are named `<set>/<example_id>`; the reference example a match was found on
`<split>/<set>/<example_id>`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import pyarrow
import pydantic

from hrm.audits.canonical import (
    arc_forms,
    exact_forms,
    maze_forms,
    sudoku_box,
    sudoku_equivalent,
    sudoku_invariants,
    token_dtype,
)
from hrm.data.dataset import Dataset
from hrm.data.reader import open_dataset
from hrm.errors import InputError
from hrm.memory import peak_rss_bytes
from hrm.puzzles.grids import board_side

log = logging.getLogger(__name__)

Family = Literal["sudoku", "arc", "maze", "exact"]
FAMILIES: tuple[str, ...] = ("sudoku", "arc", "maze", "exact")
TEST_SPLIT, TRAIN_SPLIT = "test", "train"
CHUNK_TOKENS = 1 << 22  # tokens read (and canonicalised) at a time: bounds the working memory
# A worker process costs a Python start and imports (0.4 s of CPU measured) and an ARC chunk
# 0.1-0.2 s to read and key: a worker is started only for every this many chunks.
CHUNKS_PER_WORKER = 4
KIND_FAMILY = {"sudoku-csv": "sudoku", "maze": "maze", "arc": "arc", "jsonl": "exact"}  # converters' summary "kind"
ARC_VOCAB = 12  # pad, eos, colours 0..9
GRID_VOCAB_LIMIT = 256  # grid families work on uint8 cells; wider tokens are matched exactly only
CANONICALISATION = {
    "sudoku": "Sudoku: digit relabelling, band/stack and row/column-within-band permutations, transpose "
              "(candidates bucketed by an invariant, every match confirmed by an exact search for a transform)",
    "arc": "ARC: 8 dihedral transforms x permutations of colours 1..9 (0 fixed) and translation on the canvas "
           "(exact canonical form)",
    "maze": "maze: 8 dihedral transforms (exact canonical form)",
    "exact": "none: exact matching only (no augmentation family known for this data)",
}


# --------------------------------------------------------------------------- report


class Matches(pydantic.BaseModel):
    """Test examples found in the reference, and for each the reference example it matched."""

    count: int
    ids: list[str]
    matched_ids: list[str]


class Levels(pydantic.BaseModel):
    input: Matches
    input_label: Matches


class Groups(pydantic.BaseModel):
    """Groups (two or more) of test examples equal to each other up to augmentation."""

    groups: int
    examples: int
    ids: list[list[str]]


class DuplicateLevels(pydantic.BaseModel):
    input: Groups
    input_label: Groups


class OverlapReport(pydantic.BaseModel):
    dataset: str
    against: str | None
    reference: str  # which examples the test split was matched against
    family: Family
    family_source: str  # how the family was decided
    canonicalisation: str
    test_examples: int
    reference_examples: int
    exact_in_train: Levels
    augmented_in_train: Levels
    duplicates_within_test: DuplicateLevels
    seconds: float
    workers: int = 1  # processes that computed the keys (1: the calling process itself)
    worker_peak_rss_bytes: int = 0  # the sum of every worker process's own peak RSS (0 with one worker)


# --------------------------------------------------------------------------- keys of one side


@dataclass
class Keys:
    """Every example of one side with its four keys; Sudoku also keeps the tokens (to confirm)."""

    names: list[str] = field(default_factory=list)  # "<split>/<set>" per block
    blocks: list[np.ndarray] = field(default_factory=list)  # block index per example
    example_ids: list[np.ndarray] = field(default_factory=list)
    exact_in: list[np.ndarray] = field(default_factory=list)
    exact_pair: list[np.ndarray] = field(default_factory=list)
    form_in: list[np.ndarray] = field(default_factory=list)
    form_pair: list[np.ndarray] = field(default_factory=list)
    tokens: list[np.ndarray] = field(default_factory=list)

    def add(self, block: int, chunk: ChunkKeys) -> None:
        if not len(chunk.example_ids):
            return
        self.blocks.append(np.full(len(chunk.example_ids), block, dtype=np.int32))
        for name in ("example_ids", "exact_in", "exact_pair", "form_in", "form_pair"):
            getattr(self, name).append(getattr(chunk, name))
        if chunk.tokens is not None:
            self.tokens.append(chunk.tokens)

    def done(self) -> Keys:
        for name in ("blocks", "example_ids", "exact_in", "exact_pair", "form_in", "form_pair", "tokens"):
            parts = getattr(self, name)
            setattr(self, name, np.concatenate(parts) if parts else np.empty(0))
        return self

    def __len__(self) -> int:
        return len(self.example_ids)

    def name(self, index: int, with_split: bool) -> str:
        block = self.names[int(self.blocks[index])]
        return f"{block if with_split else block.split('/', 1)[1]}/{int(self.example_ids[index])}"


@dataclass
class ChunkKeys:
    """The keys of one chunk of examples (what a worker sends back: digests and ids, and the
    tokens only for Sudoku)."""

    example_ids: np.ndarray
    exact_in: np.ndarray
    exact_pair: np.ndarray
    form_in: np.ndarray
    form_pair: np.ndarray
    tokens: np.ndarray | None
    process: int  # the pid that computed it, and that process's peak RSS so far (bytes)
    process_peak_rss: int


@dataclass(frozen=True)
class Chunk:
    """Examples [start, stop) of one set: a unit of work, small enough to send to a worker."""

    uri: str
    split: str
    set_name: str
    start: int
    stop: int
    family: str
    dtype: str
    seq_len: int


@dataclass
class Side:
    """One side of the audit: the splits of a dataset whose examples get keys."""

    dataset: Dataset
    uri: str
    splits: list[str]


def scan(sides: list[Side], family: str, dtype: np.dtype, seq_len: int, workers: int
         ) -> tuple[list[Keys], dict[int, int]]:
    """The keys of every example of each side, chunk by chunk, in dataset order, and the peak RSS
    of each worker process by pid (none when keyed here). With workers > 1 the chunks of all
    sides are keyed by up to that many worker processes (no more than one per CHUNKS_PER_WORKER
    chunks), each reading its own chunks: at most that many chunks are in memory at once."""
    peaks: dict[int, int] = {}
    size = max(256, CHUNK_TOKENS // max(seq_len, 1))
    keys = [Keys() for _ in sides]
    chunks: list[tuple[int, int, Chunk]] = []  # (side, block, chunk)
    for at, side in enumerate(sides):
        for split in side.splits:
            for set_name in side.dataset.sets(split):
                keys[at].names.append(f"{split}/{set_name}")
                chunks.extend((at, len(keys[at].names) - 1, Chunk(side.uri, split, set_name, shard.start, shard.stop,
                                                                  family, np.dtype(dtype).str, seq_len))
                              for shard in side.dataset.shards(split, [set_name], target_examples=size))
    workers = min(workers, -(-len(chunks) // CHUNKS_PER_WORKER))
    if workers > 1:
        # spawn, not fork: the caller may hold threads (Ray, pyarrow) that a forked child would inherit locked.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_started) as pool:
            for (at, block, _), found in zip(chunks, pool.map(chunk_keys, [chunk for _, _, chunk in chunks])):
                keys[at].add(block, found)
                peaks[found.process] = max(peaks.get(found.process, 0), found.process_peak_rss)
    else:
        for at, block, chunk in chunks:
            keys[at].add(block, chunk_keys(chunk, sides[at].dataset))
    return [k.done() for k in keys], peaks


def chunk_keys(chunk: Chunk, dataset: Dataset | None = None) -> ChunkKeys:
    """Read one chunk and compute its keys (in a worker process: the dataset opened there once)."""
    dataset = dataset or _opened(chunk.uri)
    dtype = np.dtype(chunk.dtype)
    batch = dataset.examples(chunk.split, chunk.set_name, chunk.start, chunk.stop)
    inputs, labels = batch.inputs.astype(dtype, copy=False), batch.labels.astype(dtype, copy=False)
    exact_in, exact_pair = exact_forms(inputs, labels, dtype)
    form_in, form_pair = forms(chunk.family, inputs, labels, chunk.seq_len)
    return ChunkKeys(example_ids=batch.example_id.astype(np.int64), exact_in=exact_in, exact_pair=exact_pair,
                     form_in=exact_in if form_in is None else form_in,
                     form_pair=exact_pair if form_pair is None else form_pair,
                     tokens=np.stack([inputs, labels], axis=1) if chunk.family == "sudoku" else None,
                     process=os.getpid(), process_peak_rss=peak_rss_bytes())


def _worker_started() -> None:
    # The processes are the parallelism: Arrow decoding in one thread each, not a thread per
    # core in every worker competing for the same cores (measured on 2 cores, two workers on a
    # 40,000-example ARC slice: 1.58 s and 426 MiB of workers against 1.70 s and 463 MiB).
    pyarrow.set_cpu_count(1)


@lru_cache(maxsize=2)
def _opened(uri: str) -> Dataset:
    return open_dataset(uri)


def forms(family: str, inputs: np.ndarray, labels: np.ndarray, seq_len: int
          ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The canonical keys of a chunk (None: the exact keys serve)."""
    if family == "maze":
        return maze_forms(inputs, labels, board_side(seq_len))
    if family == "arc":
        return arc_forms(inputs, labels, board_side(seq_len))
    if family == "sudoku":
        bucket = sudoku_invariants(inputs, sudoku_box(seq_len))
        return bucket, bucket
    return None, None


# --------------------------------------------------------------------------- the family


def detect_family(dataset: Dataset, split: str, requested: str = "auto") -> tuple[str, str]:
    """(family, how it was decided): `requested` if not "auto", else the converter's recorded
    kind, else the shapes: a square board of 4x4 or 9x9 cells with vocab side+2 is Sudoku when
    no label holds the blank token 1 (a maze label does: walls are token 1); vocab 12 on a
    30x30 canvas is ARC; another square grid with vocab 6 is a maze."""
    meta = dataset.metadata(split)
    seq_len, vocab = meta.seq_len, meta.vocab_size
    if requested != "auto":
        family, source = requested, "--family"
    else:
        kind = getattr(getattr(dataset, "index", None), "summary", {}).get("kind")
        if kind in KIND_FAMILY:
            family, source = KIND_FAMILY[kind], f"the dataset's recorded kind {kind!r}"
        else:
            family, source = _family_from_shapes(dataset, split, seq_len, vocab), \
                f"seq_len {seq_len} and vocab {vocab}"
    side = board_side(seq_len)
    if family != "exact" and vocab > GRID_VOCAB_LIMIT:
        return "exact", f"{source}; vocab {vocab} is no puzzle grid's, so exact matching only"
    if family == "sudoku" and sudoku_box(seq_len) is None:
        return "exact", f"{source}; seq_len {seq_len} is not a 4x4 or 9x9 board, so exact matching only"
    if family in ("arc", "maze") and side is None:
        return "exact", f"{source}; seq_len {seq_len} is not a square grid, so exact matching only"
    return family, source


def _family_from_shapes(dataset: Dataset, split: str, seq_len: int, vocab: int) -> str:
    side = board_side(seq_len)
    if side is None:
        return "exact"
    if sudoku_box(seq_len) is not None and vocab == side + 2:
        probe = next((name for name in dataset.sets(split) if dataset.num_examples(split, name)), None)
        if probe is None:
            return "sudoku"
        labels = dataset.examples(split, probe, 0, min(256, dataset.num_examples(split, probe))).labels
        return "maze" if (labels == 1).any() else "sudoku"
    if side == 30 and vocab == ARC_VOCAB:
        return "arc"
    if vocab == 6:
        return "maze"
    return "exact"


# --------------------------------------------------------------------------- the audit


def audit_overlap(dataset_uri: str, against: str | None = None, *, family: str = "auto",
                  workers: int | None = None) -> OverlapReport:
    """Test split of `dataset_uri` against its train split, or against every split of `against`;
    the keys computed by `workers` processes (default: the usable cores; 1: in this process).
    Workers are spawned: a script that calls this with more than one needs the usual
    `if __name__ == "__main__":` guard, and a caller holding fewer cores (a Ray task) passes
    how many it holds."""
    if family != "auto" and family not in FAMILIES:
        raise ValueError(f"family must be auto or one of {FAMILIES}, got {family!r}")
    workers = len(os.sched_getaffinity(0)) if workers is None else workers  # the usable cores
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    started = time.perf_counter()
    dataset = open_dataset(dataset_uri)
    if TEST_SPLIT not in dataset.splits:
        raise InputError(f"{dataset_uri}: no split 'test' to audit (splits: {', '.join(dataset.splits)})")
    if against is None:
        if TRAIN_SPLIT not in dataset.splits:
            raise InputError(f"{dataset_uri}: no split 'train' to audit the test split against "
                             f"(splits: {', '.join(dataset.splits)}); give another dataset with --against")
        reference, ref_splits, ref_label = dataset, [TRAIN_SPLIT], f"split 'train' of {dataset_uri}"
    else:
        reference = open_dataset(against)
        ref_splits = list(reference.splits)
        ref_label = f"every split of {against} ({', '.join(ref_splits)})"
    meta = dataset.metadata(TEST_SPLIT)
    chosen, source = detect_family(dataset, TEST_SPLIT, family)
    vocab = meta.vocab_size
    for split in ref_splits:
        other = reference.metadata(split)
        if other.seq_len != meta.seq_len:
            raise InputError(f"{against or dataset_uri}: split {split!r} has seq_len {other.seq_len} but the test "
                             f"split of {dataset_uri} has {meta.seq_len}: no example can occur in both")
        vocab = max(vocab, other.vocab_size)
    if against is not None and family == "auto":
        theirs, _ = detect_family(reference, ref_splits[0])
        if theirs != chosen:
            raise InputError(f"{against}: holds {theirs} data but {dataset_uri} holds {chosen} data "
                             f"(force one canonicalisation with --family)")
    dtype = token_dtype(vocab)
    log.info("overlap: %s data (%s); reading the test split and the reference (%s) with %d worker(s)",
             chosen, source, ref_label, workers)
    (test, ref), peaks = scan([Side(dataset, str(dataset_uri), [TEST_SPLIT]), Side(reference, str(against or dataset_uri),
                                                                           ref_splits)],
                     chosen, dtype, meta.seq_len, workers)
    log.info("overlap: %d test examples, %d reference examples", len(test), len(ref))
    box = sudoku_box(meta.seq_len) if chosen == "sudoku" else None

    exact_in = lookup(test.exact_in, ref.exact_in)
    exact_pair = lookup(test.exact_pair, ref.exact_pair)
    if box is None:
        form_in = np.where(exact_in >= 0, -1, lookup(test.form_in, ref.form_in))
        form_pair = np.where(exact_pair >= 0, -1, lookup(test.form_pair, ref.form_pair))
        groups_in = groups_of(test.form_in)
        groups_pair = groups_of(test.form_pair)
    else:
        form_in, form_pair = confirmed_matches(test, ref, exact_in, exact_pair, box)
        groups_in, groups_pair = confirmed_groups(test, box)

    def matches(found: np.ndarray) -> Matches:
        at = np.flatnonzero(found >= 0)
        return Matches(count=len(at), ids=[test.name(i, False) for i in at],
                       matched_ids=[ref.name(int(found[i]), True) for i in at])

    def duplicates(groups: list[np.ndarray]) -> Groups:
        return Groups(groups=len(groups), examples=sum(len(g) for g in groups),
                      ids=[[test.name(int(i), False) for i in group] for group in groups])

    return OverlapReport(
        dataset=str(dataset_uri), against=None if against is None else str(against), reference=ref_label,
        family=chosen, family_source=source, canonicalisation=CANONICALISATION[chosen],
        test_examples=len(test), reference_examples=len(ref),
        exact_in_train=Levels(input=matches(exact_in), input_label=matches(exact_pair)),
        augmented_in_train=Levels(input=matches(form_in), input_label=matches(form_pair)),
        duplicates_within_test=DuplicateLevels(input=duplicates(groups_in), input_label=duplicates(groups_pair)),
        seconds=round(time.perf_counter() - started, 3), workers=max(1, len(peaks)),
        worker_peak_rss_bytes=sum(peaks.values()),
    )


def lookup(keys: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per key, the index of a reference example with that key (the first in order), or -1."""
    if len(reference) == 0 or len(keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    order = np.argsort(reference, kind="stable")
    ordered = reference[order]
    at = np.minimum(np.searchsorted(ordered, keys), len(ordered) - 1)
    return np.where(ordered[at] == keys, order[at], -1)


def groups_of(keys: np.ndarray) -> list[np.ndarray]:
    """Indices of the examples sharing a key, for every key held by two or more, in example order."""
    if len(keys) == 0:
        return []
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.append(starts[1:], len(keys))
    groups = [order[s:e] for s, e in zip(starts, ends) if e - s > 1]
    return sorted(groups, key=lambda g: int(g[0]))


# --------------------------------------------------------------------------- Sudoku confirmation


def confirmed_matches(test: Keys, ref: Keys, exact_in: np.ndarray, exact_pair: np.ndarray, box: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per test example, a reference example it equals up to a Sudoku transform but not exactly
    (or -1): input alone, and input with label. Candidates: the reference examples of its bucket."""
    order = np.argsort(ref.form_in, kind="stable")
    ordered = ref.form_in[order]
    low = np.searchsorted(ordered, test.form_in, side="left")
    high = np.searchsorted(ordered, test.form_in, side="right")
    found_in = np.full(len(test), -1, dtype=np.int64)
    found_pair = np.full(len(test), -1, dtype=np.int64)
    checks = 0
    for i in np.flatnonzero(high > low):
        candidates = order[low[i]:high[i]]
        if exact_in[i] < 0:
            for j in candidates:
                checks += 1
                if sudoku_equivalent(test.tokens[i, 0], ref.tokens[j, 0], box):
                    found_in[i] = j
                    break
        if exact_pair[i] < 0 and (exact_in[i] >= 0 or found_in[i] >= 0):
            for j in candidates:
                checks += 1
                if sudoku_equivalent(test.tokens[i], ref.tokens[j], box):
                    found_pair[i] = j
                    break
    log.info("overlap: %d exact Sudoku equivalence checks", checks)
    return found_in, found_pair


def confirmed_groups(test: Keys, box: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Groups of test examples equal up to a Sudoku transform: input alone, input with label.
    Each bucket is split greedily: an example joins the first group whose first member it is
    equivalent to (equivalence is transitive, so one member stands for the group)."""
    groups_in: list[np.ndarray] = []
    groups_pair: list[np.ndarray] = []
    for bucket in groups_of(test.form_in):
        for group in _cluster(bucket, lambda i, j: test.exact_in[i] == test.exact_in[j]
                              or sudoku_equivalent(test.tokens[i, 0], test.tokens[j, 0], box)):
            if len(group) > 1:
                groups_in.append(group)
                groups_pair.extend(g for g in _cluster(group, lambda i, j: test.exact_pair[i] == test.exact_pair[j]
                                                       or sudoku_equivalent(test.tokens[i], test.tokens[j], box))
                                   if len(g) > 1)
    return sorted(groups_in, key=lambda g: int(g[0])), sorted(groups_pair, key=lambda g: int(g[0]))


def _cluster(members: np.ndarray, same) -> list[np.ndarray]:
    clusters: list[list[int]] = []
    for i in members:
        for cluster in clusters:
            if same(cluster[0], i):
                cluster.append(int(i))
                break
        else:
            clusters.append([int(i)])
    return [np.array(sorted(c)) for c in clusters]

