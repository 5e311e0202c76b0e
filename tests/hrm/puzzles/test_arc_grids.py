import numpy as np
import pytest

from hrm.augment import (
    ArcAugmentation,
    ArcIdentifier,
    DihedralTransform,
    SudokuTransform,
    crop_tokens,
    dihedral_transform,
    grid_hash,
    grid_to_tokens,
    inverse_dihedral_transform,
    maze_transforms,
    parse_arc_identifier,
    tta_transform,
)
from hrm.errors import InputError

GRID = np.arange(6, dtype=np.uint8).reshape(2, 3)  # [[0 1 2] [3 4 5]]


@pytest.mark.parametrize(
    "tid, expected",
    [
        (0, [[0, 1, 2], [3, 4, 5]]),
        (1, [[2, 5], [1, 4], [0, 3]]),  # counter-clockwise
        (2, [[5, 4, 3], [2, 1, 0]]),
        (3, [[3, 0], [4, 1], [5, 2]]),
        (4, [[2, 1, 0], [5, 4, 3]]),
        (5, [[3, 4, 5], [0, 1, 2]]),
        (6, [[0, 3], [1, 4], [2, 5]]),
        (7, [[5, 2], [4, 1], [3, 0]]),
    ],
)
def test_dihedral_ids_are_the_reference_transforms(tid, expected):
    assert dihedral_transform(GRID, tid).tolist() == expected


@pytest.mark.parametrize("tid", range(8))
def test_inverse_dihedral_undoes_each_transform(tid):
    grid = np.random.default_rng(tid).integers(0, 10, (4, 7))
    assert np.array_equal(inverse_dihedral_transform(dihedral_transform(grid, tid), tid), grid)


def test_dihedral_transform_of_a_batch_transforms_each_grid():
    batch = np.random.default_rng(0).integers(0, 10, (3, 5, 5))
    for tid in range(8):
        whole = dihedral_transform(batch, tid)
        assert all(np.array_equal(whole[i], dihedral_transform(batch[i], tid)) for i in range(3))


def test_unknown_dihedral_id_is_refused():
    with pytest.raises(ValueError, match="0..7"):
        dihedral_transform(GRID, 8)


@pytest.mark.parametrize("tid", range(8))
def test_maze_transform_on_flat_sequences_round_trips(tid):
    seqs = np.random.default_rng(tid).integers(0, 6, (2, 900))
    transform = maze_transforms()[tid]
    moved = transform.apply(seqs)
    assert moved.shape == (2, 900)
    assert np.array_equal(transform.invert(moved), seqs)
    assert tid == 0 or not np.array_equal(moved, seqs)


def test_colour_permutation_maps_original_colour_to_the_digit_at_its_position():
    aug = ArcAugmentation(0, (0, 1, 2, 4, 3, 6, 5, 9, 8, 7))  # "0124365987"
    assert aug.apply(np.array([[3, 7, 0]])).tolist() == [[4, 9, 0]]
    assert aug.invert(np.array([[4, 9, 0]])).tolist() == [[3, 7, 0]]


def test_arc_augmentation_applies_colours_then_dihedral_and_inverts_exactly():
    rng = np.random.RandomState(3)
    grid = np.random.default_rng(1).integers(0, 10, (5, 8)).astype(np.uint8)
    for _ in range(20):
        aug = ArcAugmentation.random(rng)
        perm = np.array(aug.perm)
        assert np.array_equal(aug.apply(grid), dihedral_transform(perm[grid], aug.tid))
        assert np.array_equal(aug.invert(aug.apply(grid)), grid)


def test_random_arc_augmentation_keeps_black():
    rng = np.random.RandomState(0)
    assert all(ArcAugmentation.random(rng).perm[0] == 0 for _ in range(50))


@pytest.mark.parametrize(
    "identifier",
    ["007bbfb7|||t3|||0124365987", "007bbfb7_t3_0124365987"],
)
def test_both_identifier_conventions_parse_to_the_same_augmentation(identifier):
    parsed = parse_arc_identifier(identifier)
    assert parsed == ArcIdentifier("007bbfb7", ArcAugmentation(3, (0, 1, 2, 4, 3, 6, 5, 9, 8, 7)))


def test_plain_names_parse_as_the_identity_even_with_underscores():
    assert parse_arc_identifier("Concept_Above_Below1") == ArcIdentifier("Concept_Above_Below1")
    assert parse_arc_identifier("<blank>").augmentation.is_identity


