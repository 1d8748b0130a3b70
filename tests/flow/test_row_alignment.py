"""A vertical model refuses, at every party and before its key exchange, rows that are not the
same ids in the same order at the guest and every host (fedflow.kit.alignment): without psi
upstream, a shuffled host table trained silently (hetero_linr "succeeded" with r2 0.41)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.kit.alignment import id_digest
from fedflow.local_relay import Crossing
from fedflow.pipeline import Pipeline
from fedflow.standalone import LocalWorld, StandaloneError, run_pipeline
from fedflow.tables import Table

from tests.flow.modelling_runs import GUEST
from tests.flow.running import start_task
from tests.flow.test_feature_scale import write_csv
from tests.flow.test_linr import LINR_PARAMS
from tests.flow.test_model_inputs import BOOST_PARAMS, HOST, run, tables, with_rows

MODELS = ("hetero_linr", "hetero_poisson", "hetero_secureboost", "hetero_lr")
ALIGNMENT_TAGS = ["alignment_salt", "alignment_digest", "alignment_verdict"]
ADVICE = "put psi before c_0 ({model}), or a data_split of psi's output"


def refused(
    tmp_path: Path, model: str, inputs: dict[str, dict[str, Any]], params: Any = None
) -> tuple[dict[str, str], list[Crossing]]:
    """Each party's error when `model` runs on `inputs` (party -> slot -> table; the first
    party the guest), every party left to fail on its own: no party is canceled when another
    fails (as run_component does), so each one's own message is what is checked."""
    if params is None:
        params = BOOST_PARAMS if model == "hetero_secureboost" else {**LINR_PARAMS, "epochs": 1}
    layout = {"guest": [GUEST], "host": [p for p in inputs if p != GUEST]}
    with LocalWorld(list(inputs), tmp_path / "w") as world:
        runs = []
        for party, slots in inputs.items():
            refs = {}
            role = "guest" if party == GUEST else "host"
            for slot, table in slots.items():
                world.parties[party].runtime.artifacts.put("j", "src", party, role, slot, table, 0)
                refs[slot] = f"src.{slot}"
            spec = world.parties[party].task(
                "j", "c_0", model, role, layout, params=params, inputs=refs
            )
            runs.append((party, start_task(world, spec, recv_timeout=30, join_timeout=60)))
        for _, running in runs:
            running.thread.join(60)
        crossings = world.crossings.snapshot()
    return {party: str(running.error[0]) for party, running in runs if running.error}, crossings


def reordered(table: Table, order: Any) -> Table:
    """`table`'s rows (ids with them) in `order`."""
    labels = None if table.labels is None else table.labels[order]
    return Table(table.ids[order], table.features[order], table.feature_names, labels)


def renamed(table: Table, row: int, new_id: str) -> Table:
    ids = table.ids.astype(object)
    ids[row] = new_id
    return Table(np.asarray(ids, dtype=np.str_), table.features, table.feature_names, None)


def shuffled(host: Table) -> Table:
    return reordered(host, np.random.default_rng(3).permutation(host.rows))


def one_id_replaced(host: Table) -> Table:
    return renamed(host, 17, "stranger")


def a_row_missing(host: Table) -> Table:
    return with_rows(host, slice(1, None))


SAME_COUNT = "the same row count (442), different ids or order"
MISALIGNED = [
    (shuffled, SAME_COUNT),
    (one_id_replaced, SAME_COUNT),
    (a_row_missing, "441 rows here, 442 at the guest"),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("misalign", "detail"), MISALIGNED)
def test_a_misaligned_host_table_fails_the_model_at_every_party_naming_the_table_and_psi(
    tmp_path: Path, model: str, misalign: Any, detail: str
) -> None:
    # Prepare: the diabetes table split vertically, the host's rows not the guest's
    guest, host = tables(model)
    host = misalign(host)

    # Execute
    errors, crossings = refused(tmp_path, model, {GUEST: {"data": guest}, HOST: {"data": host}})

    # Assert: both parties fail naming the table, the party, what differs and the fix;
    # nothing but the alignment round trip crossed (no key, no ciphertext)
    advice = ADVICE.format(model=model)
    assert errors[HOST] == (
        f"{model}: the rows of data at party {HOST} (host) are not aligned with the guest's: "
        f"{detail}: {advice}: a vertical model needs row i to be the same id at every party"
    )
    there = detail.replace("here", "there")
    assert errors[GUEST].startswith(
        f"{model}: the rows of data at party {HOST} (host) are not aligned with the guest's "
        f"(party {GUEST}): {there}: {advice}"
    )
    assert [c.tag for c in crossings] == ALIGNMENT_TAGS


