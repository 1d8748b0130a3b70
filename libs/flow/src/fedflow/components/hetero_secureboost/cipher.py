"""hetero_secureboost's ciphertext arithmetic: (g, h) packed into one plaintext per row,
encrypted histograms at a host, several histogram cells compressed into one ciphertext, and
the guest's decoding of them.

Plaintext layout of one histogram cell (every row's plaintext is a cell of one row):

    bits [0, c)              rows           (1 for a sampled row, 0 otherwise)
    bits [c, c + f)          sum of q_h     (q_h in [0, 2^30])
    bits [c + f, c + 2f)     sum of q_g     (q_g = round(g / 2^g_exp) + 2^30, in [0, 2^31))

with c = bitlen(N) and f = bitlen(N) + 31 for N rows (math.field_bits): a cell summed over
all N rows cannot carry out of its fields, and B = c + 2f bits hold a whole cell. A host's
histogram cell is the product of the ciphertexts of the rows in that bin (Paillier adds the
plaintexts). Only cells the guest cannot know otherwise travel (cell_kinds): a cell of no rows
is empty (the host knows each cell's rows: the positions are plain, the bins its own), and each
node's most frequent bin per feature is left out (the guest restores it from the node's total);
the host says which cells are which in plaintext, which tells the guest only what the cells'
row counts would. Before sending, the host compresses s = (bits(n) - 2) // B sent cells into one
ciphertext by Horner's rule: C = prod_i E_i^(2^(i B)), i.e. the plaintext sum_i cell_i 2^(i B)
< 2^(s B) <= n / 4, so nothing wraps modulo n; then it re-randomises C (the guest, which made
every row's ciphertext, could otherwise test which products of them C is). The guest decrypts
C once and cuts it into s cells.

Only fedcrypto's whitelisted kernels run on the executor (k_prod_segments, k_pow, k_mul), so
the party's crypto job pool (fedflow.cryptopool) may run them.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from fedcrypto import CiphertextError, EncryptedVector, PaillierOverflowError, PublicKey
from fedcrypto.paillier import kernels
from fedcrypto.paillier.limbs import LIMB_DTYPE, LimbArray
from fedcrypto.paillier.parallel import (
    CHEAP_MIN_CHUNK,
    LANES,
    chunk_bounds,
    concat_limbs,
    map_chunks,
)
from numpy.typing import NDArray

from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.kit import decrypt_check

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Ints = sbmath.Ints


LAYOUT: Final = (
    "no bits above the last cell, rows <= N, sum q_g < rows x 2^31, sum q_h <= rows x 2^30, "
    "padding cells 0"
)
"""What every honest compressed histogram plaintext satisfies (CellLayout.cells_checked)."""


@dataclass(frozen=True)
class CellLayout:
    """The bit layout of cells for N rows under a key of `key_bits` bits."""

    rows: int
    key_bits: int

    @property
    def fields(self) -> tuple[int, int]:
        """(bits of the g and h fields, bits of the count field)."""
        return sbmath.field_bits(self.rows)

    @property
    def cell_bits(self) -> int:
        return sbmath.cell_bits(self.rows)

    @property
    def per_ciphertext(self) -> int:
        per = (self.key_bits - 2) // self.cell_bits
        if per < 1:
            raise ValueError(
                f"hetero_secureboost: a {self.key_bits}-bit key cannot hold a histogram cell of "
                f"{self.cell_bits} bits ({self.rows} rows)"
            )
        return per

    def ciphertexts(self, cells: int) -> int:
        """Compressed ciphertexts that carry `cells` cells."""
        return -(-cells // self.per_ciphertext)

    def row_plaintexts(self, q: tuple[Ints, Ints, Ints], plain_limbs: int) -> LimbArray:
        """One plaintext per row: rows | q_h << c | q_g << (c + f), as limbs."""
        gh, count = self.fields
        qg, qh, on = (np.asarray(v, dtype=np.int64) for v in q)
        if qg.min(initial=0) < 0 or qh.min(initial=0) < 0:
            raise ValueError("hetero_secureboost: quantised gradients must be non-negative")
        if max(int(qg.max(initial=0)), int(qh.max(initial=0))) >> gh:
            raise ValueError("hetero_secureboost: a quantised gradient exceeds its cell field")
        if -(-self.cell_bits // 64) > plain_limbs:
            raise ValueError(
                f"hetero_secureboost: a cell of {self.cell_bits} bits does not fit "
                f"{plain_limbs} plaintext limbs"
            )
        out = np.zeros((len(qg), plain_limbs), dtype=LIMB_DTYPE)
        # Fields never overlap, so each is OR-ed into the limbs its bits fall in (every
        # value is below 2^63: at most two limbs, the word's low and high part).
        for value, shift in ((on, 0), (qh, count), (qg, count + gh)):
            word, offset = divmod(shift, 64)
            v = value.astype(LIMB_DTYPE)
            out[:, word] |= v << np.uint64(offset)
            if offset and word + 1 < plain_limbs:
                out[:, word + 1] |= v >> np.uint64(64 - offset)
        return out

    def cells(self, residues: LimbArray, cells: int, what: str) -> Ints:
        """The guest's side: `cells` integer cells (cells, 3) out of decrypted compressed
        plaintexts. Refuses (PaillierOverflowError) plaintexts that break LAYOUT: such a
        histogram was not built as declared."""
        out, bad = self.cells_checked(residues, cells)
        if bad:
            raise PaillierOverflowError(f"{what}: {bad} plaintext(s) break the cells' layout")
        return out

    def reported_cells(
        self,
        ctx: ComponentContext,
        residues: LimbArray,
        cells: int,
        what: str,
        host: str,
        iteration: int,
    ) -> Ints:
        """`cells`, the decrypt check of their plaintexts reported to the guest's audit
        (report.decrypt_check, data.decrypted_bounds) before a broken one is refused."""
        out, bad = self.cells_checked(residues, cells)
        decrypt_check.report_check(
            ctx,
            decrypt_check.PlaintextCounts(count=len(residues), out_of_bound=bad),
            peer=host,
            tag="histograms",
            iteration=iteration,
            bound=f"histogram cells of {self.rows} rows: {LAYOUT}",
        )
        if bad:
            raise PaillierOverflowError(f"{what}: {bad} plaintext(s) break the cells' layout")
        return out

    def cells_checked(self, residues: LimbArray, cells: int) -> tuple[Ints, int]:
        """`cells` as decoded, and how many plaintexts break LAYOUT (the decrypt check the
        guest reports to its audit before refusing them): bits above the last cell; a cell
        of more rows than N; a g or h sum above what its rows can add up to (q_g < 2^31 and
        q_h <= 2^30 per row); padding cells not empty."""
        gh, count = self.fields
        per, bits = self.per_ciphertext, self.cell_bits
        plaintexts = self.ciphertexts(cells)
        out = np.zeros((plaintexts * per, 3), dtype=np.int64)
        cell_mask, gh_mask, count_mask = (1 << bits) - 1, (1 << gh) - 1, (1 << count) - 1
        bad = np.zeros(plaintexts, dtype=np.bool_)
        for i, row in enumerate(np.ascontiguousarray(residues)):
            value = int.from_bytes(row.tobytes(), "little")
            if value >> (per * bits):
                bad[i] = True
            for s in range(per):
                cell = (value >> (s * bits)) & cell_mask
                out[i * per + s] = (
                    (cell >> (count + gh)) & gh_mask,
                    (cell >> count) & gh_mask,
                    cell & count_mask,
                )
        rows = out[:, 2]
        # Per sampled row q_g < 2^31 and q_h <= 2^30; an unsampled row adds nothing.
        broken = (rows > self.rows) | ((out[:, 0] >= rows << 31) & (out[:, 0] > 0))
        broken |= out[:, 1] > rows << 30
        broken[cells:] |= np.any(out[cells:] != 0, axis=1)
        bad |= broken.reshape(plaintexts, per).any(axis=1)
        return out[:cells], int(np.count_nonzero(bad))


HISTOGRAM_BATCH_BYTES = 8 << 20
"""Ciphertexts gathered for one segment_products call (several features' rows at once), so
that small nodes' rounds of pairwise products are wide enough to chunk (for the crypto job
pool: at least 2 x 2,048 pairs). 8 MiB, not more: with 64 MiB the host's histograms took
20-35% more CPU on threads (default_credit, depth 3: 1.6 -> 2.0-2.15 CPU-s per tree; a batch
that no longer fits in cache, bigger sorts), and the pool got more of a tree than it pays for
on 2 cores (docs/benchmarks.md). A feature of more rows than this is a batch of its own."""


EMPTY: Final = 0
"""cell_kinds: a cell of no rows (not sent; the guest's cell is 0)."""
SENT: Final = 1
"""cell_kinds: a cell sent, encrypted and compressed."""
LEFT_OUT: Final = 2
"""cell_kinds: the node's most frequent bin of the feature (not sent; the guest restores it)."""


def _node_keys(positions: NDArray[np.int32], nodes: Ints) -> tuple[Ints, Ints]:
    """(the rows at the listed nodes, each one's node slot: its place in `nodes`)."""
    slot = np.full(max(int(positions.max(initial=-1)) + 1, 1), -1, dtype=np.int64)
    slot[nodes] = np.arange(len(nodes))
    inside = np.flatnonzero(positions >= 0)
    inside = inside[slot[positions[inside]] >= 0]
    return inside, slot[positions[inside]]


def cell_kinds(
    bins: NDArray[np.uint16],
    positions: NDArray[np.int32],
    nodes: Ints,
    max_bin: int,
    skip_empty: bool = True,
) -> NDArray[np.uint8]:
    """The host's plan for the cells of the listed nodes, (len(nodes), k, max_bin + 1) of
    EMPTY, SENT and LEFT_OUT: in each node and feature the most frequent bin is left out
    (LightGBM's most-frequent-bin trick; ties: the lowest bin), a bin with no row of the node
    is empty (with skip_empty; else sent, as the product of no ciphertexts), the rest are
    sent. The host knows all of it in plaintext (the positions come plain, the bins are its
    own); the guest learns it from the row counts of the cells anyway, except for rows it
    left out of the tree's sample (so skip only without subsampling: a bin holding only
    unsampled rows would show as not empty)."""
    k, width = bins.shape[1], max_bin + 1
    inside, node_slot = _node_keys(positions, nodes)
    kinds = np.full((len(nodes), k, width), SENT, dtype=np.uint8)
    for f in range(k):
        keys = node_slot * width + bins[inside, f].astype(np.int64)
        counts = np.bincount(keys, minlength=len(nodes) * width).reshape(len(nodes), width)
        if skip_empty:
            kinds[:, f][counts == 0] = EMPTY
        top = np.argmax(counts, axis=1)
        held = np.flatnonzero(counts[np.arange(len(nodes)), top] > 0)
        kinds[held, f, top[held]] = LEFT_OUT
    return kinds


def encrypted_histograms(
    key: PublicKey,
    rows: LimbArray,
    bins: NDArray[np.uint16],
    positions: NDArray[np.int32],
    nodes: Ints,
    max_bin: int,
    executor: Executor | None,
    kinds: NDArray[np.uint8] | None = None,
    batch_bytes: int = HISTOGRAM_BATCH_BYTES,
) -> LimbArray:
    """The host's cells: for each listed node, feature and bin, the product of the
    ciphertexts of the node's rows in that bin, (len(nodes) * k * (max_bin + 1), c) in
    (node, feature, bin) order; with `kinds` (cell_kinds) only the SENT ones, in that order.

    The left-out cells save their products: a feature with a dominant value (default_credit's
    host: 44% of rows in one bin, on average) costs that much fewer; the guest, which knows
    each node's totals, puts back total - the other cells (place_cells).

    Features are multiplied in batches of about `batch_bytes` of gathered ciphertexts: one
    segment space (feature, node, bin) per batch, one round of pairwise products for all of
    them (cipher.segment_products), so the rounds stay wide enough to chunk."""
    k = bins.shape[1]
    width = max_bin + 1
    per_feature = len(nodes) * width
    inside, node_slot = _node_keys(positions, nodes)
    if kinds is not None and kinds.shape != (len(nodes), k, width):
        raise ValueError(f"cell kinds of shape {kinds.shape}, not {(len(nodes), k, width)}")
    n2_b = key.nsquare_bytes
    out = np.zeros((len(nodes), k, width, key.limbs), dtype=LIMB_DTYPE)
    row_bytes = key.limbs * 8
    batch: list[tuple[int, Ints, Ints]] = []  # (feature, rows, keys)
    gathered = 0

    def flush() -> None:
        nonlocal gathered
        if not batch:
            return
        first = batch[0][0]
        segment = np.concatenate([(f - first) * per_feature + keys for f, _, keys in batch])
        chosen = np.concatenate([chosen for _, chosen, _ in batch])
        order = np.argsort(segment, kind="stable")
        products = segment_products(
            n2_b,
            rows[chosen[order]],
            segment[order],
            len(batch) * per_feature,
            key.limbs,
            executor,
        )
        cells = products.reshape(len(batch), len(nodes), width, key.limbs)
        out[:, first : first + len(batch)] = cells.transpose(1, 0, 2, 3)
        batch.clear()
        gathered = 0

    for f in range(k):
        keys = node_slot * width + bins[inside, f].astype(np.int64)
        chosen = inside
        if kinds is not None:
            kept = kinds[:, f].reshape(-1)[keys] != LEFT_OUT
            chosen, keys = inside[kept], keys[kept]
        if batch and gathered + chosen.size * row_bytes > batch_bytes:
            flush()
        batch.append((f, chosen, keys))
        gathered += chosen.size * row_bytes
    flush()
    if kinds is not None:
        return np.ascontiguousarray(out[kinds == SENT])
    # (nodes, k, width) cells, node-major: the order the guest reads them in
    return np.ascontiguousarray(out.reshape(-1, key.limbs))


def check_cell_kinds(kinds: NDArray[np.generic], shape: tuple[int, int, int], what: str) -> None:
    """A host's cell_kinds as the guest receives them: `shape`, values EMPTY, SENT or
    LEFT_OUT, at most one LEFT_OUT per node and feature (ValueError otherwise)."""
    if kinds.shape != shape:
        raise ValueError(f"{what}: cell kinds of shape {kinds.shape}, expected {shape}")
    if kinds.size and (kinds.min() < EMPTY or kinds.max() > LEFT_OUT):
        raise ValueError(f"{what}: a cell kind is not empty (0), sent (1) or left out (2)")
    if np.any((kinds == LEFT_OUT).sum(axis=2) > 1):
        raise ValueError(f"{what}: more than one cell left out in a node's feature")


def place_cells(sent: Ints, kinds: NDArray[np.generic], totals: Ints, what: str) -> Ints:
    """The guest's side of cell_kinds: the decoded SENT cells (count, 3) put in place in
    (nodes, k, bins, 3), empty cells 0, each left-out cell the node's total (`totals`, (nodes,
    3)) minus the feature's other cells. A left-out cell below 0 is refused
    (PaillierOverflowError: not a histogram built as declared)."""
    out = np.zeros((*kinds.shape, 3), dtype=np.int64)
    out[kinds == SENT] = sent
    node, feature, bin_ = np.nonzero(kinds == LEFT_OUT)
    if node.size == 0:
        return out
    rest = out.sum(axis=2)  # (nodes, k, 3) without the left-out cells
    restored = totals[node] - rest[node, feature]
    if np.any(restored < 0):
        raise PaillierOverflowError(f"{what}: the cells of a node add up to more than its total")
    out[node, feature, bin_] = restored
    return out


def segment_products(
    n2_b: bytes,
    data: LimbArray,
    segment: Ints,
    segments: int,
    limbs: int,
    executor: Executor | None,
) -> LimbArray:
    """The product of each segment's ciphertexts ((segments, limbs); an empty segment gives
    1, the empty cell), `data` sorted by `segment`. Pairwise rounds of k_mul: the same number
    of products as a running product, but in batches (the vectorised kernel is several times
    faster than k_prod_segments' one-by-one chain)."""
    data, segment = np.ascontiguousarray(data), np.asarray(segment, dtype=np.int64)
    while data.shape[0]:
        # Each round pairs every segment's rows at even ranks with the next row. The
        # leaders (even ranks) stay in segment order, so the next round's rows are the
        # leaders themselves, a leader with a partner replaced by the pair's product: no
        # re-sorting (1M rows: 3.0-3.3 CPU-s against 4.7-5.5 with a concatenate and a
        # stable argsort per round).
        index = np.arange(segment.shape[0])
        starts = np.searchsorted(segment, segment, side="left")
        leaders = np.flatnonzero((index - starts) % 2 == 0)
        has_partner = leaders + 1 < np.searchsorted(segment, segment[leaders], side="right")
        paired = leaders[has_partner]
        if paired.size == 0:
            break
        products = concat_limbs(
            map_chunks(
                kernels.k_mul,
                chunk_bounds(paired.size, executor, None, min_chunk=CHEAP_MIN_CHUNK),
                partial(_pair, n2_b, data[paired], data[paired + 1]),
                executor,
            ),
            limbs,
        )
        data = data[leaders]
        data[has_partner] = products
        segment = segment[leaders]
    out = np.zeros((segments, limbs), dtype=LIMB_DTYPE)
    out[:, 0] = 1
    out[segment] = data
    return out


def _pair(n2_b: bytes, a: LimbArray, b: LimbArray, lo: int, hi: int) -> tuple[Any, ...]:
    return (n2_b, a[lo:hi], b[lo:hi])


def _powers(
    n2_b: bytes, a: LimbArray, exps: NDArray[np.uint8], keep: NDArray[np.bool_], lo: int, hi: int
) -> tuple[Any, ...]:
    return (n2_b, a[lo:hi], exps, keep)


def compress(
    key: PublicKey, cells: LimbArray, layout: CellLayout, executor: Executor | None
) -> EncryptedVector:
    """`cells` ciphertexts -> layout.ciphertexts(len) ciphertexts of `per_ciphertext` cells
    each (Horner: acc = acc^(2^B) * E_i from the last cell down), re-randomised."""
    per, count = layout.per_ciphertext, cells.shape[0]
    groups = layout.ciphertexts(count)
    padded = np.zeros((groups * per, key.limbs), dtype=LIMB_DTYPE)
    padded[:, 0] = 1  # the ciphertext 1: an empty cell (0 with no randomness)
    padded[:count] = cells
    lanes = padded.reshape(groups, per, key.limbs)
    n2_b = key.nsquare_bytes
    shift = (1 << layout.cell_bits).to_bytes(layout.cell_bits // 8 + 1, "little")
    exps = np.frombuffer(shift, dtype=np.uint8).reshape(1, -1)
    keep = np.zeros(1, dtype=np.bool_)
    acc = np.ascontiguousarray(lanes[:, per - 1])
    for s in range(per - 2, -1, -1):
        current = np.ascontiguousarray(lanes[:, s])
        # Chunks of whole 8-lane groups: the extension raises 8 ciphertexts at once, so a
        # chunk of 2 costs as much as one of 8 (before: 4 chunks of 1-5 per step, with 6-18
        # ciphertexts a level, most lanes idle)
        bounds = chunk_bounds(groups, executor, None, min_chunk=LANES)
        acc = concat_limbs(
            map_chunks(
                kernels.k_pow,
                bounds,
                partial(_powers, n2_b, acc, exps, keep),
                executor,
            ),
            key.limbs,
        )
        acc = concat_limbs(
            map_chunks(
                kernels.k_mul,
                bounds,
                partial(_pair, n2_b, acc, current),
                executor,
            ),
            key.limbs,
        )
    vec = EncryptedVector.from_limbs(key, acc, 0, validate=False)
    return vec.obfuscate(executor=executor)


def check_positions(positions: NDArray[np.generic], rows: int, nodes: int, what: str) -> None:
    """A positions vector from the guest: (rows,) node indexes in [-1, nodes)."""
    if positions.shape != (rows,):
        raise ValueError(f"{what}: expected {rows} positions, got shape {positions.shape}")
    if positions.size and (positions.min() < -1 or positions.max() >= nodes):
        raise ValueError(f"{what}: a position lies outside [-1, {nodes})")


def check_ciphertext_rows(data: LimbArray, key: PublicKey, what: str) -> None:
    """Every row ciphertext in (0, n^2) and coprime to n (CiphertextError otherwise)."""
    try:
        kernels.k_validate(key.n_bytes, data)
    except CiphertextError as exc:
        raise CiphertextError(f"{what} refused: {exc}") from None
