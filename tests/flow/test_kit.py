"""The component kit's pieces on their own: sealed per-task secrets (ctx.secret), masked
decryption by the other key holder, and model artifacts that are not tables."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fedcrypto import generate_keypair
from fedflow.artifacts import ArtifactStore, ModelArtifact
from fedflow.checkpoints import SEALED_KEY, CheckpointScope, CheckpointStore
from fedflow.kit import masking
from fedflow.sealing import CheckpointSealer
from fedflow.statecodec import encode_state
from sqlalchemy.engine import Engine

from tests.flow.conftest import KEY


def test_a_task_secret_is_made_once_checkpointed_sealed_and_the_same_after_a_restart(
    engine: Engine,
) -> None:
    # Prepare
    store, sealer = CheckpointStore(engine), CheckpointSealer(b"k" * 32)
    made: list[bytes] = []

    def factory() -> bytes:
        made.append(bytes([len(made)]) * 32)
        return made[-1]

    # Execute: a task takes its secret and checkpoints twice; a restarted process (a new
    # scope, the same party secret) asks again
    first = CheckpointScope(store, KEY, sealer=sealer)
    secret = first.secret("demo.secret", factory)
    after_secret = store.latest(KEY)
    first.save(3, {"weights": [1.0]})
    again = CheckpointScope(store, KEY, sealer=CheckpointSealer(b"k" * 32))
    reopened = again.secret("demo.secret", factory)

    # Assert: made once, saved (sealed) before it was returned, kept by every later save
    assert made == [secret] and reopened == secret
    assert after_secret is not None and after_secret.iteration == -1
    latest = store.latest(KEY)
    assert latest is not None and latest.iteration == 3 and latest.state["weights"] == [1.0]
    assert set(latest.state[SEALED_KEY]) == {"demo.secret"}
    assert secret not in encode_state(latest.state)


def test_a_secret_from_a_checkpoint_of_the_older_layout_is_adopted_not_remade(
    engine: Engine,
) -> None:
    # Prepare: a checkpoint written before ctx.secret existed, the secret in its own key
    store = CheckpointStore(engine)
    store.save(KEY, 2, {"my_secret": b"s" * 32, "weights": [0.5]})
    scope = CheckpointScope(store, KEY)

    # Execute
    secret = scope.secret(
        "demo.secret", lambda: pytest.fail("a new secret was made"), legacy=lambda s: s["my_secret"]
    )
    scope.save(3, {"weights": [0.25]})

    # Assert: adopted, and from the next checkpoint on it is held sealed only
    assert secret == b"s" * 32
    latest = store.latest(KEY)
    assert latest is not None and "my_secret" not in latest.state
    assert scope.open_sealed("demo.secret", latest.state[SEALED_KEY]["demo.secret"]) == secret


def test_masked_decryption_returns_the_exact_values_and_the_key_holder_sees_only_masked_ones() -> (
    None
):
    # Prepare: values under the key holder's key, as the other party holds them
    public_key, private_key = generate_keypair(512, insecure_allow_short=True)
    values = np.array([0.125, -3.5, 1e-6, 42.0, -0.0078125])
    encrypted = public_key.encrypt(values)

    # Execute: mask, the key holder decrypts, unmask
    bits = masking.mask_bits(encrypted)
    masks = masking.mask_ints(b"seed" * 8, "gradient", 7, encrypted.size, bits)
    masked = masking.add_mask(encrypted, masks, None)
    residues = private_key.decrypt_residues(masked.data)
    recovered = masking.unmask(residues, masks, encrypted.exponent, int(public_key.n))

    # Assert: exactly what the key holder would have decrypted without masks; what it saw is
    # far from the values; the masks are the same for the same (seed, tag, iteration) only
    np.testing.assert_array_equal(recovered, private_key.decrypt(encrypted))
    seen = masking.unmask(residues, [0] * len(masks), encrypted.exponent, int(public_key.n))
    assert np.all(np.abs(seen - values) > 1e6)
    assert masks == masking.mask_ints(b"seed" * 8, "gradient", 7, encrypted.size, bits)
    assert masks != masking.mask_ints(b"seed" * 8, "gradient", 8, encrypted.size, bits)


def test_a_model_that_is_not_a_table_is_stored_and_read_back_as_a_document_and_arrays(
    engine: Engine,
) -> None:
    # Prepare
    store = ArtifactStore(engine)
    model = ModelArtifact(
        document={"kind": "tree", "splits": [{"feature": "x1", "left": 1, "right": 2}]},
        arrays={"thresholds": np.array([0.5, 1.5]), "leaves": np.arange(4, dtype=np.int64)},
    )

    # Execute
    ref = store.put("job-1", "tree_0", "9999", "guest", "model", model, 0)
    back = store.get_artifact("job-1", "9999", "guest", ref)

    # Assert
    assert isinstance(back, ModelArtifact)
    assert back.document == model.document
    np.testing.assert_array_equal(back.arrays["thresholds"], model.arrays["thresholds"])
    assert back.arrays["leaves"].dtype == np.int64
    with pytest.raises(TypeError, match="is a model, not a table"):
        store.get("job-1", "9999", "guest", ref)
    with pytest.raises(TypeError, match="Python objects"):
        ModelArtifact({"x": 1}, {"bad": np.array([object()])}).to_bytes()


def test_a_new_two_party_component_on_the_kit_is_one_package_and_one_registry_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: tests/flow/kit_example (the docs/components.md example) registered by hand, as
    # its line in fedflow.components._DESCRIPTORS would; a host table X and a guest vector y
    from fedflow import runner
    from fedflow.components import REGISTRY
    from fedflow.components.base import load
    from fedflow.standalone import LocalWorld

    from tests.flow.conftest import GUEST, HOST, PARTIES, make_table
    from tests.flow.kit_example import MASKED_DOT

    monkeypatch.setattr(runner, "REGISTRY", {**REGISTRY, "masked_dot": load(MASKED_DOT)})
    ids = [f"r{i}" for i in range(40)]
    guest_table, host_table = make_table(ids, 1, seed=1), make_table(ids, 3, seed=2)
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        specs = {}
        for party, role, table in ((GUEST, "guest", guest_table), (HOST, "host", host_table)):
            runtime = world.parties[party].runtime
            runtime.artifacts.put("job-d", "src", party, role, "data", table, 0)
            specs[role] = world.parties[party].task(
                "job-d", "dot_0", "masked_dot", role, PARTIES, inputs={"data": "src.data"}
            )

        # Execute: both parties, each in its own thread
        errors: list[BaseException] = []

        def run(role: str, party: str) -> None:
            try:
                world.parties[party].runtime.run_task(specs[role], recv_timeout=60)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(role, party))
            for role, party in (("guest", GUEST), ("host", HOST))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        product = world.parties[HOST].runtime.artifacts.get("job-d", HOST, "host", "dot_0.data")
        tags = {c.tag for c in world.crossings.snapshot() if c.message_type == "federation.data"}

    # Assert: the host has X^T y (to the fixed-point precision of X); only the declared
    # messages crossed
    assert not errors, errors
    assert guest_table.labels is not None
    expected = host_table.features.T @ guest_table.labels
    np.testing.assert_allclose(product.features[:, 0], expected, rtol=0, atol=1e-6)
    assert tags == {"public_key", "encrypted_y", "product", "product_masked"}
