"""Dihedral transforms of square grids (mazes, ARC) and the shape checks around them."""

import numpy as np
import pytest

from hrm.puzzles.grids import DihedralTransform, dihedral_transform, inverse_dihedral_transform

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
    transform = DihedralTransform(tid, 30)
    moved = transform.apply(seqs)
    assert moved.shape == (2, 900)
    assert np.array_equal(transform.invert(moved), seqs)
    assert tid == 0 or not np.array_equal(moved, seqs)


def test_dihedral_transform_object_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="trailing shape"):
        DihedralTransform(1, side=30).apply(np.zeros(81))
