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
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
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
from hrm.puzzles.grids import board_side

log = logging.getLogger(__name__)

Family = Literal["sudoku", "arc", "maze", "exact"]
FAMILIES: tuple[str, ...] = ("sudoku", "arc", "maze", "exact")
TEST_SPLIT, TRAIN_SPLIT = "test", "train"
CHUNK_TOKENS = 1 << 22  # tokens read (and canonicalised) at a time: bounds the working memory
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


def scan(dataset: Dataset, splits: list[str], family: str, dtype: np.dtype, seq_len: int) -> Keys:
    keys = Keys()
    chunk = max(256, CHUNK_TOKENS // max(seq_len, 1))
    for split in splits:
        for set_name in dataset.sets(split):
            keys.names.append(f"{split}/{set_name}")
            for shard in dataset.shards(split, [set_name], target_examples=chunk):
                batch = dataset.examples(split, set_name, shard.start, shard.stop)
                if not len(batch):
                    continue
                inputs, labels = batch.inputs.astype(dtype, copy=False), batch.labels.astype(dtype, copy=False)
                exact_in, exact_pair = exact_forms(inputs, labels, dtype)
                form_in, form_pair = forms(family, inputs, labels, seq_len)
                keys.blocks.append(np.full(len(batch), len(keys.names) - 1, dtype=np.int32))
                keys.example_ids.append(batch.example_id.astype(np.int64))
                keys.exact_in.append(exact_in)
                keys.exact_pair.append(exact_pair)
                keys.form_in.append(exact_in if form_in is None else form_in)
                keys.form_pair.append(exact_pair if form_pair is None else form_pair)
                if family == "sudoku":
                    keys.tokens.append(np.stack([inputs, labels], axis=1))
    return keys.done()


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


def audit_overlap(dataset_uri: str, against: str | None = None, *, family: str = "auto") -> OverlapReport:
    """Test split of `dataset_uri` against its train split, or against every split of `against`."""
    if family != "auto" and family not in FAMILIES:
        raise ValueError(f"family must be auto or one of {FAMILIES}, got {family!r}")
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
    log.info("overlap: %s data (%s); reading the test split", chosen, source)
    test = scan(dataset, [TEST_SPLIT], chosen, dtype, meta.seq_len)
    log.info("overlap: %d test examples; reading the reference (%s)", len(test), ref_label)
    ref = scan(reference, ref_splits, chosen, dtype, meta.seq_len)
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
        seconds=round(time.perf_counter() - started, 3),
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

