"""The data.ciphertext_* checks give the same findings whichever engine screens the ciphertexts:
the C extension (scalar GMP or AVX-512 IFMA lanes) or its gmpy2/hashlib fallback, on crafted bad
ciphertexts (c = 1, c = 0, c = n^2, c = p k sharing a factor with n, a repeat of an earlier
message's ciphertext), each count checked against a per-ciphertext reference."""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fedaudit.rules.ciphertexts import check_ciphertexts
from fedaudit.rules.state import AuditPolicy, ComponentView, JobView, Observation
from fedcrypto import audit_scan
from fedcrypto.paillier.limbs import from_mpz, limbs_for, native_simd
from gmpy2 import gcd, mpz

from tests.fedcrypto.paillier_keys import OTHER_PK, PK, SK  # generated once per test run

GUEST, HOST = "9999", "10000"

ENGINES = [
    "fallback",
    *(["native-gmp"] if audit_scan.native_scan_available() else []),
    *(["native-simd"] if native_simd else []),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "fallback":
            mp.setattr(audit_scan, "_native_scan", None)
            mp.setattr(audit_scan, "_native_product_gcd", None)
        elif request.param == "native-gmp":
            mp.setattr(audit_scan, "native_simd", False)
        yield request.param


def observe(view: JobView, cv: ComponentView, message_id: str, values: list[mpz]) -> list[str]:
    """The findings (rule: detail) of one message of ciphertexts from the guest to the host."""
    width = limbs_for(max(mpz(n) for n in cv.moduli.values()) ** 2)
    obs = Observation(
        {
            "tag": "residuals",
            "iteration": 0,
            "message_id": message_id,
            "source_party": GUEST,
            "destination_party": HOST,
        },
        SimpleNamespace(array=from_mpz(values, width)),
    )
    found = check_ciphertexts(
        obs, SimpleNamespace(decrypt=None), view, cv, AuditPolicy(party_id=HOST)
    )
    return [f"{f.rule}: {f.detail.split(': ', 1)[1]}" for f in found]


def honest(n: mpz, count: int, seed: int) -> list[mpz]:
    draw = random.Random(seed)
    out: list[mpz] = []
    while len(out) < count:
        c = mpz(draw.randrange(2, int(n * n)))
        if gcd(c, n) == 1:
            out.append(c)
    return out


def test_crafted_bad_ciphertexts_get_the_reference_counts_on_every_engine(engine: str) -> None:
    # Prepare: a component with two keys; a first honest message, then one with bad ciphertexts
    n, other = mpz(PK.n), mpz(OTHER_PK.n)
    top = max(n, other) ** 2
    view = JobView(job_id="job-1")
    cv = ComponentView(name="hetero_lr_0", type="hetero_lr", protocol=None)
    cv.moduli = {GUEST: int(n), HOST: int(other)}
    first = honest(n, 20, seed=1)
    bad = honest(n, 27, seed=2)
    crafted = {
        3: mpz(1),
        5: mpz(0),
        8: n * n,  # out of range for n, shares n
        13: top,  # out of range for both keys
        16: mpz(SK.p) * 12345,  # in range, shares p
        20: first[7],  # a repeat of the first message's
        21: other * 7,  # in range, shares the other key's n
    }
    for place, value in crafted.items():
        bad[place] = value

    # Execute
    first_found = observe(view, cv, "m1", first)
    bad_found = observe(view, cv, "m2", bad)
    again = observe(view, cv, "m2", bad)  # a redelivery of the same message

    # Assert: counts from a per-ciphertext reference
    def not_coprime(c: mpz) -> bool:
        return c > 1 and (gcd(c, n) != 1 or gcd(c, other) != 1)

    seen = set(first)
    expected = [
        f"data.ciphertext_repeated: {sum(c in seen for c in bad)} ciphertext(s) already seen "
        "in job job-1",
        f"data.ciphertext_trivial: {sum(c == 1 for c in bad)} ciphertext(s) equal to 1",
        f"data.ciphertext_range: {sum(not 0 < c < top for c in bad)} ciphertext(s) outside "
        "(0, n^2)",
        f"data.ciphertext_not_coprime: {sum(map(not_coprime, bad))} ciphertext(s) not coprime to n",
    ]
    assert first_found == []
    assert bad_found == expected
    assert expected[0].startswith("data.ciphertext_repeated: 1 ")
    assert expected[3].startswith("data.ciphertext_not_coprime: 4 ")
    # A redelivery repeats nothing of its own first delivery: still the one repeat of m1's
    assert again == expected


def test_the_digests_kept_for_repeats_are_the_same_on_every_engine(engine: str) -> None:
    # Prepare: digests stored by one engine are read back after a restart by whichever runs
    n = mpz(PK.n)
    view = JobView(job_id="job-2")
    cv = ComponentView(name="hetero_lr_0", type="hetero_lr", protocol=None)
    cv.moduli = {GUEST: int(n)}
    values = honest(n, 9, seed=4)

    # Execute
    observe(view, cv, "m1", values)

    # Assert: the fallback's digests (hashlib's BLAKE2b-128 of each row)
    width = limbs_for(n * n)
    reference = audit_scan.scan_rows(from_mpz(values, width), None, use_native=False).digests
    assert view.unsaved == [("m1", reference)]
