"""Grants: a party takes part in a job only when its grants cover every table its readers would
read, for the job's initiator and every component type the data flows into. A refusal fails
the job with that party's reason, and none of the party's data is read."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fedscheduler.rpc import SchedulerCommandFailed

from .conftest import GUEST, HOST, PSI_EVAL, Federation


def test_a_job_without_a_grant_is_refused_and_reads_none_of_the_refusing_partys_data(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: no grants at all
    fed = federation_factory(grants=[])

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-nogrant")
    failed = fed.wait_state(GUEST, "job-nogrant", "failed")

    # Assert
    assert failed["reason"] == (
        "party 10000 refused the job: table breast_hetero_host (read by reader_0) is not "
        "granted to party 9999"
    )
    host = fed.job(HOST, "job-nogrant")
    assert host["state"] == "failed"
    assert "not granted to party 9999" in host["reason"]
    refusal = next(p for p in failed["parties"] if p["party_id"] == HOST)
    assert refusal["state"] == "failed"
    assert fed.workers[HOST].runs == []
    assert fed.workers[GUEST].runs == []
    assert fed.workers[HOST].tables.reads("breast_hetero_host") == 0
    assert [e.type for e in fed.relay.crossed] == ["job.propose", "job.refuse", "job.stop"]


def test_the_same_job_with_the_grant_reads_the_table(
    federation_factory: Callable[..., Federation],
) -> None:
    # The control for the test above: with the grant, the host's reader does read its table.
    fed = federation_factory(grants=[])
    fed.client(HOST).grant_add("breast_hetero_host", GUEST, ["psi"])

    fed.client(GUEST).submit(PSI_EVAL, job_id="job-granted")
    fed.wait_state(GUEST, "job-granted", "success")

    assert fed.workers[HOST].tables.reads("breast_hetero_host") == 1


def test_a_grant_to_another_initiator_does_not_count(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=[(HOST, "breast_hetero_host", "8888", ["*"])])

    fed.client(GUEST).submit(PSI_EVAL, job_id="job-other")
    failed = fed.wait_state(GUEST, "job-other", "failed")

    assert "is not granted to party 9999" in failed["reason"]
    assert fed.workers[HOST].tables.reads("breast_hetero_host") == 0


def test_a_grant_must_cover_every_component_type_the_data_flows_into(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: granted for evaluation only, but the host's data flows into psi
    fed = federation_factory(grants=[(HOST, "breast_hetero_host", GUEST, ["evaluation"])])

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-types")
    failed = fed.wait_state(GUEST, "job-types", "failed")

    # Assert
    assert failed["reason"] == (
        "party 10000 refused the job: the grant of table breast_hetero_host to party 9999 does "
        "not cover component types psi (granted: evaluation)"
    )
    assert fed.workers[HOST].tables.reads("breast_hetero_host") == 0


def test_a_wildcard_grant_covers_any_component_type(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=[(HOST, "breast_hetero_host", GUEST, ["*"])])

    fed.client(GUEST).submit(PSI_EVAL, job_id="job-any")

    fed.wait_state(GUEST, "job-any", "success")


def test_grants_add_up_and_are_listed(federation_factory: Callable[..., Federation]) -> None:
    fed = federation_factory(grants=[])
    client = fed.client(HOST)

    client.grant_add("breast_hetero_host", GUEST, ["psi"])
    merged = client.grant_add("breast_hetero_host", GUEST, ["evaluation", "psi"])
    client.grant_add("other_table", "8888", ["*"])

    assert merged["component_types"] == ["evaluation", "psi"]
    listed = client.grant_list()
    assert [(g["table"], g["grantee"], g["component_types"]) for g in listed] == [
        ("breast_hetero_host", GUEST, ["evaluation", "psi"]),
        ("other_table", "8888", ["*"]),
    ]
    assert [g["table"] for g in client.grant_list(table="other_table")] == ["other_table"]


def test_a_grant_needs_a_table_a_grantee_and_component_types(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=[])

    with pytest.raises(SchedulerCommandFailed, match="component_types") as info:
        fed.client(HOST).grant_add("breast_hetero_host", GUEST, [])

    assert info.value.kind == "invalid"


def test_the_initiator_checks_its_own_grants_when_told_to(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: self grants are not implied; the guest granted nothing to itself
    fed = federation_factory(self_grants_implied=False)

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-self")
    failed = fed.wait_state(GUEST, "job-self", "failed")

    # Assert: refused before anyone else heard of it
    assert failed["reason"] == (
        "party 9999 refused the job: table breast_hetero_guest (read by reader_0) is not "
        "granted to party 9999"
    )
    assert fed.relay.crossed == []
    assert fed.workers[GUEST].tables.reads("breast_hetero_guest") == 0
