"""Component protocols: what each component may send, to whom, when, and in what form.

A `Protocol` is a machine-readable declaration, one per component type: for every message tag,
the sending and receiving role, whether it is sent once or once per iteration (and its order
within an iteration), the payload kinds allowed, a shape rule and a dtype rule for arrays, the
blob formats allowed for opaque bytes, how many sequence numbers (chunks) it may span, and, for
ciphertexts, who may decrypt it and how often per iteration. `Protocol.to_json()` exports it;
the audit service runs these declarations as state machines.

`ProtocolGuard` enforces one protocol for one party's run of a component: the Federation calls
`check_send` before anything is published and `check_accept` before a received payload is
handed to the component. Anything the declaration does not allow raises `ProtocolViolation`
with a message naming the component type, the tag and the rule broken.

Raw features or labels cannot leave a party by construction: the payload kinds
(fedschemas.FederationData.kind) are only ciphertext_vector, masked_vector, public_key,
aggregate, id_set, metric, plain_control and partial_score -- there is no kind for plaintext
features or labels -- and every rule pins the shape of what it carries with named dimensions,
so an n-sample float array sent as a "metric" (declared as a scalar) or as an "aggregate"
(declared per feature) is refused.

`partial_score` is the one kind that carries a plaintext value per row: a party's partial
linear predictor X_p w_p (its own features times its own weights), which the receiver learns
row by row. A rule declaring it must say so with a one-dimensional shape (one value per row), so
an audit listing the rules of this kind lists every per-row disclosure of every component;
`aggregate` is for sums over rows (a shape per feature or a scalar), never per-row values.

Shape rules: "any" (no constraint), "none" (no array allowed), or a tuple "(d1, d2, ...)" where
each dim is an int literal, "*" (any length) or a name. A name is bound to a length the first
time a message of the run uses it (or up front, through `ProtocolGuard.bind`), and every later
use of the name in that run must have the same length; `Protocol.dims` says what each name
means, e.g. {"k": "number of features at the host"}.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

if TYPE_CHECKING:
    from fedschemas import FederationData

# The wire contract (fedschemas.FederationDataKind, fedschemas.PartyRole) defines these too, but
# this module is part of fedflow's light descriptors (fedflow.descriptors: no numpy), and
# importing fedschemas imports numpy. tests/flow/test_descriptors.py checks that the two
# definitions are equal, so they cannot drift apart.
PayloadKind = Literal[
    "ciphertext_vector",
    "masked_vector",
    "public_key",
    "aggregate",
    "id_set",
    "metric",
    "plain_control",
    "partial_score",
]
PAYLOAD_KINDS: Final[tuple[str, ...]] = get_args(PayloadKind)

ProtocolRole = Literal["guest", "host", "arbiter"]
PROTOCOL_ROLES: Final[tuple[str, ...]] = get_args(ProtocolRole)

PROTOCOL_FORMAT: Final = "fedflow.protocol.v1"

ANY: Final = "any"
NONE: Final = "none"
UNBOUNDED_SEQ: Final = -1

_DIM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ProtocolError(ValueError):
    """A protocol declaration is malformed (a programming error in a component)."""


class ProtocolViolation(Exception):
    """A send or a received message that the component's declared protocol does not allow."""


def parse_shape(rule: str) -> tuple[str | int, ...] | None:
    """The dims of a tuple shape rule; None for "any"; () for "()" (a scalar).

    "none" is handled by the caller (no array allowed); anything else malformed raises.
    """
    text = rule.strip()
    if text == ANY:
        return None
    if not (text.startswith("(") and text.endswith(")")):
        raise ProtocolError(f"shape rule {rule!r} is not 'any', 'none' or '(d1, d2, ...)'")
    inner = text[1:-1].strip()
    if not inner:
        return ()
    dims: list[str | int] = []
    for part in (p.strip() for p in inner.split(",")):
        if not part:
            continue  # "(n,)"
        if part.isdigit():
            dims.append(int(part))
        elif part == "*" or _DIM_NAME.match(part):
            dims.append(part)
        else:
            raise ProtocolError(f"shape rule {rule!r}: bad dimension {part!r}")
    return tuple(dims)


@dataclass(frozen=True)
class DecryptRule:
    """Who may decrypt a ciphertext message and how many times per iteration."""

    by: ProtocolRole
    max_per_iteration: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "max_per_iteration": self.max_per_iteration}


