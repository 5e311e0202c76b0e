"""Puzzle kinds: per kind its raw format, its encoding as the reference builders do it, its
invertible transforms and (for Sudoku and mazes) a generator. `publish` is what every
converter shares; the command lines live in `jobs.convert`."""