def test_a_misaligned_validate_data_is_refused_too(tmp_path: Path) -> None:
    # Prepare: aligned training rows; the host's validation rows in another order
    guest, host = tables("hetero_linr")
    validate = (with_rows(guest, slice(0, 100)), reordered(host, np.arange(99, -1, -1)))

    inputs = {
        GUEST: {"data": guest, "validate_data": validate[0]},
        HOST: {"data": host, "validate_data": validate[1]},
    }

    # Execute
    errors, _ = refused(tmp_path, "hetero_linr", inputs)

    # Assert
    assert errors[HOST].startswith(
        f"hetero_linr: the rows of validate_data at party {HOST} (host) are not aligned with "
        "the guest's: the same row count (100), different ids or order"
    )
    assert "the rows of validate_data" in errors[GUEST]
    assert "the rows of data" not in errors[GUEST]


def test_an_aligned_host_fails_too_when_another_host_is_not(tmp_path: Path) -> None:
    # Prepare: two hosts with the host columns split between them; the second one shuffled
    guest, host = tables("hetero_linr")
    first = Table(host.ids, host.features[:, :3], host.feature_names[:3], None)
    second = shuffled(Table(host.ids, host.features[:, 3:], host.feature_names[3:], None))
    inputs = {GUEST: {"data": guest}, "10000": {"data": first}, "10001": {"data": second}}

    # Execute
    errors, _ = refused(tmp_path, "hetero_linr", inputs)

    # Assert: the aligned host learns only that another host is not aligned
    assert errors["10000"].startswith(
        "hetero_linr: another host's rows are not aligned with the guest's (this party's, "
        "10000, are): the job stops at every party"
    )
    assert "the rows of data at party 10001 (host)" in errors["10001"]
    assert "the rows of data at party 10001 (host)" in errors[GUEST]
    assert "party 10000" not in errors[GUEST]


def test_a_pipeline_without_psi_on_a_shuffled_host_table_fails_saying_put_psi_first(
    tmp_path: Path,
) -> None:
    # Prepare: what a new user tried: reader -> hetero_linr, no psi, the host's rows shuffled
    guest, host = tables("hetero_linr")
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "d_guest.csv", guest)
    write_csv(data / "d_host.csv", shuffled(host))
    spec = {
        "name": "linr-no-psi",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {"guest": {"table": "d_guest"}, "host": {"table": "d_host"}},
            },
            {
                "name": "linr_0",
                "type": "hetero_linr",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": {**LINR_PARAMS, "epochs": 1}},
            },
        ],
    }

    # Execute
    with pytest.raises(StandaloneError) as info:
        run_pipeline(Pipeline.from_dict(spec), {GUEST: data, HOST: data}, tmp_path)

    # Assert: the job fails (it "succeeded" with r2 0.41) naming the table and the fix
    message = str(info.value)
    assert message.startswith("linr_0 failed at party")
    assert f"the rows of data at party {HOST} (host) are not aligned with the guest's" in message
    assert SAME_COUNT in message
    assert "put psi before linr_0 (hetero_linr)" in message


@pytest.mark.parametrize("model", MODELS)
def test_aligned_tables_train_after_one_round_trip_and_a_misaligned_predict_is_refused(
    tmp_path: Path, model: str
) -> None:
    # Prepare: the same ids in the same order at both parties
    guest, host = tables(model)

    # Execute
    outcome = run(tmp_path, model, guest, host)

    # Assert: it trained; the three alignment messages crossed once each, before any key
    assert outcome.errors == {}
    assert "model" in outcome.outputs[GUEST]
    tags = [c.tag for c in outcome.crossings]
    assert tags[:3] == ALIGNMENT_TAGS
    assert all(tags.count(tag) == 1 for tag in ALIGNMENT_TAGS)
    assert sum(c.bytes for c in outcome.crossings[:3]) < 4096

    # Execute: predict with that model on the host's rows in another order
    models = {party: outcome.outputs[party]["model"] for party in (GUEST, HOST)}
    inputs = {
        GUEST: {"data": guest, "model": models[GUEST]},
        HOST: {"data": shuffled(host), "model": models[HOST]},
    }
    errors, crossings = refused(tmp_path / "predict", f"{model}_predict", inputs, {})

    # Assert: the prediction is refused too, before any partial score crossed
    assert errors[HOST].startswith(
        f"{model}_predict: the rows of data at party {HOST} (host) are not aligned with "
        f"the guest's: {SAME_COUNT}: put psi before c_0 ({model}_predict)"
    )
    assert [c.tag for c in crossings] == ALIGNMENT_TAGS


def test_the_digest_tells_apart_every_change_of_ids_or_order() -> None:
    # Prepare: ids whose plain concatenation would collide ("a" + "bc" == "ab" + "c")
    salt = bytes(range(32))
    base = np.array(["a", "bc", "d"], dtype=np.str_)

    # Execute
    digest = id_digest(salt, base)

    # Assert
    assert digest == id_digest(salt, base.copy())
    for other in (["ab", "c", "d"], ["bc", "a", "d"], ["a", "bc"], ["a", "bc", "d", ""]):
        assert digest != id_digest(salt, np.array(other, dtype=np.str_))
    assert digest != id_digest(bytes(32), base)