@dataclass(frozen=True)
class MessageRule:
    """One declared message: tag, direction, timing and form.

    `kinds` are the allowed FederationData kinds; `shape`/`dtypes` constrain `array` ("none":
    no array; `dtypes` () means any whitelisted dtype); `blob_formats` are the allowed
    `blob_format` names (empty: no blob); seq numbers 0..max_seq are allowed (UNBOUNDED_SEQ for
    a message chunked over any number of seqs); `order` ranks the message within an iteration
    (or within the once-messages when not per_iteration): a message of higher order is an answer
    to the lower ones.
    """

    tag: str
    sender: ProtocolRole
    receiver: ProtocolRole
    kinds: tuple[PayloadKind, ...]
    per_iteration: bool = False
    order: int = 0
    shape: str = ANY
    dtypes: tuple[str, ...] = ()
    blob_formats: tuple[str, ...] = ()
    max_seq: int = 0
    decrypt: DecryptRule | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.sender not in PROTOCOL_ROLES or self.receiver not in PROTOCOL_ROLES:
            raise ProtocolError(f"tag {self.tag!r}: roles must be one of {PROTOCOL_ROLES}")
        if not self.kinds or any(k not in PAYLOAD_KINDS for k in self.kinds):
            raise ProtocolError(f"tag {self.tag!r}: kinds must be among {PAYLOAD_KINDS}")
        if self.shape != NONE:
            parse_shape(self.shape)
        if self.max_seq < UNBOUNDED_SEQ:
            raise ProtocolError(f"tag {self.tag!r}: max_seq must be >= -1")
        if self.decrypt is not None and "ciphertext_vector" not in self.kinds:
            raise ProtocolError(f"tag {self.tag!r}: a decrypt rule needs a ciphertext kind")
        if "partial_score" in self.kinds and (
            self.shape in (ANY, NONE) or len(parse_shape(self.shape) or ()) != 1
        ):
            raise ProtocolError(
                f"tag {self.tag!r}: partial_score is one value per row, its shape must be "
                f"one-dimensional, e.g. '(m,)' (got {self.shape!r})"
            )

    @property
    def direction(self) -> str:
        return f"{self.sender} -> {self.receiver}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "sender": self.sender,
            "receiver": self.receiver,
            "kinds": list(self.kinds),
            "per_iteration": self.per_iteration,
            "order": self.order,
            "shape": self.shape,
            "dtypes": list(self.dtypes) or ANY,
            "blob_formats": list(self.blob_formats),
            "max_seq": self.max_seq,
            "decrypt": None if self.decrypt is None else self.decrypt.to_dict(),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MessageRule:
        decrypt = data.get("decrypt")
        dtypes = data.get("dtypes", ANY)
        return cls(
            tag=data["tag"],
            sender=data["sender"],
            receiver=data["receiver"],
            kinds=tuple(data["kinds"]),
            per_iteration=bool(data.get("per_iteration", False)),
            order=int(data.get("order", 0)),
            shape=data.get("shape", ANY),
            dtypes=() if dtypes == ANY else tuple(dtypes),
            blob_formats=tuple(data.get("blob_formats", ())),
            max_seq=int(data.get("max_seq", 0)),
            decrypt=None if decrypt is None else DecryptRule(**decrypt),
            description=data.get("description", ""),
        )


def array_rule(
    tag: str,
    sender: ProtocolRole,
    receiver: ProtocolRole,
    kind: PayloadKind,
    order: int,
    shape: str,
    description: str = "",
    *,
    per_iteration: bool = False,
    dtype: str = "float64",
    max_seq: int = 0,
) -> MessageRule:
    """A message that carries one array of one dtype (float64 unless said) and nothing else:
    the common form of plaintext messages (aggregates, partial scores, masked vectors)."""
    return MessageRule(
        tag=tag,
        sender=sender,
        receiver=receiver,
        kinds=(kind,),
        per_iteration=per_iteration,
        order=order,
        shape=shape,
        dtypes=(dtype,),
        max_seq=max_seq,
        description=description,
    )