def test_hrm_names_with_underscores_keep_the_whole_name():
    assert parse_arc_identifier("a_b_t1_0987654321").name == "a_b"


def test_formatting_and_parsing_round_trip_in_both_conventions():
    ident = ArcIdentifier("abc", ArcAugmentation(6, (0, 9, 8, 7, 6, 5, 4, 3, 2, 1)))
    assert ident.format("trm") == "abc|||t6|||0987654321"
    assert ident.format("hrm") == "abc_t6_0987654321"
    for convention in ("trm", "hrm"):
        assert parse_arc_identifier(ident.format(convention)) == ident
    assert ArcIdentifier("abc").format("trm") == "abc"


@pytest.mark.parametrize("identifier", ["x|||t9|||0123456789", "x|||t1|||0123456788", "x|||0123456789"])
def test_malformed_trm_identifier_is_an_input_error_naming_it(identifier):
    with pytest.raises(InputError, match="identifiers.json.*malformed"):
        parse_arc_identifier(identifier)


def test_grid_tokens_put_colours_top_left_with_eos_below_and_right():
    tokens = grid_to_tokens(np.array([[0, 9], [5, 1]])).reshape(30, 30)
    assert tokens[:3, :3].tolist() == [[2, 11, 1], [7, 3, 1], [1, 1, 0]]
    assert tokens[3:].sum() == 0 and tokens[:, 3:].sum() == 0


def test_grid_tokens_with_an_offset_shift_grid_and_eos_together():
    tokens = grid_to_tokens(np.array([[4]]), offset=(2, 1)).reshape(30, 30)
    assert tokens[2, 1] == 6 and tokens[3, 1] == 1 and tokens[2, 2] == 1
    assert tokens.sum() == 6 + 1 + 1


def test_full_30_by_30_grid_has_no_eos():
    grid = np.full((30, 30), 3)
    assert np.array_equal(grid_to_tokens(grid), np.full(900, 5))
    assert np.array_equal(crop_tokens(grid_to_tokens(grid)), grid)


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (30, 2), (12, 30)])
def test_crop_recovers_a_grid_from_its_tokens(shape):
    grid = np.random.default_rng(0).integers(0, 10, shape).astype(np.uint8)
    assert np.array_equal(crop_tokens(grid_to_tokens(grid)), grid)


def test_crop_keeps_the_largest_rectangle_with_a_shrinking_width():
    canvas = np.zeros((30, 30), dtype=np.uint8)
    canvas[0, :5] = 2  # row 0: width 5
    canvas[1, :2] = 3  # row 1: width 2 -> 2x2 = 4 < 5
    assert crop_tokens(canvas).tolist() == [[0, 0, 0, 0, 0]]
    canvas[2, :4] = 4  # width stays 2 (never grows): 3x2 = 6 > 5
    assert crop_tokens(canvas).tolist() == [[0, 0], [1, 1], [2, 2]]


def test_crop_takes_the_first_of_equal_areas():
    canvas = np.zeros((30, 30), dtype=np.uint8)
    canvas[0, :4] = 2
    canvas[1, :2] = 2  # 1x4 and 2x2 tie: the reference keeps the first (1x4)
    assert crop_tokens(canvas).shape == (1, 4)


def test_crop_of_a_canvas_starting_with_eos_is_empty():
    assert crop_tokens(np.ones(900, dtype=np.uint8)).shape == (0, 0)


def test_grid_hash_distinguishes_shapes_of_the_same_bytes():
    flat = np.zeros((1, 4), dtype=np.uint8)
    assert grid_hash(flat) != grid_hash(flat.reshape(2, 2))
    assert grid_hash(flat) == grid_hash(np.zeros((1, 4), dtype=np.int64))


def test_grid_hash_is_the_reference_sha256_of_shape_bytes_and_cells():
    import hashlib

    grid = np.array([[1, 2, 3]], dtype=np.uint8)
    assert grid_hash(grid) == hashlib.sha256(b"\x01\x03\x01\x02\x03").hexdigest()


def test_sudoku_transform_is_deterministic_from_its_seed():
    assert SudokuTransform.from_seed(7) == SudokuTransform.from_seed(7)
    assert SudokuTransform.from_seed(7) != SudokuTransform.from_seed(8)


