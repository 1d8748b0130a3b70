"""Whether every party's rows are the same customers in the same order, checked before a
vertical model's key exchange, without showing a party's ids to another.

Every vertical model assumes row i is the same id at every party; only psi (or a data_split of
psi's output) makes it so. Without psi upstream a model trained on misaligned rows without a
word (diabetes with the host's rows shuffled: hetero_linr "succeeded" with r2 0.41). So each
vertical model runs, after its own input checks (fedflow.kit.inputs) and before its key
exchange (a predict component: before the hosts' scores), one round trip:

  1. guest -> host  alignment_salt    a fresh random 32-byte salt (sealed in the task's
                                      checkpoint, so a resumed guest sends the same one) and
                                      the guest's row count of each checked table;
  2. host  -> guest alignment_digest  per table, HMAC-SHA-256(salt, the host's ids in row
                                      order, each length-prefixed, after the row count), or
                                      32 zero bytes where the host's row count differs from
                                      the guest's (the counts already say "not aligned"); and
                                      the host's row counts;
  3. guest -> host  alignment_verdict whether this host's tables are aligned, and whether
                                      every other host's are: a job with any misaligned host
                                      fails at every party.

The checked tables are `data` and, where the model takes one, `validate_data` (both are
trained or scored row by row against the guest's labels).

What each party learns (docs/components.md, "Row alignment"): the guest learns each host's
row count of each checked table, and, where the counts are equal, one bit: the same ids in the
same order, or not. A host learns the guest's row counts and the verdict bits. No id crosses.
Because the guest chooses the salt, it could test a guess of a host's whole ordered id list
against the digest (e.g. "the host holds my ids with rows 3 and 7 swapped"); a digest confirms
or refutes one guess and reveals nothing else. With unequal counts no digest is sent, so which
of its ids a host lacks cannot be tested.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Final

import numpy as np
from fedschemas import FederationData
from fedschemas.payloads import MetaValue
from numpy.typing import NDArray

from fedflow.alignment_protocol import DIGEST_BYTES, SALT_BYTES
from fedflow.kit.inputs import InputRefused
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

CHECKED: Final = ("data", "validate_data")
"""The input slots compared, where the component has them."""


class RowsNotAligned(InputRefused):
    """The parties' rows of a table are not the same ids in the same order."""


def id_digest(salt: bytes, ids: NDArray[np.str_]) -> bytes:
    """HMAC-SHA-256 under `salt` of the row count (8 bytes, big-endian) followed by every id
    in row order as its UTF-8 length (4 bytes, big-endian) and bytes: two id lists give the
    same digest only when they are equal, element by element."""
    encoded = [str(key).encode() for key in ids.tolist()]
    parts = [len(encoded).to_bytes(8, "big")]
    for key in encoded:
        parts.append(len(key).to_bytes(4, "big"))
        parts.append(key)
    return hmac.new(salt, b"".join(parts), hashlib.sha256).digest()


def _checked(ctx: ComponentContext) -> dict[str, Table]:
    return {slot: ctx.input(slot) for slot in CHECKED if slot in ctx.inputs}


def _advice(ctx: ComponentContext) -> str:
    return (
        f"put psi before {ctx.component} ({ctx.component_type}), or a data_split of psi's "
        "output: a vertical model needs row i to be the same id at every party"
    )


def check_alignment(ctx: ComponentContext) -> None:
    """Run the row-alignment round trip (module docstring) as this party's role; RowsNotAligned
    at every party when any host's checked table is not the guest's ids in the guest's order.
    Call it after the party's own input checks and before the key exchange."""
    if ctx.role == "guest":
        _guest(ctx)
    else:
        _host(ctx)


def _guest(ctx: ComponentContext) -> None:
    fed = ctx.federation
    tables = _checked(ctx)
    salt = ctx.secret("alignment_salt", lambda: os.urandom(SALT_BYTES))
    rows: dict[str, MetaValue] = {f"rows.{slot}": table.rows for slot, table in tables.items()}
    fed.send(
        FederationData(
            kind="plain_control", array=np.frombuffer(salt, dtype=np.uint8).copy(), meta=rows
        ),
        to="host",
        tag="alignment_salt",
    )
    own = {slot: id_digest(salt, table.ids) for slot, table in tables.items()}
    answers = fed.recv_all(frm="host", tag="alignment_digest")
    problems: dict[str, dict[str, str]] = {}  # host -> table -> what differs
    for host, answer in answers.items():
        digests = np.asarray(answer.array, dtype=np.uint8)
        for index, (slot, table) in enumerate(tables.items()):
            theirs = int(answer.meta.get(f"rows.{slot}", -1))
            if theirs != table.rows:
                detail = f"{theirs} rows there, {table.rows} at the guest"
            elif not hmac.compare_digest(bytes(digests[index]), own[slot]):
                detail = f"the same row count ({table.rows}), different ids or order"
            else:
                continue
            problems.setdefault(host, {})[slot] = detail
    for host in answers:
        fed.send(
            FederationData(
                kind="plain_control",
                meta={
                    "misaligned": ",".join(problems.get(host, {})),
                    "others_aligned": not any(h != host for h in problems),
                },
            ),
            to=host,
            tag="alignment_verdict",
        )
    if problems:
        found = "; ".join(
            f"the rows of {slot} at party {host} (host) are not aligned with the guest's "
            f"(party {ctx.party_id}): {detail}"
            for host, details in problems.items()
            for slot, detail in details.items()
        )
        raise RowsNotAligned(f"{ctx.component_type}: {found}: {_advice(ctx)}")


def _host(ctx: ComponentContext) -> None:
    fed = ctx.federation
    tables = _checked(ctx)
    request = fed.recv(frm="guest", tag="alignment_salt")
    salt = bytes(np.asarray(request.array, dtype=np.uint8))
    digests = np.zeros((len(tables), DIGEST_BYTES), dtype=np.uint8)
    for index, (slot, table) in enumerate(tables.items()):
        # Unequal counts already say "not aligned": no digest, so no guess can be tested.
        if int(request.meta.get(f"rows.{slot}", -1)) == table.rows:
            digests[index] = np.frombuffer(id_digest(salt, table.ids), dtype=np.uint8)
    fed.send(
        FederationData(
            kind="id_set",
            array=digests,
            meta={f"rows.{slot}": table.rows for slot, table in tables.items()},
        ),
        to="guest",
        tag="alignment_digest",
    )
    verdict = fed.recv(frm="guest", tag="alignment_verdict").meta
    misaligned = [slot for slot in str(verdict.get("misaligned", "")).split(",") if slot]
    where = f"at party {ctx.party_id} (host)"
    if misaligned:
        details = []
        for slot in misaligned:
            theirs = int(request.meta.get(f"rows.{slot}", -1))
            here = tables[slot].rows if slot in tables else 0
            details.append(
                f"the rows of {slot} {where} are not aligned with the guest's: "
                + (
                    f"{here} rows here, {theirs} at the guest"
                    if here != theirs
                    else f"the same row count ({here}), different ids or order"
                )
            )
        raise RowsNotAligned(f"{ctx.component_type}: {'; '.join(details)}: {_advice(ctx)}")
    if not verdict.get("others_aligned", False):
        raise RowsNotAligned(
            f"{ctx.component_type}: another host's rows are not aligned with the guest's (this "
            f"party's, {ctx.party_id}, are): the job stops at every party; {_advice(ctx)}"
        )
