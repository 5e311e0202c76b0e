import numpy as np
import pytest

from hrm.errors import InputError
from hrm.puzzles.arc_grids import (
    ArcAugmentation,
    ArcIdentifier,
    crop_tokens,
    grid_hash,
    grid_to_tokens,
    parse_arc_identifier,
)
from hrm.puzzles.grids import dihedral_transform


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
