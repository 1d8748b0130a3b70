"""The data.ciphertext_* checks (rules/data.py lists the data-flow rules): every ciphertext c
of a ciphertext_vector in (0, n^2) for the key it is under, != 1, coprime to every key's n, and
never seen before in the job. The hot path of a receiving party's audit: it runs on every
ciphertext that crosses."""

from __future__ import annotations

import numpy as np
from fedcrypto.audit_scan import DIGEST_BYTES, scan_rows, shares_factor
from fedcrypto.paillier.limbs import to_mpz
from fedflow.descriptors import MessageRule
from gmpy2 import gcd, mpz
from numpy.typing import NDArray

from fedaudit.rules.catalogue import Finding
from fedaudit.rules.state import AuditPolicy, ComponentView, JobView, Observation


def check_ciphertexts(
    obs: Observation, rule: MessageRule, view: JobView, cv: ComponentView, policy: AuditPolicy
) -> list[Finding]:
    payload = obs.payload
    if payload is None or payload.array is None or payload.array.ndim != 2:
        return []
    sender = obs.sender
    if rule.decrypt is not None:
        holder = obs.receiver
        moduli = [cv.moduli[holder]] if holder in cv.moduli else []
    else:
        moduli = list(cv.moduli.values())
    data = np.ascontiguousarray(payload.array, dtype="<u8")
    # In (0, n^2) for some key exactly when in (0, max n^2): one comparison per ciphertext.
    top = max(mpz(n) * mpz(n) for n in moduli) if moduli else None
    # Digests, the count equal to 1 and the count out of range in one pass over the limbs (the
    # C extension where built; gmpy2 and hashlib otherwise, with the same answers).
    scan = scan_rows(data, top)
    found: list[Finding] = []
    tag = obs.record["tag"]
    where = f"{tag!r} of {cv.name} (iteration {obs.record['iteration']})"
    repeats = 0
    message_id = str(obs.record["message_id"])
    seen, room = view.ciphertexts, policy.repeat_memory - len(view.ciphertexts)
    new: list[bytes] = []
    digests = scan.digests
    for i in range(0, len(digests), DIGEST_BYTES):
        digest = digests[i : i + DIGEST_BYTES]
        first = seen.get(digest)
        # Keyed by message: the same message seen again (a redelivery) repeats nothing.
        if first is None:
            if len(new) < room:
                seen[digest] = message_id
                new.append(digest)
        elif first != message_id:
            repeats += 1
    if new:
        view.unsaved.append((message_id, b"".join(new)))
    if repeats:
        found.append(
            policy.finding(
                "data.ciphertext_repeated",
                sender,
                f"{where}: {repeats} ciphertext(s) already seen in job {view.job_id}",
            )
        )
    if not moduli:
        if not view.unchecked_reported:
            view.unchecked_reported = True
            found.append(
                policy.finding(
                    "data.ciphertext_unchecked",
                    sender,
                    f"{where}: no key of the component known yet",
                )
            )
        return found
    if scan.equal_to_one:
        found.append(
            policy.finding(
                "data.ciphertext_trivial",
                sender,
                f"{where}: {scan.equal_to_one} ciphertext(s) equal to 1",
            )
        )
    if scan.outside:
        found.append(
            policy.finding(
                "data.ciphertext_range",
                sender,
                f"{where}: {scan.outside} ciphertext(s) outside (0, n^2)",
            )
        )
    # A factor shared with any key's n: an honest ciphertext under one key shares none with
    # another's n but with negligible probability, and one that does reveals that key. One gcd
    # per key over the product of all rows; the culprits are counted only when there are some.
    not_coprime = count_not_coprime(data, moduli) if shares_factor(data, moduli) else 0
    if not_coprime:
        found.append(
            policy.finding(
                "data.ciphertext_not_coprime",
                sender,
                f"{where}: {not_coprime} ciphertext(s) not coprime to n",
            )
        )
    return found


def count_not_coprime(data: NDArray[np.uint64], moduli: list[int]) -> int:
    """How many ciphertexts above 1 share a factor with some key's n (0 and 1 are the range and
    trivial rules' findings)."""
    ns = [mpz(n) for n in moduli]
    return sum(1 for c in to_mpz(data) if c > 1 and any(gcd(c, n) != 1 for n in ns))
