"""Component protocols: declarations export as JSON; the guard refuses what they do not allow."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fedflow.components import REGISTRY, all_protocols_json, protocol_of
from fedflow.protocol import (
    DecryptRule,
    MessageRule,
    Protocol,
    ProtocolError,
    ProtocolGuard,
    ProtocolViolation,
)
from fedschemas import FederationData

N_SAMPLES = 569

TOY = Protocol(
    component_type="toy_lr",
    dims={"n": "samples at the guest", "k": "features at the host"},
    messages=(
        MessageRule(
            tag="enc_residuals",
            sender="guest",
            receiver="host",
            kinds=("ciphertext_vector",),
            per_iteration=True,
            order=1,
            shape="none",
            blob_formats=("fedcrypto.paillier_vector.v1",),
            max_seq=-1,
        ),
        MessageRule(
            tag="enc_gradient",
            sender="host",
            receiver="guest",
            kinds=("ciphertext_vector",),
            per_iteration=True,
            order=2,
            shape="none",
            blob_formats=("fedcrypto.paillier_vector.v1",),
            decrypt=DecryptRule(by="guest", max_per_iteration=1),
        ),
        MessageRule(
            tag="masked_gradient",
            sender="guest",
            receiver="host",
            kinds=("masked_vector",),
            per_iteration=True,
            order=3,
            shape="(k,)",
            dtypes=("float64",),
        ),
        MessageRule(tag="loss", sender="guest", receiver="host", kinds=("metric",), shape="()"),
    ),
)


def masked(values: np.ndarray) -> FederationData:
    return FederationData(kind="masked_vector", array=values)


def cipher(fmt: str = "fedcrypto.paillier_vector.v1") -> FederationData:
    return FederationData(kind="ciphertext_vector", blob=b"\x01" * 64, blob_format=fmt)


def test_every_registered_component_exports_its_protocol_as_json() -> None:
    # Execute
    document = json.loads(all_protocols_json())

    # Assert: one entry per type, each parses back to the same declaration.
    assert set(document) == set(REGISTRY)
    for name, exported in document.items():
        assert exported["format"] == "fedflow.protocol.v1"
        assert Protocol.from_dict(exported) == protocol_of(name)
    psi = {m["tag"]: m for m in document["psi"]["messages"]}
    assert psi["guest_blinded"]["sender"] == "guest" and psi["guest_blinded"]["receiver"] == "host"
    assert psi["guest_blinded"]["kinds"] == ["id_set"]
    assert psi["guest_blinded"]["shape"] == "(*, 32)" and psi["guest_blinded"]["dtypes"] == [
        "uint8"
    ]
    iter_sum = {m["tag"]: m for m in document["iter_sum"]["messages"]}
    assert iter_sum["masked_sum"]["per_iteration"] is True
    assert iter_sum["ack"]["order"] > iter_sum["masked_sum"]["order"]


def test_a_declaration_round_trips_through_json_with_decrypt_rules() -> None:
    again = Protocol.from_json(TOY.to_json())
    assert again == TOY
    rule = again.rule("enc_gradient", "host", "guest")
    assert rule is not None and rule.decrypt == DecryptRule(by="guest", max_per_iteration=1)


def test_an_allowed_message_passes_and_binds_its_named_dimension() -> None:
    guard = ProtocolGuard(TOY, "guest")
    rule = guard.check_send(
        masked(np.zeros(20)), to_role="host", tag="masked_gradient", iteration=0, seq=0
    )
    assert rule.order == 3
    assert guard.bindings == {"k": 20}


def send(
    to_role: str = "host", tag: str = "masked_gradient", iteration: int = 0, seq: int = 0
) -> dict[str, object]:
    """check_send's arguments: the guest's first masked_gradient unless told otherwise."""
    return {"to_role": to_role, "tag": tag, "iteration": iteration, "seq": seq}


@pytest.mark.parametrize(
    ("role", "payload", "call", "message"),
    [
        (
            "guest",
            masked(np.zeros(3)),
            send(tag="raw_features"),
            r"tag 'raw_features' is not declared, refusing to send it \(declared tags: ",
        ),
        (
            "host",
            masked(np.zeros(3)),
            send(to_role="guest"),
            r"declared guest -> host; refusing to send it host -> guest \(wrong direction",
        ),
        (
            "guest",
            masked(np.zeros(3)),
            send(to_role="arbiter"),
            r"refusing to send it guest -> arbiter",
        ),
        (
            "guest",
            FederationData(kind="aggregate", array=np.zeros(3)),
            send(),
            r"allows kinds masked_vector; payload kind is 'aggregate'",
        ),
        (
            "guest",
            masked(np.zeros((3, 2))),
            send(),
            r"must have shape \(k,\); got an array of shape \(3, 2\)",
        ),
        (
            "guest",
            masked(np.zeros(3, dtype=np.int64)),
            send(),
            r"allows dtypes float64; got int64",
        ),
        (
            "guest",
            masked(np.zeros(3)),
            send(iteration=-1),
            r"is sent once per iteration; iteration -1 given",
        ),
        (
            "guest",
            FederationData(kind="metric", array=np.array(0.5)),
            send(tag="loss", iteration=3),
            r"is sent once, outside iterations; got iteration 3",
        ),
        (
            "guest",
            masked(np.zeros(3)),
            send(seq=1),
            r"allows seq 0..0, got 1",
        ),
        (
            "guest",
            cipher("fedcrypto.something_else.v1"),
            send(tag="enc_residuals", seq=5),
            r"allows blob formats fedcrypto.paillier_vector.v1; got 'fedcrypto.something_else.v1'",
        ),
        (
            "guest",
            FederationData(
                kind="ciphertext_vector",
                array=np.zeros(4),
                blob=b"x",
                blob_format="fedcrypto.paillier_vector.v1",
            ),
            send(tag="enc_residuals"),
            r"carries no array; payload has one of shape \(4,\)",
        ),
        (
            "guest",
            FederationData(kind="masked_vector", array=np.zeros(3), blob=b"x", blob_format="a.v1"),
            send(),
            r"carries no opaque bytes; payload has a blob",
        ),
    ],
)
def test_the_guard_refuses_what_the_protocol_does_not_allow(
    role: str, payload: FederationData, call: dict[str, object], message: str
) -> None:
    guard = ProtocolGuard(TOY, role)
    with pytest.raises(ProtocolViolation, match=r"^toy_lr protocol: .*" + message):
        guard.check_send(payload, **call)  # type: ignore[arg-type]


def test_labels_sent_as_a_metric_are_refused_by_the_shape_rule() -> None:
    # Prepare: the guest's label column, dressed up as a "metric" (a declared scalar).
    labels = (np.random.default_rng(1).random(N_SAMPLES) > 0.5).astype(np.float64)
    guard = ProtocolGuard(TOY, "guest")

    # Execute / Assert
    with pytest.raises(
        ProtocolViolation, match=r"'loss' .* must have shape \(\); got an array of shape \(569,\)"
    ):
        guard.check_send(
            FederationData(kind="metric", array=labels),
            to_role="host",
            tag="loss",
            iteration=-1,
            seq=0,
        )
    # A real scalar metric passes.
    guard.check_send(
        FederationData(kind="metric", array=np.array(0.69)),
        to_role="host",
        tag="loss",
        iteration=-1,
        seq=0,
    )


def test_features_sent_as_a_masked_vector_are_refused_once_the_dimension_is_bound() -> None:
    # Prepare: the host has k = 20 features; the guest binds k before sending.
    guard = ProtocolGuard(TOY, "guest")
    guard.bind(k=20)

    # Execute / Assert: an n-sample column does not fit (k,).
    with pytest.raises(
        ProtocolViolation, match=r"with k = 20 \(features at the host\); got \(569,\)"
    ):
        guard.check_send(
            masked(np.zeros(N_SAMPLES)), to_role="host", tag="masked_gradient", iteration=0, seq=0
        )


def test_a_bound_dimension_stays_fixed_for_the_run() -> None:
    guard = ProtocolGuard(TOY, "guest")
    guard.check_send(masked(np.zeros(5)), to_role="host", tag="masked_gradient", iteration=0, seq=0)
    with pytest.raises(ProtocolViolation, match=r"k = 5"):
        guard.check_send(
            masked(np.zeros(6)), to_role="host", tag="masked_gradient", iteration=1, seq=0
        )
    with pytest.raises(ProtocolViolation, match="already 5"):
        guard.bind(k=7)


def test_accepting_checks_direction_and_form_like_sending() -> None:
    guard = ProtocolGuard(TOY, "host")
    guard.check_accept(
        masked(np.zeros(4)), from_role="guest", tag="masked_gradient", iteration=2, seq=0
    )
    with pytest.raises(ProtocolViolation, match=r"refusing to accept it host -> host"):
        guard.check_accept(
            masked(np.zeros(4)), from_role="host", tag="masked_gradient", iteration=2, seq=0
        )
    with pytest.raises(
        ProtocolViolation, match=r"tag 'model' is not declared, refusing to accept it"
    ):
        guard.check_accept(masked(np.zeros(4)), from_role="guest", tag="model", iteration=2, seq=0)


def test_decryption_is_allowed_only_to_the_declared_role_and_as_often_as_declared() -> None:
    guest, host = ProtocolGuard(TOY, "guest"), ProtocolGuard(TOY, "host")
    guest.authorize_decrypt("enc_gradient", 0, sender="host")
    with pytest.raises(
        ProtocolViolation, match=r"1 time\(s\) per iteration; iteration 0 already had 1"
    ):
        guest.authorize_decrypt("enc_gradient", 0, sender="host")
    guest.authorize_decrypt("enc_gradient", 1, sender="host")
    with pytest.raises(ProtocolViolation, match="may not be decrypted"):
        host.authorize_decrypt("enc_residuals", 0, sender="guest")
    with pytest.raises(ProtocolViolation, match="wrong direction"):
        host.authorize_decrypt("enc_gradient", 0, sender="host")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: MessageRule(tag="t", sender="guest", receiver="host", kinds=("raw",)),
            "kinds must be among",
        ),  # type: ignore[arg-type]
        (
            lambda: MessageRule(
                tag="t", sender="guest", receiver="host", kinds=("metric",), shape="[n]"
            ),
            "is not 'any'",
        ),
        (
            lambda: Protocol(
                "x",
                (
                    MessageRule(
                        tag="t", sender="guest", receiver="host", kinds=("metric",), shape="(n,)"
                    ),
                ),
            ),
            "dimension 'n'",
        ),
        (
            lambda: MessageRule(
                tag="t",
                sender="guest",
                receiver="host",
                kinds=("metric",),
                decrypt=DecryptRule("guest"),
            ),
            "needs a ciphertext",
        ),
    ],
)
def test_a_malformed_declaration_is_refused(build: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        build()  # type: ignore[operator]
