"""ARC: puzzles read from their JSON files and built into splits of augmented puzzles.

Input, one or more SOURCEs of either form:
  * a kaggle-combined prefix: SOURCE_<subset>_challenges.json (puzzle name → {"train":
    [{"input": grid, "output": grid}, …], "test": [{"input": grid}, …]}) plus
    SOURCE_<subset>_solutions.json (puzzle name → [test output grid, …]), e.g.
    /data/arc/arc-agi → arc-agi_training_challenges.json, arc-agi_evaluation_…;
    every subset found is read unless --subsets names some;
  * a directory of <name>.json files with "train"/"test" pairs, outputs included (the
    original ARC repositories); the subset is the directory's name, and each subdirectory
    holding JSON files is a subset of its own (data/training, data/evaluation…).
A grid is a list of rows of colours 0..9, rectangular, 1..30 cells a side. A puzzle name
may appear in only one of the subsets converted together.

Output (as TRM's build_arc_dataset.py): 30x30 canvases flattened to seq_len 900, colour c
→ token c + 2, pad 0, eos 1 along the row below and the column right of the grid, vocab 12,
ignore_label_id 0. Each puzzle becomes a group: the original, then up to --augment
augmented versions (a dihedral transform and a permutation of colours 1..9, deduplicated by
content, drawn from a generator seeded by --seed and the puzzle name, so a puzzle's
versions do not depend on which other puzzles are converted). Split "train" holds every
version's train pairs, plus the test pairs of puzzles outside --test-subsets; split "test"
holds the test pairs of puzzles in --test-subsets. Train pairs are translated to a random
top-left offset except one per puzzle version (as the reference; --no-translate keeps all
at the top left). identifiers.json lists "<blank>", then each version as
name|||t<k>|||<perm> (--id-style trm, default) or name_t<k>_<perm> (--id-style hrm);
test_puzzles.json holds the original puzzles of the test split with their solutions.
Columns kept per example: tier (the subset), name (the original puzzle), test_index (the
position among the puzzle's test inputs; -1 for a train pair).

Examples:
  hrm-eval convert arc /data/arc/arc-agi --subsets training,evaluation --augment 1000 \\
      --output data/arc-1-aug-1000
  hrm-eval convert arc ARC-AGI-2/data --test-subsets evaluation --id-style hrm --output …
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrm.data.schema import TEST_PUZZLES_FILE, PuzzleArrays
from hrm.decode import read_text
from hrm.errors import InputError
from hrm.puzzles.arc_grids import ARC_SIDE, ArcAugmentation, ArcIdentifier, grid_hash, grid_to_tokens, parse_grid
from hrm.puzzles.publish import Clock, Destination, publish

VOCAB_SIZE = 12  # pad, eos, colours 0..9
RETRIES_PER_AUGMENTATION = 5  # as the reference: give up on a puzzle after 5N draws
DEFAULT_TEST_SUBSETS = "evaluation,evaluation2"

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class ArcPuzzle:
    name: str
    subset: str
    origin: str  # the file it came from, for messages
    train: list[Pair]
    test: list[Pair]
    original: dict  # {"train": […], "test": […]} with test outputs, for test_puzzles.json

    def all_pairs(self) -> list[Pair]:
        return self.train + self.test


@dataclass
class _SplitBuilder:
    """Accumulates one split's examples, puzzles and groups."""

    inputs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    identifiers: list[int] = field(default_factory=list)
    puzzle_ends: list[int] = field(default_factory=list)
    group_ends: list[int] = field(default_factory=list)
    tier: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    test_index: list[int] = field(default_factory=list)

    def add_puzzle(self, identifier: int, puzzle: ArcPuzzle, examples: list[tuple[np.ndarray, np.ndarray, int]]) -> None:
        for tokens_in, tokens_out, test_index in examples:
            self.inputs.append(tokens_in)
            self.labels.append(tokens_out)
            self.tier.append(puzzle.subset)
            self.name.append(puzzle.name)
            self.test_index.append(test_index)
        self.identifiers.append(identifier)
        self.puzzle_ends.append(len(self.inputs))

    def end_group(self) -> None:
        self.group_ends.append(len(self.identifiers))

    def build(self) -> PuzzleArrays:
        return PuzzleArrays(
            inputs=np.stack(self.inputs),
            labels=np.stack(self.labels),
            puzzle_identifiers=np.array(self.identifiers, dtype=np.int32),
            puzzle_indices=np.array([0, *self.puzzle_ends], dtype=np.int32),
            group_indices=np.array([0, *self.group_ends], dtype=np.int32),
            columns={"tier": np.array(self.tier, dtype=str), "name": np.array(self.name, dtype=str),
                     "test_index": np.array(self.test_index, dtype=np.int32)},
        )


