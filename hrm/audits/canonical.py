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
    """Digests of the input rows and of input-then-label rows: the second continues a copy of
    the first's state with the label, so the input's bytes are hashed once (and no
    input-then-label rows are built)."""
    inputs = np.ascontiguousarray(inputs, dtype=dtype)
    labels = np.ascontiguousarray(labels, dtype=dtype)
    n = len(inputs)
    data_in = memoryview(inputs.reshape(-1)).cast("B")
    data_label = memoryview(labels.reshape(-1)).cast("B")
    width_in = inputs.itemsize * (inputs.size // n if n else 0)
    width_label = labels.itemsize * (labels.size // n if n else 0)
    digests_in, digests_pair = [], []
    for i in range(n):
        h = hashlib.blake2b(data_in[i * width_in:(i + 1) * width_in], digest_size=16)
        digests_in.append(h.digest())
        h.update(data_label[i * width_label:(i + 1) * width_label])
        digests_pair.append(h.digest())
    return (np.frombuffer(b"".join(digests_in), dtype=DIGEST).copy(),
            np.frombuffer(b"".join(digests_pair), dtype=DIGEST).copy())


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

PREFIX_CELLS = 16  # cells of each transform's key compared first, to skip most full keys
# Longer prefixes that examples with several contenders left compare next: grids with a blank
# border tie on their first 16 cells under several transforms, and each contender costs a full
# key. Measured on 20,000 grids of blank background with 1..4 solid rectangles: 2.9 contenders
# an example and 0.61 s of CPU without, 1.2 and 0.49 s with one round of 128 (64 then 256:
# 0.51 s; random grids: no change either way).
REFINE_CELLS = (128,)
AREA_STEP = 32  # full keys are built in buckets of grid area rounded up to this
TRANSPOSING = np.array([tid in (1, 3, 6, 7) for tid in range(8)])  # transforms that swap height and width
# Bit c for colour c in 1..9, else 0. uint32, not uint16: numpy's bitwise_or.accumulate along a
# row is several times faster on 32-bit words (measured).
COLOUR_BIT = np.array([1 << v if 1 <= v <= 9 else 0 for v in range(256)], dtype=np.uint32)


def arc_boxes(tokens: np.ndarray, side: int) -> tuple[np.ndarray, ...]:
    """Canvas rows [n, side*side] → (top, left, height, width) of each grid: the bounding box of
    its colour tokens (2..11). No colour at all is a 0x0 grid."""
    n = len(tokens)
    colour = tokens.reshape(n, side, side) >= 2
    rows_any, cols_any = colour.any(axis=2), colour.any(axis=1)
    top, left = rows_any.argmax(axis=1), cols_any.argmax(axis=1)
    height = np.where(rows_any.any(axis=1), side - top - rows_any[:, ::-1].argmax(axis=1), 0)
    width = np.where(cols_any.any(axis=1), side - left - cols_any[:, ::-1].argmax(axis=1), 0)
    return top, left, height, width


def _dihedral_sources(tid: int, i: np.ndarray, j: np.ndarray, h: np.ndarray, w: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where cell (i, j) of t(g) comes from in an h×w grid g, and t(g)'s shape; the ids are
    `hrm.puzzles.grids`' (checked against `dihedral_transform` in the tests)."""
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


@lru_cache(maxsize=4)
def dihedral_tables(side: int) -> np.ndarray:
    """[8, side+1, side+1, side*side] int16: for transform t of an h×w grid, the canvas offset
    (row * side + column, relative to the grid's top-left) of the cell that comes p-th in the
    transformed grid read row by row, or side*side past its h'×w' cells (which `cell_values`
    rows make an OUTSIDE cell from any top-left)."""
    h = np.arange(side + 1)[:, None, None]
    w = np.arange(side + 1)[None, :, None]
    p = np.arange(side * side)[None, None, :]
    tables = np.empty((8, side + 1, side + 1, side * side), dtype=np.int16)
    for tid in range(8):
        _, _, new_h, new_w = _dihedral_sources(tid, 0, 0, h, w)
        i, j = p // np.maximum(new_w, 1), p % np.maximum(new_w, 1)
        src_r, src_c, _, _ = _dihedral_sources(tid, i, j, h, w)
        tables[tid] = np.where(p < new_h * new_w, src_r * side + src_c, side * side)
    return tables


def cell_values(canvas: np.ndarray) -> np.ndarray:
    """Canvas rows [n, side*side] → their key values followed by side*side OUTSIDE cells
    ([n, 2*side*side] uint8): colour c as c, any other token t as 10 + t. A grid's top-left is
    below side*side, so the past-the-grid offset of `dihedral_tables` lands on an OUTSIDE cell
    from any grid: reading needs no mask."""
    cells = canvas.shape[1]
    values = np.empty((len(canvas), 2 * cells), dtype=np.uint8)
    # By arithmetic: a lookup table (np.take) would first widen every token to an 8-byte
    # index, 8 times the canvas in memory (measured: arc_forms of a 4,660-example chunk peaked
    # 52 MiB above its inputs that way, 31 MiB this way).
    body = values[:, :cells]
    np.subtract(canvas, np.uint8(2), out=body)  # colours; tokens 0 and 1 wrap to 254 and 255
    body += (canvas < 2).view(np.uint8) * np.uint8(12)  # 254, 255 → 10, 11
    values[:, cells:] = OUTSIDE
    return values


def read_transformed(values: np.ndarray, box: tuple[np.ndarray, ...], rows: np.ndarray, tids: np.ndarray,
                     length: int, side: int) -> np.ndarray:
    """The first `length` cells of transform tids[k] of grid rows[k], read row by row from
    `cell_values` rows: [len(rows), length], OUTSIDE past the transformed grid. One gather
    from the canvas in place (no copy of a canvas per transform)."""
    top, left, h, w = (b[rows] for b in box)
    offsets = dihedral_tables(side)[tids, h, w, :length]
    start = rows * values.shape[1] + top * side + left
    return values.reshape(-1)[offsets + start[:, None]]


def transformed_cells(canvas: np.ndarray, box: tuple[np.ndarray, ...], tid: int, length: int, side: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The first `length` cells of transform `tid` of each grid, read row by row ([n, length];
    colour c as c, any other token t inside the box as 10 + t, OUTSIDE past the grid), and the
    transformed shapes [n, 2]."""
    n = len(canvas)
    cells = read_transformed(cell_values(np.ascontiguousarray(canvas, dtype=np.uint8)), box, np.arange(n),
                             np.full(n, tid), length, side)
    return cells, transformed_shapes(box, np.arange(n), np.full(n, tid))


def transformed_shapes(box: tuple[np.ndarray, ...], rows: np.ndarray, tids: np.ndarray) -> np.ndarray:
    """[len(rows), 2] uint8 (height, width) of transform tids[k] of grid rows[k]."""
    h, w = box[2][rows], box[3][rows]
    swap = TRANSPOSING[tids]
    return np.stack([np.where(swap, w, h), np.where(swap, h, w)], axis=1).astype(np.uint8)


def relabel_first_appearance(seq: np.ndarray) -> np.ndarray:
    """Colours 1..9 of every row renamed 1, 2, … in order of first appearance; other values kept."""
    n = len(seq)
    seq = np.ascontiguousarray(seq, dtype=np.uint8)
    seen = np.bitwise_or.accumulate(COLOUR_BIT[seq], axis=1)
    new = np.empty(seen.shape, dtype=bool)
    new[:, 0] = seen[:, 0] != 0
    np.not_equal(seen[:, 1:], seen[:, :-1], out=new[:, 1:])
    rows, cols = np.nonzero(new)
    rank = np.arange(len(rows)) - np.searchsorted(rows, np.arange(n))[rows]
    width = 16 if seq.max(initial=0) < 16 else 256  # a row's renaming table: as narrow as its values allow
    table = np.tile(np.arange(width, dtype=np.uint8), (n, 1))
    table[rows, seq[rows, cols]] = (rank + 1).astype(np.uint8)
    return table.reshape(-1)[np.arange(n)[:, None] * width + seq]


def arc_forms(inputs: np.ndarray, labels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Digests of the canonical input and of the canonical (input, output) pair (module doc).

    The key of transform t is (shapes, relabelled cells of the input then the output, each read
    row by row). Its first PREFIX_CELLS input cells are a prefix of it, so only the transforms
    whose short key (shapes, those cells) is least can give the minimum: the full key is built
    for those alone, in buckets of similar grid area (cells read per grid). The input's key
    is the pair's first part (relabelling a prefix by first appearance gives the prefix of the
    relabelled whole), so both come from one relabelling. Contenders share their short key,
    shapes included, so their full keys pad alike and compare as the keys themselves."""
    n = len(inputs)
    canvas_in = np.ascontiguousarray(inputs, dtype=np.uint8).reshape(n, -1)
    canvas_out = np.ascontiguousarray(labels, dtype=np.uint8).reshape(n, -1)
    box_in, box_out = arc_boxes(canvas_in, side), arc_boxes(canvas_out, side)
    values_in, values_out = cell_values(canvas_in), cell_values(canvas_out)
    # Short keys of all 8 transforms of every example at once: [n, 8, key].
    rows, tids = np.repeat(np.arange(n), 8), np.tile(np.arange(8), n)
    cells = relabel_first_appearance(read_transformed(values_in, box_in, rows, tids, PREFIX_CELLS, side))
    shape_in, shape_out = transformed_shapes(box_in, rows, tids), transformed_shapes(box_out, rows, tids)
    short_in = np.concatenate([shape_in, cells], axis=1).reshape(n, 8, -1)
    short_pair = np.concatenate([shape_in, shape_out, cells], axis=1).reshape(n, 8, -1)
    contend_in = (short_in == _least(short_in)[:, None]).all(axis=2)
    contend_pair = (short_pair == _least(short_pair)[:, None]).all(axis=2)
    for prefix in REFINE_CELLS:
        _keep_least_prefixes(values_in, box_in, contend_in, contend_pair, prefix, side)
    # A grid read row by row needs only its h·w cells, whatever the transform: bucket by area.
    area = np.maximum(box_in[2] * box_in[3], box_out[2] * box_out[3])
    lengths = np.minimum(-(-np.maximum(area, 1) // AREA_STEP) * AREA_STEP, side * side)
    rows, tids = np.nonzero(contend_in | contend_pair)  # every contending (example, transform), by example
    order = np.argsort(lengths[rows], kind="stable")
    rows, tids = rows[order], tids[order]
    bounds = np.flatnonzero(np.diff(lengths[rows], prepend=-1, append=-1))
    form_in = np.empty(n, dtype=DIGEST)
    form_pair = np.empty(n, dtype=DIGEST)
    for begin, end in zip(bounds[:-1], bounds[1:]):
        at, tid = rows[begin:end], tids[begin:end]
        length = int(lengths[at[0]])
        cells = relabel_first_appearance(np.concatenate(
            [read_transformed(values_in, box_in, at, tid, length, side),
             read_transformed(values_out, box_out, at, tid, length, side)], axis=1))
        shape_in = transformed_shapes(box_in, at, tid)
        pick = contend_in[at, tid]
        where, best = _least_per_example(at[pick], np.concatenate([shape_in[pick], cells[pick, :length]], axis=1))
        form_in[where] = _digest_key(best, 2)
        pick = contend_pair[at, tid]
        key = np.concatenate([shape_in[pick], transformed_shapes(box_out, at[pick], tid[pick]), cells[pick]], axis=1)
        where, best = _least_per_example(at[pick], key)
        form_pair[where] = _digest_key(best, 4)
    return form_in, form_pair


def _keep_least_prefixes(values_in: np.ndarray, box_in: tuple[np.ndarray, ...], contend_in: np.ndarray,
                         contend_pair: np.ndarray, prefix: int, side: int) -> None:
    """Of the examples with several contenders (at either level), drop (in place) each
    contender whose first `prefix` relabelled input cells are not the least of its example's
    at that level. Contenders share their shapes, and those cells are a prefix of both keys
    past the shapes (input cells past a grid are OUTSIDE under every contender alike), so only
    transforms that cannot give the least key are dropped."""
    several = (contend_in.sum(axis=1) > 1) | (contend_pair.sum(axis=1) > 1)
    rows, tids = np.nonzero((contend_in | contend_pair) & several[:, None])
    if not len(rows):
        return
    cells = relabel_first_appearance(read_transformed(values_in, box_in, rows, tids, prefix, side))
    least = np.empty((len(contend_in), prefix), dtype=np.uint8)
    for contend in (contend_in, contend_pair):
        pick = contend[rows, tids]
        examples, best = _least_per_example(rows[pick], cells[pick])
        least[examples] = best
        lose = ~(cells[pick] == least[rows[pick]]).all(axis=1)
        contend[rows[pick][lose], tids[pick][lose]] = False


def _least(keys: np.ndarray) -> np.ndarray:
    """[n, k, L] → [n, L]: per example the least of its k keys."""
    least = None
    for k in range(keys.shape[1]):
        least = lex_min(least, keys[:, k])
    return least


def _least_per_example(examples: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples in sorted order, some repeated, and a key for each: (each example once, its least key)."""
    first = np.concatenate([[True], examples[1:] != examples[:-1]])
    group = np.cumsum(first) - 1
    best = keys[first]
    rank = np.arange(len(examples)) - np.flatnonzero(first)[group]
    for r in range(1, int(rank.max(initial=0)) + 1):  # the r-th contender of every example that has one
        later = rank == r
        best[group[later]] = lex_min(best[group[later]], keys[later])
    return examples[first], best


def _digest_key(key: np.ndarray, header: int) -> np.ndarray:
    """Digest of the header and the cells inside the grids (not of the bucket's length, which only pads)."""
    cells = key[:, header:]
    inside = cells != OUTSIDE
    return digest_ragged(cells[inside], inside.sum(axis=1), key[:, :header])


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


DIRECT_LIMIT = 4096  # row x column permutations checked one by one before the band-by-band search


def sudoku_equivalent(a: np.ndarray, b: np.ndarray, box: int) -> bool:
    """Whether some transform in the Sudoku group maps board(s) `a` onto `b` exactly.

    `a`, `b`: [boards, side²] token rows transformed together (an input alone, or an input and
    its label): digit tokens (≥ 2) are relabelled by one bijection, tokens 0 and 1 (pad, blank)
    stay. For each transpose: only row (column) permutations that carry `a`'s given count of
    every row (column) onto `b`'s can work. When few pairs of them remain, each pair is tried
    whole; otherwise, per column permutation, the rows of `a`'s given pattern that can land
    on each row of `b`'s, band by band, then band permutations whose bands all fit. Every
    geometric transform whose given pattern fits is checked for a digit bijection. The search
    is exhaustive, so False means no transform exists."""
    side = box * box
    a = np.asarray(a).reshape(-1, side, side).astype(np.int64)
    b = np.asarray(b).reshape(-1, side, side).astype(np.int64)
    if a.shape != b.shape:
        return False
    perms = band_permutations(box)
    pattern_b = b >= 2
    for transpose in (False, True):
        moved = a.swapaxes(1, 2) if transpose else a
        pattern_a = moved >= 2
        rows = perms[(pattern_a.sum(axis=(0, 2))[perms] == pattern_b.sum(axis=(0, 2))).all(axis=1)]
        cols = perms[(pattern_a.sum(axis=(0, 1))[perms] == pattern_b.sum(axis=(0, 1))).all(axis=1)]
        if len(rows) * len(cols) <= DIRECT_LIMIT:
            found = _direct(moved, pattern_a, b, pattern_b, rows, cols)
        else:
            found = _band_search(moved, pattern_a, b, pattern_b, box)
        if found:
            return True
    return False


def _direct(moved: np.ndarray, pattern_a: np.ndarray, b: np.ndarray, pattern_b: np.ndarray,
            rows: np.ndarray, cols: np.ndarray) -> bool:
    """Try every (row permutation, column permutation) pair: [boards, side, side] boards."""
    if not len(rows) or not len(cols):
        return False
    r = np.repeat(rows, len(cols), axis=0)
    c = np.tile(cols, (len(rows), 1))
    fits = (pattern_a[:, r[:, :, None], c[:, None, :]] == pattern_b[:, None]).all(axis=(0, 2, 3))
    if not fits.any():
        return False
    r, c = r[fits], c[fits]
    candidates = moved[:, r[:, :, None], c[:, None, :]].transpose(1, 0, 2, 3).reshape(len(r), -1)
    return bool(_digit_bijections(candidates, b.reshape(-1)).any())


def _band_search(moved: np.ndarray, pattern_a: np.ndarray, b: np.ndarray, pattern_b: np.ndarray, box: int) -> bool:
    side = box * box
    perms = band_permutations(box)
    orders, bands, src, tgt = _band_tables(box)
    target = pattern_b.transpose(1, 0, 2).reshape(side, -1)  # row → its pattern across boards
    # [cols, row, boards*side]: a's patterns under every column permutation
    by_cols = pattern_a[:, :, perms].transpose(2, 1, 0, 3).reshape(len(perms), side, -1)
    fits = (by_cols[:, :, None, :] == target[None, None, :, :]).all(axis=-1)  # [cols, src row, tgt row]
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
