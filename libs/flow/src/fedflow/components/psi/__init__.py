"""psi: ECDH private set intersection of the parties' ids (fedcrypto.psi), as a component.

Runs at the guest and every host. With each host the guest runs one two-party DH-PSI
(a fresh secret per host, so hosts cannot link their views); both sides of a pair learn which
of their own ids the other holds. With several hosts the guest intersects the pairwise results
and tells each host, as a boolean mask over that host's pairwise intersection, which ids are in
the final one (a host learns nothing it could not infer from the final result).

Both sides output the rows of their input whose ids are in the intersection, sorted by id (by
code point, i.e. by the ids' UTF-8 bytes): the same order at every party with no extra message.

Messages (all once, outside iterations; arrays of 32-byte Curve25519 points, chunked over seq
numbers, `meta["chunks"]` on every chunk):
  1. guest -> host  guest_blinded    H(x)^a for the guest's ids, sorted by value
  1. host  -> guest host_blinded     H(y)^b for the host's ids
  2. guest -> host  guest_reblinded  (H(y)^b)^a, in the order received
  2. host  -> guest host_reblinded   (H(x)^a)^b, in the order received
  3. guest -> host  intersection_mask (several hosts only) bool per pairwise-intersection id

Resume: the secrets are a sealed task secret (ctx.secret, as hetero_lr's private key),
checkpointed before anything is sent, so a restarted party blinds to
the same values and re-sends identical messages under the same ids (blinding is deterministic
given the secret; the sort by value fixes the order). The runtime deletes the checkpoint, and
with it the secrets, once the task's success is recorded.

Layout: this `__init__` (the declaration, light), protocol.py (the messages), component.py (the
orchestration; the DH-PSI arithmetic is fedcrypto.psi).
"""

from __future__ import annotations

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.components.psi.protocol import PSI_PROTOCOL


class PsiParams(ComponentParams):
    chunk_size: int = Field(default=100_000, ge=1, le=10_000_000)
    """Curve points per message (32 bytes each)."""
    min_intersection: int = Field(default=1, ge=0)
    """The fewest shared ids the job goes on with. Below it every party's psi fails, naming
    the sizes (an empty intersection is nearly always ids written differently at the parties,
    and every model after it would fail on an empty table); 0 lets an empty result through."""


PSI = ComponentDescriptor(
    name="psi",
    description="ECDH private set intersection: each party keeps the rows of shared ids",
    entry="fedflow.components.psi.component:run",
    roles=("guest", "host"),
    params=PsiParams,
    inputs=(InputSpec("data", description="a table with the ids to intersect"),),
    outputs=("data",),
    protocol=PSI_PROTOCOL,
)
