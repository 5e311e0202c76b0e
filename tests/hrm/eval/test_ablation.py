import numpy as np

from hrm.eval.ablation import ablate_identifiers, shuffled_identifiers


def test_blank_gives_every_example_the_blank_identifier():
    ids = np.array([3, 1, 4, 1, 5])
    assert ablate_identifiers(ids, "blank", 6, 0).tolist() == [0] * 5
    assert ablate_identifiers(ids, "as-is", 6, 0) is ids


def test_shuffled_gives_every_puzzle_another_puzzles_identifier_the_same_wherever_it_is_evaluated():
    table = shuffled_identifiers(50, 0)
    assert table[0] == 0  # blank stays blank
    assert sorted(table[1:].tolist()) == list(range(1, 50))  # a permutation of the others
    assert not np.any(table[1:] == np.arange(1, 50))  # none keeps its own
    ids = np.array([7, 7, 12, 0])
    first, again = ablate_identifiers(ids, "shuffled", 50, 0), ablate_identifiers(ids[::-1], "shuffled", 50, 0)
    assert first.tolist() == again[::-1].tolist() and first[0] == first[1] != 7


def test_with_a_single_identifier_besides_blank_there_is_nothing_to_shuffle():
    assert shuffled_identifiers(2, 0).tolist() == [0, 1]