def control_rule(
    tag: str, sender: ProtocolRole, receiver: ProtocolRole, order: int, description: str = ""
) -> MessageRule:
    """A per-iteration plain_control message with no array (an acknowledgement, a stop/go)."""
    return MessageRule(
        tag=tag,
        sender=sender,
        receiver=receiver,
        kinds=("plain_control",),
        per_iteration=True,
        order=order,
        shape=NONE,
        description=description,
    )


@dataclass(frozen=True)
class Protocol:
    """The declared messages of one component type."""

    component_type: str
    messages: tuple[MessageRule, ...] = ()
    dims: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        for rule in self.messages:
            key = (rule.tag, rule.sender, rule.receiver)
            if key in seen:
                raise ProtocolError(
                    f"{self.component_type}: tag {rule.tag!r} declared twice for {rule.direction}"
                )
            seen.add(key)
            shape = parse_shape(rule.shape) if rule.shape != NONE else ()
            for dim in shape or ():
                if isinstance(dim, str) and dim != "*" and dim not in self.dims:
                    raise ProtocolError(
                        f"{self.component_type}: tag {rule.tag!r} uses dimension {dim!r}, "
                        f"which `dims` does not describe"
                    )

    @property
    def tags(self) -> list[str]:
        return sorted({rule.tag for rule in self.messages})

    def rules_for(self, tag: str) -> list[MessageRule]:
        return [rule for rule in self.messages if rule.tag == tag]

    def rule(self, tag: str, sender: str, receiver: str) -> MessageRule | None:
        for candidate in self.messages:
            if (candidate.tag, candidate.sender, candidate.receiver) == (tag, sender, receiver):
                return candidate
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROTOCOL_FORMAT,
            "component_type": self.component_type,
            "description": self.description,
            "dims": dict(self.dims),
            "messages": [rule.to_dict() for rule in self.messages],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Protocol:
        if data.get("format") != PROTOCOL_FORMAT:
            raise ProtocolError(f"not a {PROTOCOL_FORMAT} document")
        return cls(
            component_type=data["component_type"],
            description=data.get("description", ""),
            dims=dict(data.get("dims", {})),
            messages=tuple(MessageRule.from_dict(m) for m in data.get("messages", ())),
        )

    @classmethod
    def from_json(cls, text: str) -> Protocol:
        return cls.from_dict(json.loads(text))


