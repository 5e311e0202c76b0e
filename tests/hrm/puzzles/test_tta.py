import pytest

from hrm.puzzles.grids import DihedralTransform
from hrm.puzzles.tta import tta_transform


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