def convert_arc(sources: list[str], destination: Destination, *, seed: int = 42, subsets: str | None = None,
                test_subsets: str = DEFAULT_TEST_SUBSETS, augment: int = 0, id_style: str = "trm",
                translate: bool = True) -> dict:
    """Read every source, build the augmented splits and publish; returns the summary.
    `subsets` / `test_subsets` are comma-separated subset names."""
    clock = Clock()
    if augment < 0:
        raise InputError(f"--augment: must be >= 0, got {augment}")
    wanted = set(subsets.split(",")) if subsets else None
    tested = set(test_subsets.split(",")) if test_subsets else set()
    puzzles = load_puzzles(sources, wanted)
    splits, identifiers, shortfalls = build_splits(puzzles, tested, augment, id_style, translate=translate, seed=seed)
    found = Counter(puzzle.subset for puzzle in puzzles)
    return publish(destination, "arc", splits, seed=seed, vocab_size=VOCAB_SIZE, seq_len=ARC_SIDE * ARC_SIDE,
                   identifiers=identifiers, clock=clock,
                   extra_files={TEST_PUZZLES_FILE: {p.name: p.original for p in puzzles if p.subset in tested}},
                   details={"subsets": dict(found), "test_subsets": sorted(tested & set(found)),
                            "augment": augment, "id_style": id_style, "augmentation_shortfalls": shortfalls})


def build_splits(puzzles: list[ArcPuzzle], test_subsets: set[str], augment: int, id_style: str, *,
                 translate: bool, seed: int) -> tuple[dict[str, PuzzleArrays], list[str], dict[str, int]]:
    """(arrays per split, identifiers, {puzzle: augmentations found} where fewer than asked).

    Every puzzle is a group of versions (original + augmentations) in the train split, and
    also in the test split when its subset is a test subset.
    """
    builders = {"train": _SplitBuilder(), "test": _SplitBuilder()}
    identifiers = ["<blank>"]
    shortfalls: dict[str, int] = {}
    for puzzle in puzzles:
        rng = _puzzle_rng(seed, puzzle.name)
        versions = augmentations(puzzle, augment, rng)
        if len(versions) < augment + 1:
            shortfalls[puzzle.name] = len(versions) - 1
        in_test = puzzle.subset in test_subsets
        # A puzzle outside the test subsets lends its test pairs to the train split.
        train_pairs = puzzle.train if in_test else puzzle.all_pairs()
        train_test_index = [-1] * len(puzzle.train) + ([] if in_test else list(range(len(puzzle.test))))
        for augmentation in versions:
            identifiers.append(ArcIdentifier(puzzle.name, augmentation).format(id_style))
            builders["train"].add_puzzle(len(identifiers) - 1, puzzle, _encode(
                train_pairs, train_test_index, augmentation, rng if translate else None))
            if in_test:
                builders["test"].add_puzzle(len(identifiers) - 1, puzzle, _encode(
                    puzzle.test, list(range(len(puzzle.test))), augmentation, None))
        builders["train"].end_group()
        if in_test:
            builders["test"].end_group()
    splits = {name: builder.build() for name, builder in builders.items() if builder.inputs}
    return splits, identifiers, shortfalls


# --------------------------------------------------------------------------- augmentation


def _puzzle_rng(seed: int, name: str) -> np.random.RandomState:
    """A generator for one puzzle, from the seed and the puzzle's name (not its position)."""
    return np.random.RandomState([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])


def augmentations(puzzle: ArcPuzzle, count: int, rng: np.random.RandomState) -> list[ArcAugmentation]:
    """The identity, then up to `count` augmentations whose puzzles differ from all earlier ones.

    Two augmentations can give the same puzzle (symmetric grids, unused colours); like the
    reference we keep the first and draw again, at most RETRIES_PER_AUGMENTATION * count times.
    """
    versions = [ArcAugmentation()]
    seen = {_puzzle_hash(puzzle.all_pairs(), versions[0])}
    for _ in range(RETRIES_PER_AUGMENTATION * count):
        if len(versions) > count:
            break
        candidate = ArcAugmentation.random(rng)
        digest = _puzzle_hash(puzzle.all_pairs(), candidate)
        if digest not in seen:
            seen.add(digest)
            versions.append(candidate)
    return versions


def _puzzle_hash(pairs: list[Pair], augmentation: ArcAugmentation) -> str:
    """Order-free content hash of a puzzle's augmented pairs (the reference's puzzle_hash)."""
    pair_hashes = sorted(f"{grid_hash(augmentation.apply(i))}|{grid_hash(augmentation.apply(o))}" for i, o in pairs)
    return hashlib.sha256("|".join(pair_hashes).encode()).hexdigest()


