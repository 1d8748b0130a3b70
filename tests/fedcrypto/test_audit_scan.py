"""fedcrypto.audit_scan: the C extension's screening of ciphertext rows against its gmpy2/hashlib
fallback and against a per-row reference (hashlib.blake2b, a comparison and a gcd per row).

The native engines (scalar GMP, and AVX-512 IFMA lanes where the CPU has them) must give the same
digests, counts and verdicts as the fallback on the same rows, including crafted bad
ciphertexts: c = 1, c = 0, c = n^2, c > n^2, c = p k (a factor shared with n), and a bad row at
each place of an eight-row lane group and in the padded last group.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from fedcrypto import audit_scan, generate_keypair
from fedcrypto.paillier.limbs import from_mpz, limbs_for, native_simd
from gmpy2 import gcd, mpz

from tests.fedcrypto.paillier_keys import PK, SK

TINY_PK, TINY_SK = generate_keypair(128, insecure_allow_short=True)

NATIVE = audit_scan.native_scan_available()
ENGINES = [
    "fallback",
    *(["native-gmp"] if NATIVE else []),
    *(["native-simd"] if native_simd else []),
]


def scan(rows: np.ndarray, top: int | None, engine: str) -> audit_scan.RowScan:
    return audit_scan.scan_rows(
        rows, top, use_native=engine != "fallback", simd=engine == "native-simd"
    )


def shares(rows: np.ndarray, moduli: list[mpz], engine: str) -> bool:
    return audit_scan.shares_factor(
        rows, moduli, use_native=engine != "fallback", simd=engine == "native-simd"
    )


def crafted(n: mpz, p: mpz, count: int, seed: int) -> list[mpz]:
    """`count` honest-looking residues (uniform mod n^2, coprime to n) and, at seeded places,
    one of each bad kind."""
    draw = random.Random(seed)
    n2 = n * n
    values = []
    while len(values) < count:
        c = mpz(draw.randrange(2, int(n2)))
        if gcd(c, n) == 1:
            values.append(c)
    bads = (mpz(1), mpz(0), n2, n2 + 5, p * draw.randrange(2, 1 << 64))
    for place, bad in zip(draw.sample(range(count), len(bads)), bads, strict=True):
        values[place] = bad
    return values


def reference(values: list[mpz], n: mpz, width: int) -> tuple[bytes, int, int, bool]:
    n2 = n * n
    digests = b"".join(
        hashlib.blake2b(int(c).to_bytes(width * 8, "little"), digest_size=16).digest()
        for c in values
    )
    return (
        digests,
        sum(1 for c in values if c == 1),
        sum(1 for c in values if not 0 < c < n2),
        any(gcd(c, n) != 1 for c in values),
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bits", [128, 1024])
def test_every_engine_counts_and_digests_crafted_bad_ciphertexts_as_the_reference_does(
    engine: str, bits: int
) -> None:
    # Prepare
    pk, sk = (TINY_PK, TINY_SK) if bits == 128 else (PK, SK)
    n = mpz(pk.n)
    width = limbs_for(n * n)
    values = crafted(n, mpz(sk.p), 61, seed=bits)
    rows = from_mpz(values, width)

    # Execute
    got = scan(rows, n * n, engine)
    shared = shares(rows, [n], engine)

    # Assert
    digests, trivial, outside, bad = reference(values, n, width)
    assert got.digests == digests
    assert (got.equal_to_one, got.outside) == (trivial, outside) == (1, 3)
    assert shared is bad is True


@pytest.mark.parametrize("engine", ENGINES)
def test_a_factor_shared_with_n_is_found_at_every_place_of_a_lane_group(engine: str) -> None:
    # Prepare: 19 rows (two full groups of eight and a padded one of three), all coprime to n
    n, p = mpz(PK.n), mpz(SK.p)
    width = limbs_for(n * n)
    honest = [c for c in crafted(n, p, 40, seed=3) if c > 1 and gcd(c, n) == 1][:19]
    assert audit_scan.shares_factor(from_mpz(honest, width), [n]) is False

    for place in range(len(honest)):
        values = list(honest)
        values[place] = values[place] * SK.q % (n * n)  # shares q with n, still in range

        # Execute
        shared = shares(from_mpz(values, width), [n], engine)

        # Assert
        assert shared is True, f"row {place} not found"


@pytest.mark.parametrize("engine", ENGINES)
def test_every_key_of_the_component_is_checked_for_a_shared_factor(engine: str) -> None:
    # Prepare: rows under the 1024-bit key, one of which shares a factor with the tiny key's n
    n, small = mpz(PK.n), mpz(TINY_PK.n)
    width = limbs_for(n * n)
    values = [c for c in crafted(n, mpz(SK.p), 30, seed=5) if c > 1 and gcd(c, n * small) == 1]
    clean = from_mpz(values, width)
    values[4] = values[4] // TINY_SK.p * TINY_SK.p  # < n^2, a multiple of a factor of `small`

    # Execute
    found = shares(from_mpz(values, width), [n, small], engine)
    quiet = shares(clean, [n, small], engine)

    # Assert
    assert (found, quiet) == (True, False)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("width_change", [-1, 0, 3])
def test_rows_narrower_or_wider_than_the_keys_rows_get_the_reference_answers(
    engine: str, width_change: int
) -> None:
    # Prepare: rows of another width (the scalar engine takes the rows the lanes cannot)
    n = mpz(PK.n)
    width = limbs_for(n * n) + width_change
    draw = random.Random(width)
    values = [mpz(draw.getrandbits(64 * width)) | 1 for _ in range(21)]
    values[7] = n * 3

    # Execute
    got = scan(from_mpz(values, width), n * n, engine)
    shared = shares(from_mpz(values, width), [n], engine)

    # Assert
    digests, trivial, outside, bad = reference(values, n, width)
    assert (got.digests, got.equal_to_one, got.outside) == (digests, trivial, outside)
    assert shared is bad is True


@pytest.mark.parametrize("engine", ENGINES)
def test_no_rows_and_no_known_bound(engine: str) -> None:
    # Prepare
    n = mpz(PK.n)
    width = limbs_for(n * n)
    empty = np.zeros((0, width), dtype="<u8")
    values = [mpz(5), mpz(1), n * n]

    # Execute
    none = scan(empty, n * n, engine)
    unbounded = scan(from_mpz(values, width), None, engine)

    # Assert: no bound, no counts; digests all the same
    assert (none.digests, none.equal_to_one, none.outside) == (b"", 0, 0)
    assert shares(empty, [n], engine) is False
    assert unbounded.digests == reference(values, n, width)[0]
    assert (unbounded.equal_to_one, unbounded.outside) == (0, 0)