class ProtocolGuard:
    """Enforces one protocol for one party (in one role) running one component."""

    def __init__(self, protocol: Protocol, role: str) -> None:
        self.protocol = protocol
        self.role = role
        self._bound: dict[str, int] = {}
        self._decrypted: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    @property
    def bindings(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bound)

    def bind(self, **dims: int) -> None:
        """Fix named dimensions up front (e.g. bind(k=n_features)) before anything is sent."""
        with self._lock:
            for name, length in dims.items():
                if name not in self.protocol.dims:
                    raise ProtocolError(
                        f"{self.protocol.component_type}: no dimension {name!r} to bind"
                    )
                known = self._bound.get(name)
                if known is not None and known != length:
                    raise ProtocolViolation(
                        f"{self.protocol.component_type} protocol: dimension {name!r} is already "
                        f"{known}, cannot rebind it to {length}"
                    )
                self._bound[name] = length

    def _fail(self, text: str) -> ProtocolViolation:
        return ProtocolViolation(f"{self.protocol.component_type} protocol: {text}")

    def _find(self, tag: str, sender: str, receiver: str, verb: str) -> MessageRule:
        rule = self.protocol.rule(tag, sender, receiver)
        if rule is not None:
            return rule
        declared = self.protocol.rules_for(tag)
        if not declared:
            raise self._fail(
                f"tag {tag!r} is not declared, refusing to {verb} it "
                f"(declared tags: {', '.join(self.protocol.tags) or 'none'})"
            )
        directions = ", ".join(r.direction for r in declared)
        raise self._fail(
            f"tag {tag!r} is declared {directions}; refusing to {verb} it {sender} -> {receiver} "
            "(wrong direction or role)"
        )

    def check_send(
        self, payload: FederationData, *, to_role: str, tag: str, iteration: int, seq: int
    ) -> MessageRule:
        """The rule allowing this party to send `payload`; ProtocolViolation if none does."""
        rule = self._find(tag, self.role, to_role, "send")
        self._check_message(rule, payload, iteration, seq)
        return rule

    def check_accept(
        self, payload: FederationData, *, from_role: str, tag: str, iteration: int, seq: int
    ) -> MessageRule:
        """The rule allowing this party to accept `payload`; ProtocolViolation if none does."""
        rule = self._find(tag, from_role, self.role, "accept")
        self._check_message(rule, payload, iteration, seq)
        return rule

    def expected(self, *, from_role: str, tag: str) -> MessageRule:
        """The rule for receiving `tag` from `from_role` (checked before waiting for it)."""
        return self._find(tag, from_role, self.role, "accept")

    def _check_message(
        self, rule: MessageRule, payload: FederationData, iteration: int, seq: int
    ) -> None:
        where = f"tag {rule.tag!r} ({rule.direction})"
        if rule.per_iteration and iteration < 0:
            raise self._fail(f"{where} is sent once per iteration; iteration {iteration} given")
        if not rule.per_iteration and iteration != -1:
            raise self._fail(f"{where} is sent once, outside iterations; got iteration {iteration}")
        if rule.max_seq != UNBOUNDED_SEQ and not 0 <= seq <= rule.max_seq:
            raise self._fail(f"{where} allows seq 0..{rule.max_seq}, got {seq}")
        if payload.kind not in rule.kinds:
            raise self._fail(
                f"{where} allows kinds {', '.join(rule.kinds)}; payload kind is {payload.kind!r}"
            )
        if payload.blob is not None:
            if not rule.blob_formats:
                raise self._fail(f"{where} carries no opaque bytes; payload has a blob")
            if payload.blob_format not in rule.blob_formats:
                raise self._fail(
                    f"{where} allows blob formats {', '.join(rule.blob_formats)}; "
                    f"got {payload.blob_format!r}"
                )
        if payload.array is not None:
            self._check_array(rule, where, payload.array.dtype.name, payload.array.shape)

    def _check_array(
        self, rule: MessageRule, where: str, dtype: str, shape: tuple[int, ...]
    ) -> None:
        if rule.shape == NONE:
            raise self._fail(f"{where} carries no array; payload has one of shape {shape}")
        if rule.dtypes and dtype not in rule.dtypes:
            raise self._fail(f"{where} allows dtypes {', '.join(rule.dtypes)}; got {dtype}")
        dims = parse_shape(rule.shape)
        if dims is None:
            return
        if len(dims) != len(shape):
            raise self._fail(
                f"{where} must have shape {rule.shape}; got an array of shape {shape} "
                "(refused by the shape rule)"
            )
        with self._lock:
            pending: dict[str, int] = {}
            for dim, length in zip(dims, shape, strict=True):
                if dim == "*":
                    continue
                if isinstance(dim, int):
                    if length != dim:
                        raise self._fail(
                            f"{where} must have shape {rule.shape}; got {shape} "
                            "(refused by the shape rule)"
                        )
                    continue
                known = self._bound.get(dim, pending.get(dim))
                if known is not None and known != length:
                    meaning = self.protocol.dims.get(dim, "")
                    raise self._fail(
                        f"{where} must have shape {rule.shape} with {dim} = {known} ({meaning}); "
                        f"got {shape} (refused by the shape rule)"
                    )
                pending[dim] = length
            self._bound.update(pending)

    def authorize_decrypt(self, tag: str, iteration: int, *, sender: str) -> None:
        """Count one decryption of `tag`'s ciphertext in `iteration`; refuse beyond the rule."""
        rule = self._find(tag, sender, self.role, "decrypt")
        if rule.decrypt is None:
            raise self._fail(f"tag {tag!r} ({rule.direction}) may not be decrypted")
        if rule.decrypt.by != self.role:
            raise self._fail(
                f"tag {tag!r} may be decrypted by {rule.decrypt.by} only, not {self.role}"
            )
        with self._lock:
            key = (tag, iteration)
            done = self._decrypted.get(key, 0)
            if done >= rule.decrypt.max_per_iteration:
                raise self._fail(
                    f"tag {tag!r} may be decrypted {rule.decrypt.max_per_iteration} time(s) per "
                    f"iteration; iteration {iteration} already had {done}"
                )
            self._decrypted[key] = done + 1


def protocols_to_json(protocols: Iterable[Protocol]) -> str:
    """Several protocols as one JSON document keyed by component type (for the audit service)."""
    return json.dumps({p.component_type: p.to_dict() for p in protocols}, indent=2)
