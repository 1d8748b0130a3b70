"""hetero_lr_predict says what crosses: the host's per-row partial scores travel as kind
"partial_score" (not "aggregate", which is for sums over rows), the protocol refuses the old
label, and the guest's scores are those of the joined model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedflow.components.hetero_lr import protocol as lr
from fedflow.components.hetero_lr import session
from fedflow.protocol import MessageRule, ProtocolError, ProtocolGuard, ProtocolViolation
from fedflow.standalone import LocalWorld
from fedschemas import FederationData

from tests.lr.conftest import GUEST, HOST, PARTIES, run_both, synthetic


def test_the_host_partial_scores_cross_as_partial_scores_and_give_the_joined_models_scores(
    tmp_path: Path,
) -> None:
    # Prepare: each party's model part and rows, as hetero_lr and psi would have left them
    guest, host = synthetic(50, 3, 4, seed=5)
    rng = np.random.default_rng(8)
    w_guest, w_host = rng.normal(size=4), rng.normal(size=4)  # the guest's with the intercept
    models = {
        GUEST: session.model_table([*guest.feature_names, session.INTERCEPT], w_guest),
        HOST: session.model_table(list(host.feature_names), w_host),
    }
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        tasks = {}
        for party, role, table in ((GUEST, "guest", guest), (HOST, "host", host)):
            store = world.parties[party].runtime.artifacts
            store.put("job-p", "src", party, role, "data", table, 0)
            store.put("job-p", "lr_0", party, role, "model", models[party], 0)
            tasks[role] = world.parties[party].task(
                "job-p",
                "predict_0",
                "hetero_lr_predict",
                role,
                PARTIES,
                inputs={"data": "src.data", "model": "lr_0.model"},
            )

        # Execute
        g, h = run_both(world, tasks)
        crossings = world.crossings.snapshot()
        assert not g.error and not h.error, (g.error, h.error)
        scored = world.parties[GUEST].runtime.artifacts.get(
            "job-p", GUEST, "guest", "predict_0.data"
        )

    # Assert: the row-alignment round trip (fedflow.kit.alignment: a salt, the host's keyed
    # digest of its ids, the verdict), then one message, host -> guest, labelled as what it
    # is; the scores are the joined model's
    assert [(c.source, c.destination, c.tag, c.kind) for c in crossings] == [
        (GUEST, HOST, "alignment_salt", "plain_control"),
        (HOST, GUEST, "alignment_digest", "id_set"),
        (GUEST, HOST, "alignment_verdict", "plain_control"),
        (HOST, GUEST, "host_partial_scores", "partial_score"),
    ]
    z = np.hstack([guest.features, np.ones((50, 1))]) @ w_guest + host.features @ w_host
    np.testing.assert_allclose(scored.features[:, 0], 1 / (1 + np.exp(-z)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("role", ["host", "guest"])
def test_the_predict_protocol_refuses_partial_scores_labelled_aggregate(role: str) -> None:
    # Prepare
    guard = ProtocolGuard(lr.HETERO_LR_PREDICT_PROTOCOL, role)
    guard.bind(m=5)
    old = FederationData(kind="aggregate", array=np.zeros(5))
    new = FederationData(kind="partial_score", array=np.zeros(5))
    check = (
        (
            lambda p: guard.check_send(
                p, to_role="guest", tag="host_partial_scores", iteration=-1, seq=0
            )
        )
        if role == "host"
        else (
            lambda p: guard.check_accept(
                p, from_role="host", tag="host_partial_scores", iteration=-1, seq=0
            )
        )
    )

    # Execute / Assert: the host cannot send it, nor the guest accept it, under the old label
    with pytest.raises(ProtocolViolation, match="payload kind is 'aggregate'"):
        check(old)
    assert check(new).kinds == ("partial_score",)


def test_every_per_row_plaintext_message_of_hetero_lr_is_declared_as_partial_score() -> None:
    # Prepare
    declared = {
        (protocol.component_type, rule.tag): rule
        for protocol in (lr.HETERO_LR_PROTOCOL, lr.HETERO_LR_PREDICT_PROTOCOL)
        for rule in protocol.messages
        if "partial_score" in rule.kinds
    }

    # Assert: exactly the four documented disclosures (reveal_host_scores, validate_data,
    # prediction of one model or one per class), all to the guest, and no rule declares a
    # per-row float array as an aggregate
    assert set(declared) == {
        ("hetero_lr", "host_scores_revealed"),
        ("hetero_lr", "validate_scores"),
        ("hetero_lr_predict", "host_partial_scores"),
        ("hetero_lr_predict", "host_class_scores"),
    }
    assert {(r.sender, r.receiver) for r in declared.values()} == {("host", "guest")}
    aggregates = [
        rule
        for protocol in (lr.HETERO_LR_PROTOCOL, lr.HETERO_LR_PREDICT_PROTOCOL)
        for rule in protocol.messages
        if "aggregate" in rule.kinds
    ]
    # sums over the batch's rows: one (binary) or one per class lane (multi_class), never one
    # per row
    assert {r.tag: r.shape for r in aggregates} == {
        "host_score_sq": "()",
        "host_class_score_sq": "(classes,)",
    }


def test_a_partial_score_rule_must_be_one_value_per_row() -> None:
    with pytest.raises(ProtocolError, match="one-dimensional"):
        MessageRule(
            tag="scores", sender="host", receiver="guest", kinds=("partial_score",), shape="()"
        )
    with pytest.raises(ProtocolError, match="one-dimensional"):
        MessageRule(tag="scores", sender="host", receiver="guest", kinds=("partial_score",))