@pytest.mark.parametrize("seed", range(10))
def test_sudoku_transform_inverts_on_boards_and_flat_batches(seed):
    transform = SudokuTransform.from_seed(seed)
    boards = np.random.default_rng(seed).integers(1, 11, (4, 81))
    moved = transform.apply(boards)
    assert moved.shape == (4, 81)
    assert np.array_equal(transform.invert(moved), boards)
    assert np.array_equal(transform.invert(transform.apply(boards[0].reshape(9, 9))), boards[0].reshape(9, 9))


def test_sudoku_transform_follows_the_reference_position_and_digit_mapping():
    transform = SudokuTransform(
        digit_map=(0, 2, 3, 4, 5, 6, 7, 8, 9, 1),
        row_perm=(3, 4, 5, 0, 1, 2, 6, 7, 8),
        col_perm=(0, 1, 2, 3, 4, 5, 8, 7, 6),
        transpose=True,
    )
    digits = np.random.default_rng(0).integers(0, 10, (9, 9))
    expected = np.array(transform.digit_map)[digits.T[list(transform.row_perm)][:, list(transform.col_perm)]]
    assert np.array_equal(transform.apply(digits + 1), expected + 1)


def test_sudoku_transform_keeps_blank_and_pad_tokens():
    transform = SudokuTransform.from_seed(0)
    assert np.all(transform.apply(np.ones((9, 9), dtype=np.int64)) == 1)
    assert np.all(transform.apply(np.zeros(81, dtype=np.int64)) == 0)


def test_sudoku_transform_rejects_a_row_permutation_that_breaks_bands():
    with pytest.raises(ValueError, match="row_perm"):
        SudokuTransform(row_perm=(0, 1, 3, 2, 4, 5, 6, 7, 8))


def test_dihedral_transform_object_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="trailing shape"):
        DihedralTransform(1, side=30).apply(np.zeros(81))


def test_sudoku_transform_with_box_3_draws_the_same_shuffles_as_before_box_sizes_existed():
    # The draws of the 9x9 reference order, spelled out: box=3 must not change them.
    rng = np.random.RandomState(5)
    digit_map = (0, *(int(d) for d in rng.permutation(np.arange(1, 10))))
    transpose = bool(rng.rand() < 0.5)
    row_perm = tuple(int(b * 3 + r) for b in rng.permutation(3) for r in rng.permutation(3))
    col_perm = tuple(int(s * 3 + c) for s in rng.permutation(3) for c in rng.permutation(3))
    assert SudokuTransform.from_seed(5) == SudokuTransform(digit_map, row_perm, col_perm, transpose)


@pytest.mark.parametrize("seed", range(6))
def test_4x4_sudoku_transform_inverts_and_keeps_a_solved_board_valid(seed):
    transform = SudokuTransform.from_seed(seed, box=2)
    solved = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
    moved_tokens = transform.apply((solved + 1).reshape(16))
    assert np.array_equal(transform.invert(moved_tokens), (solved + 1).reshape(16))
    board = moved_tokens.reshape(4, 4) - 1
    groups = [*board, *board.T, *(board[r:r + 2, c:c + 2].reshape(-1) for r in (0, 2) for c in (0, 2))]
    assert all(sorted(g) == [1, 2, 3, 4] for g in groups)


def test_4x4_sudoku_transform_keeps_the_blank_token_and_rejects_9x9_permutations():
    assert np.all(SudokuTransform.from_seed(1, box=2).apply(np.ones(16, dtype=np.int64)) == 1)
    with pytest.raises(ValueError, match="row_perm"):
        SudokuTransform((0, 2, 1, 3, 4), (0, 2, 1, 3), (1, 0, 3, 2), box=2)
    with pytest.raises(ValueError, match="digit_map"):
        SudokuTransform(box=2)


def test_tta_copies_are_distinct_deterministic_and_refuse_impossible_ones():
    first = [tta_transform("sudoku", 4, copy, seed=0) for copy in (1, 2, 3)]
    assert first == [tta_transform("sudoku", 4, copy, seed=0) for copy in (1, 2, 3)]
    assert len(set(first)) == 3
    assert tta_transform("maze", 30, 3, seed=0) == DihedralTransform(3, 30)
    with pytest.raises(ValueError, match="7 non-identity"):
        tta_transform("maze", 30, 8, seed=0)
    with pytest.raises(ValueError, match="copy 0"):
        tta_transform("sudoku", 9, 0, seed=0)
    with pytest.raises(ValueError, match="must be a square"):
        tta_transform("sudoku", 5, 1, seed=0)
