"""The overlap audit on datasets with planted overlaps: exact copies and augmented copies of
train examples in the test split are found, at the input and the input+label level, and
nothing else is: not near-misses (one cell changed), not transforms outside the family's
augmentations, not fresh examples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hrm.audits import canonical
from hrm.audits.canonical import (
    arc_boxes,
    arc_forms,
    maze_forms,
    sudoku_equivalent,
    sudoku_invariants,
    transformed_cells,
)
from hrm.audits.overlap import OverlapReport, audit_overlap
from hrm.data.schema import DatasetMetadata
from hrm.data.writer import write_dataset
from hrm.errors import InputError
from hrm.puzzles.arc_grids import ArcAugmentation, grid_to_tokens
from hrm.puzzles.grids import DihedralTransform, dihedral_transform
from hrm.puzzles.maze import MazeGrid, encode_mazes, generate_mazes
from hrm.puzzles.publish import single_example_puzzles
from hrm.puzzles.sudoku import SudokuTransform
from hrm.puzzles.sudoku_generator import generate_sudokus, sudoku_puzzle_arrays


def write(uri, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], vocab_size: int,
          kind: str | None = None, format: str = "parquet") -> str:
    splits = {"train": single_example_puzzles(*train), "test": single_example_puzzles(*test)}
    meta = {name: DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size,
                                  seq_len=arrays.inputs.shape[1], num_puzzle_identifiers=1,
                                  total_groups=len(arrays.inputs), mean_puzzle_examples=1.0, sets=["all"])
            for name, arrays in splits.items()}
    write_dataset(uri, {name: {"all": arrays} for name, arrays in splits.items()}, meta, ["<blank>"], format=format,
                  summary={"kind": kind} if kind else None)
    return str(uri)


def found(report: OverlapReport) -> dict[str, set[str]]:
    return {f"{field}.{level}": set(getattr(getattr(report, field), level).ids)
            for field in ("exact_in_train", "augmented_in_train") for level in ("input", "input_label")}


def ids(*positions: int) -> set[str]:
    return {f"all/{p}" for p in positions}


# --------------------------------------------------------------------------- Sudoku


@pytest.fixture(scope="module")
def sudoku9() -> tuple[np.ndarray, np.ndarray]:
    arrays = sudoku_puzzle_arrays(generate_sudokus(36, 26, box=3, seed=7))
    return arrays.inputs.astype(np.uint8), arrays.labels.astype(np.uint8)


def planted_sudoku(inputs: np.ndarray, labels: np.ndarray, box: int, train_count: int):
    """Train: the first `train_count` puzzles. Test (positions): 0 fresh, 1 exact copy of train 0,
    2 shuffle of train 1 (label shuffled alike), 3 shuffle of train 2's input with train 3's
    label shuffled (input matches, the pair does not), 4 a near-miss of train 4 (one given
    changed), 5 fresh, 6 a shuffle of test 0 (a duplicate within test), 7 train 5 with
    different digits only (relabelled: augmented)."""
    rng = np.random.RandomState(3)
    shuffle = lambda: SudokuTransform.random(rng, box)
    train = inputs[:train_count], labels[:train_count]
    fresh = inputs[train_count:]
    t1 = shuffle()
    t2 = shuffle()
    changed = inputs[4].copy()
    givens = np.flatnonzero(changed >= 2)
    changed[givens[0]] = 2 + (changed[givens[0]] - 1) % (box * box)  # another digit, same pattern
    t6 = shuffle()
    relabel = SudokuTransform(tuple([0, *np.roll(np.arange(1, box * box + 1), 1)]), tuple(range(box * box)),
                              tuple(range(box * box)), False, box)
    test_in = [fresh[0], inputs[0], t1.apply(inputs[1]), t2.apply(inputs[2]), changed, fresh[1],
               t6.apply(fresh[0]), relabel.apply(inputs[5])]
    test_label = [labels[train_count], labels[0], t1.apply(labels[1]), t2.apply(labels[3]), labels[4],
                  labels[train_count + 1], t6.apply(labels[train_count]), relabel.apply(labels[5])]
    return train, (np.stack(test_in), np.stack(test_label))


def test_sudoku_overlap_finds_exactly_the_planted_copies_on_9x9_boards(tmp_path, sudoku9):
    train, test = planted_sudoku(*sudoku9, box=3, train_count=30)
    report = audit_overlap(write(tmp_path / "d", train, test, vocab_size=11, kind="sudoku-csv"))
    assert report.family == "sudoku" and report.test_examples == 8 and report.reference_examples == 30
    assert found(report) == {"exact_in_train.input": ids(1), "exact_in_train.input_label": ids(1),
                             "augmented_in_train.input": ids(2, 3, 7), "augmented_in_train.input_label": ids(2, 7)}
    assert report.augmented_in_train.input.matched_ids == ["train/all/1", "train/all/2", "train/all/5"]
    assert report.duplicates_within_test.input.ids == [["all/0", "all/6"]]
    assert report.duplicates_within_test.input_label.ids == [["all/0", "all/6"]]


def brute_force_sudoku_overlaps(train_inputs: np.ndarray, test_inputs: np.ndarray, box: int) -> set[int]:
    """Test positions whose input some transform maps onto a train input: every transform of
    the group tried (feasible for 4x4: 8 x 8 x 2 x 24)."""
    side = box * box
    orders = list(itertools.permutations(range(box)))
    perms = [tuple(b[i] * box + r[i][k] for i in range(box) for k in range(box))
             for b in orders for r in itertools.product(orders, repeat=box)]
    train = {row.tobytes() for row in train_inputs}
    hits = set()
    for position, row in enumerate(test_inputs):
        for digits in itertools.permutations(range(1, side + 1)):
            for rows, cols, transpose in itertools.product(perms, perms, (False, True)):
                moved = SudokuTransform((0, *digits), rows, cols, transpose, box).apply(row)
                if moved.tobytes() in train:
                    hits.add(position)
                    break
            if position in hits:
                break
    return hits


def test_sudoku_overlap_on_4x4_boards_agrees_with_trying_every_transform(tmp_path):
    arrays = sudoku_puzzle_arrays(generate_sudokus(24, 8, box=2, seed=11))
    inputs, labels = arrays.inputs.astype(np.uint8), arrays.labels.astype(np.uint8)
    train, test = planted_sudoku(inputs, labels, box=2, train_count=16)
    report = audit_overlap(write(tmp_path / "d", train, test, vocab_size=6, kind="sudoku-csv"))
    reported = {int(i.split("/")[1]) for i in report.exact_in_train.input.ids + report.augmented_in_train.input.ids}
    assert {1, 2, 3, 7} <= reported
    assert reported == brute_force_sudoku_overlaps(train[0], test[0], box=2)


@pytest.mark.parametrize("search", ["direct", "band by band"])
def test_a_sudoku_shuffle_keeps_the_bucket_key_and_is_confirmed_while_a_changed_given_is_not(sudoku9, search,
                                                                                           monkeypatch):
    if search == "band by band":  # what boards with many rows of equal given counts take
        monkeypatch.setattr(canonical, "DIRECT_LIMIT", 0)
    inputs, labels = sudoku9
    rng = np.random.RandomState(0)
    for k in range(5):
        shuffle = SudokuTransform.random(rng)
        moved, moved_label = shuffle.apply(np.stack([inputs[k], labels[k]]))
        assert sudoku_invariants(moved[None], 3)[0] == sudoku_invariants(inputs[k:k + 1], 3)[0]
        assert sudoku_equivalent(inputs[k], moved, 3)
        assert sudoku_equivalent(np.stack([inputs[k], labels[k]]), np.stack([moved, moved_label]), 3)
        assert not sudoku_equivalent(np.stack([inputs[k], labels[k]]), np.stack([moved, labels[k]]), 3)
        blank = np.flatnonzero(moved == 1)[0]
        added = moved.copy()
        added[blank] = moved_label[blank]  # one more given: a different puzzle
        assert not sudoku_equivalent(inputs[k], added, 3)


# --------------------------------------------------------------------------- mazes


def test_maze_overlap_finds_exact_and_dihedral_copies_and_not_a_moved_wall(tmp_path):
    arrays = encode_mazes(_mazes(12))
    inputs, labels = arrays.inputs.astype(np.uint8), arrays.labels.astype(np.uint8)
    side = 9
    train = inputs[:8], labels[:8]
    rot = DihedralTransform(1, side)
    flip = DihedralTransform(6, side)
    wall = np.flatnonzero(inputs[3] == 1)
    opened = inputs[3].copy()
    opened[wall[len(wall) // 2]] = 2  # a wall opened: a near-miss
    test_in = [inputs[8], inputs[0], rot.apply(inputs[1]), flip.apply(inputs[2]), opened, inputs[9],
               DihedralTransform(2, side).apply(inputs[8])]
    test_label = [labels[8], labels[0], rot.apply(labels[1]), flip.apply(labels[4]), labels[3], labels[9],
                  DihedralTransform(2, side).apply(labels[8])]
    report = audit_overlap(write(tmp_path / "d", train, (np.stack(test_in), np.stack(test_label)), vocab_size=6,
                                 format="reference"))
    assert report.family == "maze", report.family_source
    assert found(report) == {"exact_in_train.input": ids(1), "exact_in_train.input_label": ids(1),
                             "augmented_in_train.input": ids(2, 3), "augmented_in_train.input_label": ids(2)}
    assert report.duplicates_within_test.input.ids == [["all/0", "all/6"]]


def _mazes(count: int) -> list[MazeGrid]:
    return [MazeGrid(list(m.question), list(m.answer), "generated", f"maze {i}")
            for i, m in enumerate(generate_mazes(count, 9, seed=5))]


def test_maze_forms_are_equal_over_the_eight_dihedral_transforms():
    arrays = encode_mazes(_mazes(3))
    inputs, labels = arrays.inputs, arrays.labels
    base = maze_forms(inputs, labels, 9)
    for tid in range(8):
        moved = maze_forms(DihedralTransform(tid, 9).apply(inputs), DihedralTransform(tid, 9).apply(labels), 9)
        assert (moved[0] == base[0]).all() and (moved[1] == base[1]).all()


# --------------------------------------------------------------------------- ARC


def random_grid(rng: np.random.Generator, low: int = 3, high: int = 12) -> np.ndarray:
    h, w = rng.integers(low, high, size=2)
    return np.where(rng.random((h, w)) < 0.4, 0, rng.integers(1, 10, size=(h, w))).astype(np.uint8)


def test_arc_overlap_finds_augmented_and_translated_copies_but_not_a_moved_background(tmp_path):
    rng = np.random.default_rng(2)
    pairs = [(random_grid(rng), random_grid(rng)) for _ in range(12)]
    canvas = lambda g, offset=(0, 0): grid_to_tokens(g, offset)
    train_in = np.stack([canvas(i, (1, 2) if k % 2 else (0, 0)) for k, (i, _) in enumerate(pairs[:8])])
    train_out = np.stack([canvas(o, (1, 2) if k % 2 else (0, 0)) for k, (_, o) in enumerate(pairs[:8])])
    aug = ArcAugmentation(5, (0, 3, 1, 2, 9, 8, 7, 6, 5, 4))
    swap0 = np.array([1, 0, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.uint8)  # colour 0 moved: not an augmentation
    grid4 = pairs[4][0].copy()
    grid4[0, 0] = (grid4[0, 0] + 1) % 10
    test = [
        (canvas(pairs[8][0]), canvas(pairs[8][1])),  # 0 fresh
        (train_in[1], train_out[1]),  # 1 exact copy (translated in train too)
        (canvas(aug.apply(pairs[2][0])), canvas(aug.apply(pairs[2][1]))),  # 2 augmented pair
        (canvas(pairs[3][0]), canvas(pairs[3][1])),  # 3 train 3 at the top-left: translation only
        (canvas(grid4), canvas(pairs[4][1])),  # 4 near-miss: one cell changed
        (canvas(swap0[pairs[5][0]]), canvas(swap0[pairs[5][1]])),  # 5 colours 0 and 1 swapped
        (canvas(aug.apply(pairs[6][0])), canvas(pairs[9][1])),  # 6 input augmented, another output
        (canvas(ArcAugmentation(3).apply(pairs[8][0]), (2, 2)), canvas(ArcAugmentation(3).apply(pairs[8][1]))),  # 7
    ]
    report = audit_overlap(write(tmp_path / "d", (train_in, train_out),
                                 (np.stack([t[0] for t in test]), np.stack([t[1] for t in test])),
                                 vocab_size=12, kind="arc"))
    assert report.family == "arc"
    assert found(report) == {"exact_in_train.input": ids(1), "exact_in_train.input_label": ids(1),
                             "augmented_in_train.input": ids(2, 3, 6), "augmented_in_train.input_label": ids(2, 3)}
    assert report.duplicates_within_test.input_label.ids == [["all/0", "all/7"]]


def test_arc_forms_are_equal_over_random_augmentations_and_translations():
    rng = np.random.default_rng(4)
    legacy = np.random.RandomState(4)
    grids = [(random_grid(rng, 1, 30), random_grid(rng, 1, 30)) for _ in range(30)]
    inputs = np.stack([grid_to_tokens(i) for i, _ in grids])
    labels = np.stack([grid_to_tokens(o) for _, o in grids])
    base_in, base_pair = arc_forms(inputs, labels, 30)
    assert len(set(base_pair.tolist())) == 30
    for _ in range(3):
        augs = [ArcAugmentation.random(legacy) for _ in grids]
        moved_in = np.stack([grid_to_tokens(a.apply(i), (0, 30 - max(i.shape))) for a, (i, _) in zip(augs, grids)])
        moved_out = np.stack([grid_to_tokens(a.apply(o)) for a, (_, o) in zip(augs, grids)])
        form_in, form_pair = arc_forms(moved_in, moved_out, 30)
        assert (form_in == base_in).all() and (form_pair == base_pair).all()


def test_transformed_cells_read_each_dihedral_transform_as_the_puzzle_code_makes_it():
    grid = np.arange(15, dtype=np.uint8).reshape(3, 5) % 10
    tokens = grid_to_tokens(grid, offset=(4, 7))[None]
    box = arc_boxes(tokens, 30)
    for tid in range(8):
        cells, shape = transformed_cells(tokens, box, tid, 20, 30)
        expected = dihedral_transform(grid, tid)
        assert tuple(shape[0]) == expected.shape
        assert cells[0, :15].tolist() == expected.reshape(-1).tolist() and (cells[0, 15:] == 255).all()


# --------------------------------------------------------------------------- other data and bad input


def test_text_data_is_matched_exactly_only_and_the_report_says_so(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(2, 500, size=(10, 12)), rng.integers(2, 500, size=(10, 12))
    test = (np.concatenate([train[0][[3]], rng.integers(2, 500, size=(2, 12)), train[0][[3]]]),
            np.concatenate([train[1][[3]], rng.integers(2, 500, size=(2, 12)), train[1][[4]]]))
    report = audit_overlap(write(tmp_path / "d", train, test, vocab_size=500, kind="jsonl"))
    assert report.family == "exact" and "exact matching only" in report.canonicalisation
    assert found(report) == {"exact_in_train.input": ids(0, 3), "exact_in_train.input_label": ids(0),
                             "augmented_in_train.input": set(), "augmented_in_train.input_label": set()}
    assert report.duplicates_within_test.input.ids == [["all/0", "all/3"]]
    assert report.duplicates_within_test.input_label.groups == 0


def test_against_another_dataset_matches_every_split_of_it(tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.integers(2, 50, size=(6, 8)), rng.integers(2, 50, size=(6, 8))
    data = write(tmp_path / "a", (rows[0][:2], rows[1][:2]), (rows[0][2:], rows[1][2:]), vocab_size=50)
    other = write(tmp_path / "b", (rows[0][[2]], rows[1][[2]]), (rows[0][[5]], rows[1][[5]]), vocab_size=50)
    report = audit_overlap(data, against=other)
    assert report.exact_in_train.input_label.ids == ["all/0", "all/3"]
    assert report.exact_in_train.input_label.matched_ids == ["train/all/0", "test/all/0"]


def test_a_dataset_without_a_train_split_and_no_other_is_refused_naming_it(tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.integers(2, 50, size=(3, 8))
    arrays = single_example_puzzles(rows, rows)
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=50, seq_len=8,
                           num_puzzle_identifiers=1, total_groups=3, mean_puzzle_examples=1.0, sets=["all"])
    write_dataset(tmp_path / "d", {"test": {"all": arrays}}, {"test": meta}, ["<blank>"])
    with pytest.raises(InputError, match=r"/d: no split 'train'.*--against"):
        audit_overlap(str(tmp_path / "d"))


def test_datasets_of_different_sequence_lengths_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    short, long = rng.integers(2, 9, size=(4, 8)), rng.integers(2, 9, size=(4, 9))
    data = write(tmp_path / "a", (short[:2], short[:2]), (short[2:], short[2:]), vocab_size=10)
    other = write(tmp_path / "b", (long[:2], long[:2]), (long[2:], long[2:]), vocab_size=10)
    with pytest.raises(InputError, match="seq_len 9 but the test split .* has 8"):
        audit_overlap(data, against=other)


def same_up_to_augmentation(xs: tuple[np.ndarray, ...], ys: tuple[np.ndarray, ...]) -> bool:
    """Some dihedral transform t and bijection of colours fixing 0 take grids xs to grids ys
    (all by the same t and bijection): tried one by one."""
    for tid in range(8):
        moved = [dihedral_transform(x, tid) for x in xs]
        if any(m.shape != y.shape for m, y in zip(moved, ys)):
            continue
        pairs = zip(np.concatenate([m.reshape(-1) for m in moved]).tolist(),
                    np.concatenate([y.reshape(-1) for y in ys]).tolist())
        forward, backward = {0: 0}, {0: 0}
        if all(forward.setdefault(a, b) == b and backward.setdefault(b, a) == a for a, b in pairs):
            return True
    return False


def small_grids(shapes, colours=(0, 1, 2)) -> list[np.ndarray]:
    return [np.array(cells, dtype=np.uint8).reshape(shape) for shape in shapes
            for cells in itertools.product(colours, repeat=shape[0] * shape[1])]


def test_arc_forms_part_small_grids_and_pairs_exactly_as_trying_every_transform_does():
    rng = np.random.default_rng(8)
    offset = lambda: tuple(int(v) for v in rng.integers(0, 5, size=2))
    grids = small_grids(((1, 2), (2, 1), (2, 2), (1, 3)))
    tokens = np.stack([grid_to_tokens(g, offset()) for g in grids])
    forms, _ = arc_forms(tokens, tokens, 30)
    for i, j in itertools.combinations(range(len(grids)), 2):
        assert (forms[i] == forms[j]) == same_up_to_augmentation((grids[i],), (grids[j],)), (grids[i], grids[j])
    pairs = list(itertools.product(small_grids(((1, 2), (2, 1))), small_grids(((1, 1), (1, 2)))))
    _, forms = arc_forms(np.stack([grid_to_tokens(i, offset()) for i, _ in pairs]),
                         np.stack([grid_to_tokens(o, offset()) for _, o in pairs]), 30)
    for i, j in itertools.combinations(range(len(pairs)), 2):
        assert (forms[i] == forms[j]) == same_up_to_augmentation(pairs[i], pairs[j]), (pairs[i], pairs[j])


def test_a_grid_family_forced_on_a_wide_vocabulary_falls_back_to_exact_matching(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.integers(2, 1000, size=(4, 81))
    data = write(tmp_path / "d", (rows[:2], rows[:2]), (rows[2:], rows[2:]), vocab_size=1000)
    report = audit_overlap(data, family="sudoku")
    assert report.family == "exact" and "vocab 1000" in report.family_source


def test_against_a_dataset_of_another_family_is_refused_unless_the_family_is_forced(tmp_path, sudoku9):
    inputs, labels = sudoku9
    data = write(tmp_path / "s", (inputs[:4], labels[:4]), (inputs[4:8], labels[4:8]), vocab_size=11, kind="sudoku-csv")
    mazes = encode_mazes(_mazes(4))
    other = write(tmp_path / "m", (mazes.inputs[:2], mazes.labels[:2]), (mazes.inputs[2:], mazes.labels[2:]),
                  vocab_size=6, kind="maze")
    with pytest.raises(InputError, match=r"/m: holds maze data but .*/s holds sudoku data"):
        audit_overlap(data, against=other)
    assert audit_overlap(data, against=other, family="exact").exact_in_train.input.count == 0


# --------------------------------------------------------------------------- worker processes


@pytest.mark.parametrize("family", ["arc", "sudoku"])
def test_two_worker_processes_give_the_same_report_as_one(tmp_path, monkeypatch, family):
    from hrm.audits import overlap

    from jobs.bench_overlap import write_planted_arc, write_planted_sudoku

    monkeypatch.setattr(overlap, "CHUNK_TOKENS", 256 * (900 if family == "arc" else 81))  # 256 examples a chunk
    maker = write_planted_arc if family == "arc" else write_planted_sudoku
    maker(tmp_path / "d", 1100, 30, seed=5)  # 5 chunks a split: 10 in all, room for two workers
    alone = audit_overlap(str(tmp_path / "d"), workers=1)
    shared = audit_overlap(str(tmp_path / "d"), workers=2)
    assert (alone.workers, alone.worker_peak_rss_bytes) == (1, 0)
    # keyed in worker processes (one may take every chunk before the other has started)
    assert shared.workers in (1, 2) and shared.worker_peak_rss_bytes > 0
    assert alone.augmented_in_train.input_label.count == 30
    drop = {"seconds", "workers", "worker_peak_rss_bytes"}
    assert shared.model_dump(exclude=drop) == alone.model_dump(exclude=drop)


def test_arc_forms_of_grids_with_blank_borders_are_the_same_with_and_without_the_longer_prefix_round(monkeypatch):
    rng = np.random.default_rng(9)
    grids = []
    for _ in range(60):  # a blank border ties the first cells of several transforms: the longer round prunes them
        h, w = (int(v) for v in rng.integers(10, 31, size=2))
        grid = np.zeros((h, w), np.uint8)
        grid[3:h - 3, 3:w - 3] = np.where(rng.random((h - 6, w - 6)) < 0.4, 0, rng.integers(1, 10, size=(h - 6, w - 6)))
        grids.append(grid)
    inputs = np.stack([grid_to_tokens(g) for g in grids])
    labels = np.stack([grid_to_tokens(g[::-1]) for g in grids])
    read = canonical.read_transformed
    full_keys = []  # rows of full keys read (past the longer prefix)
    monkeypatch.setattr(canonical, "read_transformed", lambda values, box, rows, tids, length, side: (
        full_keys.append(len(rows)) if length > 128 else None) or read(values, box, rows, tids, length, side))
    pruned = arc_forms(inputs, labels, 30)
    pruned_keys, full_keys[:] = sum(full_keys), []
    monkeypatch.setattr(canonical, "REFINE_CELLS", ())
    assert all((a == b).all() for a, b in zip(pruned, arc_forms(inputs, labels, 30)))
    assert pruned_keys < sum(full_keys)
