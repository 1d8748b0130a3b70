"""The Federation API: how a component talks to the other parties of its job.

    fed.send(payload, to="host", tag="masked_sum", iteration=r)
    reply = fed.recv(frm="host", tag="ack", iteration=r)

`to` and `frm` name a role ("guest", "host", "arbiter") or a party id. Sending to a role that
several parties play (several hosts) sends to each; receiving needs exactly one party (use
`recv_all` for a role of several). Receives match on (tag, iteration, seq) and the sender, in
any arrival order. Every send and receive goes through the component's `ProtocolGuard`: an
undeclared tag, a wrong direction, an undeclared kind, shape or dtype raises
`ProtocolViolation` and nothing is sent or handed over.

Implementations: `BusFederation` (fedflow.bus_federation) over the party's bus and its durable
mailbox, used both by the worker service and by standalone mode. `report` is the one call that
stays inside the party: a check's counts for the party's own audit (docs/audit.md).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

from fedschemas import PARTY_ROLES, FederationData, PartyRef, Payload

from fedflow.protocol import ProtocolGuard

ROLE_NAMES = PARTY_ROLES


class RecvTimeout(TimeoutError):
    """An expected message did not arrive in time; the message names the party."""


class TaskCanceled(Exception):
    """The task was canceled (job stopped or failed) while it waited or worked."""


class Federation(abc.ABC):
    """Send and receive by tag and iteration, for one party's task of one component."""

    def __init__(
        self, party_id: str, role: str, parties: Mapping[str, list[str]], guard: ProtocolGuard
    ) -> None:
        self.party_id = party_id
        self.role = role
        self.parties = {r: list(ids) for r, ids in parties.items()}
        self.guard = guard

    def resolve(self, target: str) -> list[PartyRef]:
        """The parties `target` (a role or a party id) names, this party's own task excluded."""
        if target in ROLE_NAMES:
            ids = self.parties.get(target, [])
            refs = [
                PartyRef(party_id=p, role=target)  # type: ignore[arg-type]
                for p in ids
                if (p, target) != (self.party_id, self.role)
            ]
            if not refs:
                raise ValueError(f"no party plays {target} in this job (besides this task)")
            return refs
        roles = [r for r, ids in self.parties.items() if target in ids]
        if not roles:
            raise ValueError(f"party {target!r} is not a party of this job")
        if len(roles) > 1:
            roles = [r for r in roles if (target, r) != (self.party_id, self.role)]
            if len(roles) != 1:
                raise ValueError(f"party {target} plays {', '.join(roles)}: address it by role")
        return [PartyRef(party_id=target, role=roles[0])]  # type: ignore[arg-type]

    def resolve_one(self, target: str) -> PartyRef:
        refs = self.resolve(target)
        if len(refs) != 1:
            raise ValueError(
                f"{target} names {len(refs)} parties ({', '.join(r.party_id for r in refs)}); "
                "receive from one party id, or use recv_all"
            )
        return refs[0]

    @abc.abstractmethod
    def send(
        self, payload: FederationData, *, to: str, tag: str, iteration: int = -1, seq: int = 0
    ) -> None:
        """Send `payload` to the party or every party of the role `to`."""

    @abc.abstractmethod
    def recv(
        self,
        *,
        frm: str,
        tag: str,
        iteration: int = -1,
        seq: int = 0,
        timeout: float | None = None,
    ) -> FederationData:
        """Wait for what `frm` sent with this tag, iteration and seq (None: the default wait)."""

    def recv_all(
        self,
        *,
        frm: str,
        tag: str,
        iteration: int = -1,
        seq: int = 0,
        timeout: float | None = None,
    ) -> dict[str, FederationData]:
        """What every party of `frm` sent with this tag, by party id."""
        return {
            ref.party_id: self.recv(
                frm=ref.party_id, tag=tag, iteration=iteration, seq=seq, timeout=timeout
            )
            for ref in self.resolve(frm)
        }

    def bind_dims(self, **dims: int) -> None:
        """Fix the protocol's named dimensions for this run (e.g. bind_dims(k=n_features))."""
        self.guard.bind(**dims)

    def report(self, payload: Payload, *, tag: str, iteration: int = -1) -> None:
        """Tell this party's own audit service what a check inside the component found (a
        report.* payload: counts, never values; it never goes to a peer). `tag` and
        `iteration` name the report, so a redone step reports under the same message id.
        This base drops it: a federation with no audit behind it (tests' in-memory ones)."""
        del payload, tag, iteration

    def authorize_decrypt(self, tag: str, iteration: int, *, frm: str) -> None:
        """Call before decrypting what `frm` sent under `tag`: refuses what the protocol's
        decrypt rule does not allow (wrong role, too many decryptions this iteration)."""
        self.guard.authorize_decrypt(tag, iteration, sender=self.resolve_one(frm).role)