def _encode(pairs: list[Pair], test_index: list[int], augmentation: ArcAugmentation,
            rng: np.random.RandomState | None) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Augmented pairs as token canvases; with `rng`, all but one pair get a random offset.

    An input and its output share one offset, chosen so that both fit the canvas.
    """
    keep = rng.randint(len(pairs)) if rng is not None else -1
    encoded = []
    for index, ((grid_in, grid_out), test_idx) in enumerate(zip(pairs, test_index)):
        grid_in, grid_out = augmentation.apply(grid_in), augmentation.apply(grid_out)
        offset = (0, 0)
        if rng is not None and index != keep:
            offset = (rng.randint(ARC_SIDE - max(grid_in.shape[0], grid_out.shape[0]) + 1),
                      rng.randint(ARC_SIDE - max(grid_in.shape[1], grid_out.shape[1]) + 1))
        encoded.append((grid_to_tokens(grid_in, offset), grid_to_tokens(grid_out, offset), test_idx))
    return encoded


# --------------------------------------------------------------------------- reading


def load_puzzles(sources: list[str], wanted_subsets: set[str] | None) -> list[ArcPuzzle]:
    """Every puzzle of every source, in file order; a name may occur in one subset only."""
    puzzles: list[ArcPuzzle] = []
    for source in sources:
        path = Path(source)
        puzzles += read_puzzle_directory(path) if path.is_dir() else read_kaggle_prefix(source, wanted_subsets)
    if wanted_subsets is not None:
        found = {puzzle.subset for puzzle in puzzles}
        missing = sorted(wanted_subsets - found)
        if missing:
            raise InputError(f"--subsets: no subset {', '.join(missing)} in {', '.join(sources)} "
                             f"(found: {', '.join(sorted(found))})")
        puzzles = [puzzle for puzzle in puzzles if puzzle.subset in wanted_subsets]
    first_seen: dict[str, ArcPuzzle] = {}
    for puzzle in puzzles:
        if puzzle.name in first_seen:
            other = first_seen[puzzle.name]
            raise InputError(f"{puzzle.origin}: puzzle {puzzle.name!r} also appears in {other.origin}; "
                             "convert these subsets separately")
        first_seen[puzzle.name] = puzzle
    return puzzles


def read_kaggle_prefix(prefix: str, wanted_subsets: set[str] | None) -> list[ArcPuzzle]:
    """Puzzles of PREFIX_<subset>_challenges.json + _solutions.json, subsets in name order."""
    base = Path(prefix)
    found = {p.name[len(base.name) + 1 : -len("_challenges.json")]: p
             for p in base.parent.glob(f"{base.name}_*_challenges.json")}
    subsets = sorted(wanted_subsets) if wanted_subsets is not None else sorted(found)
    if not subsets:
        raise InputError(f"{prefix}: no such directory and no {base.name}_<subset>_challenges.json beside it")
    puzzles = []
    for subset in subsets:
        challenges = base.parent / f"{base.name}_{subset}_challenges.json"
        solutions = base.parent / f"{base.name}_{subset}_solutions.json"
        puzzles += _read_kaggle_subset(challenges, solutions, subset)
    return puzzles


def _read_kaggle_subset(challenges_path: Path, solutions_path: Path, subset: str) -> list[ArcPuzzle]:
    challenges = _load_json(challenges_path)
    solutions = _load_json(solutions_path)
    if not isinstance(challenges, dict) or not isinstance(solutions, dict):
        raise InputError(f"{challenges_path}: expected a JSON object of puzzle name → puzzle")
    puzzles = []
    for name, puzzle in challenges.items():
        if name not in solutions:
            raise InputError(f"{solutions_path}: no solutions for puzzle {name!r}")
        tests = _list(puzzle, "test", f"{challenges_path}: {name}")
        outputs = solutions[name]
        if not isinstance(outputs, list) or len(outputs) != len(tests):
            raise InputError(f"{solutions_path}: {name}: expected {len(tests)} solution grids, "
                             f"got {len(outputs) if isinstance(outputs, list) else type(outputs).__name__}")
        merged = {"train": puzzle.get("train"),
                  "test": [{**test, "output": output} if isinstance(test, dict) else test
                           for test, output in zip(tests, outputs)]}
        puzzles.append(_parse_puzzle(name, subset, merged, str(challenges_path)))
    return puzzles


def read_puzzle_directory(directory: Path) -> list[ArcPuzzle]:
    """<name>.json files of `directory` (subset = its name) and of each subdirectory."""
    folders = [directory] + sorted(p for p in directory.iterdir() if p.is_dir())
    puzzles = []
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            data = _load_json(path)
            name = data.get("name", path.stem) if isinstance(data, dict) else path.stem
            puzzles.append(_parse_puzzle(str(name), folder.name, data, str(path)))
    if not puzzles:
        raise InputError(f"{directory}: no puzzle JSON files in it or its subdirectories")
    return puzzles


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None


def _parse_puzzle(name: str, subset: str, data: object, origin: str) -> ArcPuzzle:
    where = f"{origin}: {name}"
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected an object with train and test pairs")
    pairs = {kind: [_parse_pair(pair, f"{where}: {kind}[{index}]")
                    for index, pair in enumerate(_list(data, kind, where))] for kind in ("train", "test")}
    if not pairs["train"] or not pairs["test"]:
        raise InputError(f"{where}: needs at least one train and one test pair")
    original = {kind: data[kind] for kind in ("train", "test")}
    return ArcPuzzle(name, subset, origin, pairs["train"], pairs["test"], original)


def _list(data: object, key: str, where: str) -> list:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise InputError(f"{where}: {key!r} must be a list of pairs")
    return value


def _parse_pair(pair: object, where: str) -> Pair:
    if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
        raise InputError(f"{where}: expected an object with 'input' and 'output' grids")
    return parse_grid(pair["input"], f"{where}.input"), parse_grid(pair["output"], f"{where}.output")
