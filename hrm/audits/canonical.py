"""Canonical forms of puzzle examples up to their dataset's own augmentations, for the overlap
audit (`hrm.audits.overlap`): two examples get the same form exactly when one is an augmented
copy of the other. Everything works on token rows, vectorised over a chunk of examples.

Digests. A form is reduced to a 128-bit BLAKE2b digest of its bytes; equal forms give equal
digests, and two different forms among N collide with probability below N² / 2¹²⁹ (1e-27 for
a million examples): "equal digests" stands for "equal forms".

Exact. The token row itself (input; input then label), in one token dtype for both datasets
compared (HRM stores test and train inputs in different integer widths).

Mazes (square grids): the group is the 8 dihedral transforms D4. The form is the
lexicographic minimum of the 8 transformed grids (input; input then label, transformed
together). It is exact: the set {t(x) : t in D4} is the orbit of x, equal for every member of
the orbit, so its minimum is an invariant; and the minimum is itself a member of the orbit, so
equal minima put two examples in the same orbit.

ARC: the group is D4 × permutations of colours 1..9 (colour 0, the background, stays: both the
HRM and the TRM builder permute 1..9 only), and translation on the canvas (the reference
translates training pairs; a grid's position carries no content). An example is decoded to
its input and output grids (the bounding box of colour tokens; the eos/pad frame is the
encoding, not content). For each t in D4, transform both grids, then relabel colours 1..9 in
order of first appearance reading the input then the output row by row (0 and anything that
is not a colour keep their value); the key of t is (shapes, relabelled cells), and the form is
the minimum key over t. Argument: colour permutations commute with D4, so the orbit of x is
the union over t of the colour-orbits of t(x). Relabelling by first appearance maps a
sequence to the same result as any colour permutation of it (first appearances are at the same
positions) and two sequences with the same relabelling differ by the colour permutation that
composes one relabelling with the other's inverse: it is an exact canonical form of the colour
orbit. So {relabel(t(x)) : t in D4} is the same set for every member of x's orbit (applying
(s, π) to x permutes t into t·s and relabel removes π), its minimum is an invariant, and equal
minima mean relabel(t(x)) = relabel(t'(y)), i.e. y = t'⁻¹ π t x for some colour permutation π:
the same orbit. The input-only form is the same construction on the input grid alone
(relabelling a prefix by first appearance gives the prefix of the relabelled whole).

Sudoku: the group (digit relabelling × band and row-in-band permutations × stack and
column-in-stack permutations × transpose; 1.2e12 elements for 9x9) is too large to take a
minimum over. Instead `sudoku_invariants` is a key that is exactly invariant under the group,
used only to put candidates in one bucket, and `sudoku_equivalent` decides exactly whether
one board is a transform of another by searching the geometric transforms with a digit
bijection: a match is reported only when that search finds a witness.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from functools import lru_cache

import numpy as np

from hrm.puzzles.grids import dihedral_transform

DIGEST = np.dtype("V16")
OUTSIDE = 255  # a cell outside a grid (ARC canvas) or a column past the row's end


# --------------------------------------------------------------------------- digests


def digest_rows(rows: np.ndarray) -> np.ndarray:
    """A 128-bit BLAKE2b digest of every row's bytes: [n] of dtype V16."""
    rows = np.ascontiguousarray(rows)
    n = len(rows)
    width = rows.itemsize * (rows.size // n if n else 0)
    data = memoryview(rows.reshape(-1)).cast("B")
    digests = b"".join(hashlib.blake2b(data[i * width:(i + 1) * width], digest_size=16).digest() for i in range(n))
    return np.frombuffer(digests, dtype=DIGEST).copy()


def digest_ragged(flat: np.ndarray, lengths: np.ndarray, headers: np.ndarray) -> np.ndarray:
    """Digest of row i = its header row's bytes then the next lengths[i] bytes of `flat`."""
    data = memoryview(np.ascontiguousarray(flat, dtype=np.uint8)).cast("B")
    heads = np.ascontiguousarray(headers, dtype=np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = []
    for i in range(len(lengths)):
        h = hashlib.blake2b(heads[i].tobytes(), digest_size=16)
        h.update(data[starts[i]:ends[i]])
        out.append(h.digest())
    return np.frombuffer(b"".join(out), dtype=DIGEST).copy()


def lex_min(best: np.ndarray | None, candidate: np.ndarray) -> np.ndarray:
    """Row by row the lexicographically smaller of two [n, L] arrays."""
    if best is None:
        return candidate
    differ = best != candidate
    first = differ.argmax(axis=1)
    rows = np.arange(len(best))
    smaller = differ[rows, first] & (candidate[rows, first] < best[rows, first])
    return np.where(smaller[:, None], candidate, best)


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype every token fits in: both sides of a comparison use it."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def exact_forms(inputs: np.ndarray, labels: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Digests of the input rows and of input-then-label rows."""
    inputs, labels = inputs.astype(dtype, copy=False), labels.astype(dtype, copy=False)
    return digest_rows(inputs), digest_rows(np.concatenate([inputs, labels], axis=1))


# --------------------------------------------------------------------------- mazes


def maze_forms(inputs: np.ndarray, labels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Digests of the D4-minimal input grid and of the D4-minimal (input, label) pair."""
    n = len(inputs)
    grid_in, grid_label = inputs.reshape(n, side, side), labels.reshape(n, side, side)
    best_in = best_pair = None
    for tid in range(8):
        moved_in = dihedral_transform(grid_in, tid).reshape(n, -1)
        moved_label = dihedral_transform(grid_label, tid).reshape(n, -1)
        best_in = lex_min(best_in, moved_in)
        best_pair = lex_min(best_pair, np.concatenate([moved_in, moved_label], axis=1))
    return digest_rows(best_in), digest_rows(best_pair)


# --------------------------------------------------------------------------- ARC


def arc_grids(tokens: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canvas rows [n, side*side] → (cells [n, side, side] moved to the top-left, OUTSIDE past the
    grid; heights [n]; widths [n]). The grid is the bounding box of colour tokens (2..11);
    inside it a colour token c+2 becomes c and any other token t becomes 10 + t (never relabelled)."""
    n = len(tokens)
    canvas = tokens.reshape(n, side, side).astype(np.int64)
    colour = (canvas >= 2) & (canvas < 12)
    rows_any, cols_any = colour.any(axis=2), colour.any(axis=1)
    heights = np.where(rows_any.any(1), side - rows_any.argmax(1) - rows_any[:, ::-1].argmax(1), 0)
    widths = np.where(cols_any.any(1), side - cols_any.argmax(1) - cols_any[:, ::-1].argmax(1), 0)
    top, left = rows_any.argmax(1), cols_any.argmax(1)
    span = np.arange(side)
    r = np.minimum(top[:, None] + span, side - 1)
    c = np.minimum(left[:, None] + span, side - 1)
    cells = canvas[np.arange(n)[:, None, None], r[:, :, None], c[:, None, :]]
    cells = np.where(cells >= 2, cells - 2, cells + 10)
    inside = (span[None, :, None] < heights[:, None, None]) & (span[None, None, :] < widths[:, None, None])
    return np.where(inside, cells, OUTSIDE).astype(np.uint8), heights, widths


def _dihedral_sources(tid: int, i: np.ndarray, j: np.ndarray, h: np.ndarray, w: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where cell (i, j) of t(g) comes from in an h×w grid g at the top-left, and t(g)'s shape;
    the ids are `hrm.puzzles.grids`' (checked against `dihedral_transform` in the tests)."""
    if tid == 0:
        return i, j, h, w
    if tid == 1:
        return j, w - 1 - i, w, h
    if tid == 2:
        return h - 1 - i, w - 1 - j, h, w
    if tid == 3:
        return h - 1 - j, i, w, h
    if tid == 4:
        return i, w - 1 - j, h, w
    if tid == 5:
        return h - 1 - i, j, h, w
    if tid == 6:
        return j, i, w, h
    return h - 1 - j, w - 1 - i, w, h


def transform_grids(cells: np.ndarray, h: np.ndarray, w: np.ndarray, tid: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dihedral transform `tid` of top-left grids [n, B, B] (OUTSIDE past h×w), the result at the
    top-left again: (cells, heights, widths)."""
    n, side = cells.shape[0], cells.shape[1]
    i = np.arange(side)[None, :, None]
    j = np.arange(side)[None, None, :]
    hh, ww = h[:, None, None], w[:, None, None]
    src_r, src_c, new_h, new_w = _dihedral_sources(tid, i, j, hh, ww)
    inside = (i < new_h) & (j < new_w)
    src_r = np.where(inside, src_r, 0)
    src_c = np.where(inside, src_c, 0)
    moved = cells[np.arange(n)[:, None, None], src_r, src_c]
    return np.where(inside, moved, OUTSIDE).astype(np.uint8), new_h[:, 0, 0], new_w[:, 0, 0]


def relabel_first_appearance(seq: np.ndarray) -> np.ndarray:
    """Colours 1..9 of every row renamed 1, 2, … in order of first appearance; other values kept."""
    n, length = seq.shape
    bits = np.where((seq >= 1) & (seq <= 9), np.left_shift(np.uint16(1), seq.astype(np.uint16)), np.uint16(0))
    seen = np.bitwise_or.accumulate(bits, axis=1)
    new = np.empty(seen.shape, dtype=bool)
    new[:, 0] = seen[:, 0] != 0
    new[:, 1:] = seen[:, 1:] != seen[:, :-1]
    rows, cols = np.nonzero(new)
    colours = seq[rows, cols]
    row_start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - row_start[rows]
    table = np.tile(np.arange(256, dtype=np.uint8), (n, 1))
    table[rows, colours] = (rank + 1).astype(np.uint8)
    return np.take_along_axis(table, seq.astype(np.intp), axis=1)


def arc_forms(inputs: np.ndarray, labels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Digests of the canonical input and of the canonical (input, output) pair (module doc).
    Examples are processed in buckets of equal largest grid side B (a D4 invariant), on B×B
    arrays, so small grids cost little."""
    n = len(inputs)
    cells_in, h_in, w_in = arc_grids(inputs, side)
    cells_out, h_out, w_out = arc_grids(labels, side)
    largest_in = np.maximum(h_in, w_in)
    largest = np.maximum(largest_in, np.maximum(h_out, w_out))
    form_in = np.empty(n, dtype=DIGEST)
    form_pair = np.empty(n, dtype=DIGEST)
    for bucket in np.unique(largest):
        at = np.flatnonzero(largest == bucket)
        b = max(int(bucket), 1)
        form_in[at], form_pair[at] = _arc_bucket(cells_in[at, :b, :b], h_in[at], w_in[at],
                                                 cells_out[at, :b, :b], h_out[at], w_out[at])
    return form_in, form_pair


def _arc_bucket(cells_in: np.ndarray, h_in: np.ndarray, w_in: np.ndarray, cells_out: np.ndarray,
                h_out: np.ndarray, w_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, b = cells_in.shape[0], cells_in.shape[1]
    best_in = best_pair = None
    for tid in range(8):
        moved_in, th_in, tw_in = transform_grids(cells_in, h_in, w_in, tid)
        moved_out, th_out, tw_out = transform_grids(cells_out, h_out, w_out, tid)
        relabelled = relabel_first_appearance(np.concatenate([moved_in.reshape(n, -1), moved_out.reshape(n, -1)], 1))
        # Shapes lead the key: with equal shapes the OUTSIDE cells line up, so the rest compares
        # the grids' cells in row-major order whatever B is.
        shapes = np.stack([th_in, tw_in, th_out, tw_out], axis=1).astype(np.uint8)
        best_in = lex_min(best_in, np.concatenate([shapes[:, :2], relabelled[:, :b * b]], axis=1))
        best_pair = lex_min(best_pair, np.concatenate([shapes, relabelled], axis=1))
    # Digest the shapes and the cells inside the grids only, so the input's form does not
    # depend on B (which the output can set).
    cells = best_in[:, 2:]
    inside = cells != OUTSIDE
    form_in = digest_ragged(cells[inside], inside.sum(1), best_in[:, :2])
    cells = best_pair[:, 4:]
    inside = cells != OUTSIDE
    form_pair = digest_ragged(cells[inside], inside.sum(1), best_pair[:, :4])
    return form_in, form_pair


# --------------------------------------------------------------------------- Sudoku

SUDOKU_BOXES = (2, 3)  # 4x4 and 9x9 boards: the sizes the converters write


def sudoku_box(seq_len: int) -> int | None:
    """The box side of a Sudoku board of seq_len cells, if it is one we canonicalise."""
    side = math.isqrt(seq_len)
    box = math.isqrt(side)
    return box if side * side == seq_len and box * box == side and box in SUDOKU_BOXES else None


def sudoku_invariants(inputs: np.ndarray, box: int) -> np.ndarray:
    """Digests of a key that every transform of a board shares (tokens: digit d is d + 1,
    blank 1, pad 0): the sorted digit frequencies, and the box-signature matrix (per box: its
    givens, its row counts sorted, its column counts sorted) in a form canonical under band
    and stack permutations and transpose. Why each part is invariant: relabelling permutes the
    digit counts (sorted away); row/column moves inside a band/stack permute a box's row/column
    counts (sorted away); band/stack moves permute the matrix's rows/columns, and
    `_canonical_matrix` is the minimum over all of those; transpose is the minimum over the
    board and its transpose."""
    n, side = len(inputs), box * box
    board = inputs.reshape(n, side, side)
    counts = np.stack([(board == digit + 1).sum(axis=(1, 2)) for digit in range(1, side + 1)], axis=1)
    given = board >= 2
    matrix = _canonical_matrix(_box_codes(given, box), box)
    matrix_t = _canonical_matrix(_box_codes(given.swapaxes(1, 2), box), box)
    key = np.concatenate([np.sort(counts, axis=1), lex_min(matrix, matrix_t)], axis=1).astype(np.int64)
    return digest_rows(key)


def _box_codes(given: np.ndarray, box: int) -> np.ndarray:
    """[n, band, stack] integer code of each box: givens, sorted row counts, sorted column counts."""
    n = len(given)
    blocks = given.reshape(n, box, box, box, box).astype(np.int64)  # [n, band, row, stack, col]
    row_counts = np.sort(blocks.sum(axis=4).transpose(0, 1, 3, 2), axis=-1)  # [n, band, stack, row]
    col_counts = np.sort(blocks.sum(axis=2), axis=-1)  # [n, band, stack, col]
    code = row_counts.sum(axis=-1)
    for part in (row_counts, col_counts):
        for k in range(box):
            code = code * (box + 1) + part[..., k]
    return code


def _canonical_matrix(codes: np.ndarray, box: int) -> np.ndarray:
    """[n, box, box] → [n, box]: over every column permutation, the rows as integers sorted;
    the minimum of those. Row and column permutations of the input give the same result."""
    base = (box * box + 1) * (box + 1) ** (2 * box)
    best = None
    for perm in itertools.permutations(range(box)):
        rows = np.zeros(codes.shape[:2], dtype=np.int64)
        for k in perm:
            rows = rows * base + codes[:, :, k]
        best = lex_min(best, np.sort(rows, axis=1))
    return best


@lru_cache(maxsize=None)
def band_permutations(box: int) -> np.ndarray:
    """Every permutation of box² rows that moves whole bands and rows within them: [box!^(box+1), box²]."""
    orders = list(itertools.permutations(range(box)))
    perms = []
    for bands in orders:
        for inner in itertools.product(orders, repeat=box):
            perms.append([bands[i] * box + inner[i][k] for i in range(box) for k in range(box)])
    return np.array(perms, dtype=np.intp)


@lru_cache(maxsize=None)
def _band_tables(box: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index tables for matching rows band by band: within-band orders, and per band
    permutation β and per target band i, the source band β[i]."""
    orders = np.array(list(itertools.permutations(range(box))), dtype=np.intp)  # [k!, box]
    bands = orders.copy()  # band permutations: same set
    # src_rows[j, o, i, k] = box*j + orders[o, k]; tgt_rows[i, k] = box*i + k
    src = box * np.arange(box)[:, None, None, None] + orders[None, :, None, :]
    tgt = box * np.arange(box)[None, None, :, None] + np.arange(box)[None, None, None, :]
    shape = (box, len(orders), box, box)
    return orders, bands, np.broadcast_to(src, shape), np.broadcast_to(tgt, shape)


def sudoku_equivalent(a: np.ndarray, b: np.ndarray, box: int) -> bool:
    """Whether some transform in the Sudoku group maps board(s) `a` onto `b` exactly.

    `a`, `b`: [boards, side²] token rows transformed together (an input alone, or an input and
    its label): digit tokens (≥ 2) are relabelled by one bijection, tokens 0 and 1 (pad, blank)
    stay. Search: for each transpose and each column permutation, the rows of `a`'s given
    pattern that can land on each row of `b`'s (equal patterns); band by band, the orders of
    source rows that fit, then band permutations whose bands all fit; every surviving
    geometric transform is then checked for a digit bijection. Exhaustive, so False means no
    transform exists."""
    side = box * box
    a = np.asarray(a).reshape(-1, side, side).astype(np.int64)
    b = np.asarray(b).reshape(-1, side, side).astype(np.int64)
    if a.shape != b.shape:
        return False
    perms = band_permutations(box)
    orders, bands, src, tgt = _band_tables(box)
    pattern_b = (b >= 2).transpose(1, 0, 2).reshape(side, -1)  # row → its pattern across boards
    for transpose in (False, True):
        moved = a.swapaxes(1, 2) if transpose else a
        pattern_a = (moved >= 2)
        # [cols, row, boards*side]: a's patterns under every column permutation
        by_cols = pattern_a[:, :, perms].transpose(2, 1, 0, 3).reshape(len(perms), side, -1)
        fits = (by_cols[:, :, None, :] == pattern_b[None, None, :, :]).all(axis=-1)  # [cols, src row, tgt row]
        band_fit = fits[:, src, tgt].all(axis=-1)  # [cols, src band j, order, tgt band i]
        band_ok = band_fit.any(axis=2)  # [cols, j, i]
        for col_index in np.flatnonzero(_any_band_permutation(band_ok, bands)):
            rows = _row_permutations(band_fit[col_index], bands, orders, box)
            candidates = moved[:, rows][:, :, :, perms[col_index]]  # [boards, m, side, side]
            flat = candidates.transpose(1, 0, 2, 3).reshape(len(rows), -1)
            if _digit_bijections(flat, b.reshape(-1)).any():
                return True
    return False


def _any_band_permutation(band_ok: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """[cols] whether some band permutation β has every target band i fed by a fitting band β[i]."""
    box = bands.shape[1]
    return band_ok[:, bands, np.arange(box)[None, :]].all(axis=-1).any(axis=-1)


def _row_permutations(band_fit: np.ndarray, bands: np.ndarray, orders: np.ndarray, box: int) -> np.ndarray:
    """[m, side] every band-preserving row permutation that fits, given band_fit[j, order, i]."""
    found = []
    for beta in bands:
        choices = [np.flatnonzero(band_fit[beta[i], :, i]) for i in range(box)]
        for picked in itertools.product(*choices):
            found.append(np.concatenate([box * beta[i] + orders[o] for i, o in enumerate(picked)]))
    return np.array(found, dtype=np.intp).reshape(len(found), box * box)


def _digit_bijections(candidates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[m] whether one bijection of digit tokens (≥ 2), fixing tokens 0 and 1, maps candidate
    row k onto `target`: both directions must be functions (a table written from the pairs
    reads every pair back)."""
    m = len(candidates)
    y = np.broadcast_to(target, candidates.shape)
    fixed = (candidates < 2) | (y < 2)
    ok = ((candidates == y) | ~fixed).all(axis=1)
    size = int(max(candidates.max(initial=0), target.max(initial=0))) + 1
    rows = np.arange(m)[:, None]
    forward = np.zeros((m, size), dtype=np.int64)
    backward = np.zeros((m, size), dtype=np.int64)
    forward[rows, candidates] = y
    backward[rows, y] = candidates
    return ok & (forward[rows, candidates] == y).all(axis=1) & (backward[rows, y] == candidates).all(axis=1)
