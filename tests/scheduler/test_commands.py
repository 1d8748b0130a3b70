"""Submitting and querying through the scheduler's commands (RPC on svc.scheduler.rpc) and the
job.submit message; what a malformed or misplaced request gets back; remote messages a party may
not send are dead-lettered, not obeyed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fedbus import HEADER_DEAD_REASON
from fedbus.runtime import EnvelopePublisher
from fedscheduler.rpc import SchedulerCommandFailed
from fedschemas import PartyRef, Payload, new_envelope
from fedschemas.payloads import JobStop, JobSubmit, TaskStatus

from .conftest import GUEST, HOST, PSI_EVAL, Federation, submit_held_psi, wait_for

CYCLE = """\
name: cycle
parties:
  guest: "9999"
  host: ["10000"]
components:
  - name: psi_a
    type: psi
    inputs: {data: psi_b.data}
  - name: psi_b
    type: psi
    inputs: {data: psi_a.data}
"""


def send(fed: Federation, party: str, source: str, payload: Payload, tag: str) -> None:
    """Publish `payload` on `party`'s svc.scheduler as if party `source` had sent it."""
    envelope = new_envelope(
        payload,
        job_id=getattr(payload, "job_id", ""),
        component="test",
        task_id="",
        attempt=0,
        source=PartyRef(party_id=source, role="host"),
        destination=PartyRef(party_id=party, role="guest"),
        tag=tag,
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )
    publisher = EnvelopePublisher(fed.buses[party], PartyRef(party_id=source, role="host"))
    publisher.send("svc.scheduler", envelope)


def test_a_pipeline_with_a_cycle_is_refused_at_submission_naming_the_problem(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()

    with pytest.raises(SchedulerCommandFailed, match="cycle") as info:
        fed.client(GUEST).submit(CYCLE, job_id="job-cycle")

    assert info.value.kind == "invalid"
    assert info.value.message.startswith("pipeline refused: ")
    with pytest.raises(SchedulerCommandFailed, match="no job job-cycle") as missing:
        fed.client(GUEST).status("job-cycle")
    assert missing.value.kind == "not_found"
    assert fed.relay.crossed == []


def test_an_unknown_component_type_is_refused_naming_it(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()
    bad = PSI_EVAL.replace("type: psi", "type: psy")

    with pytest.raises(SchedulerCommandFailed, match="psy"):
        fed.client(GUEST).submit(bad)


def test_a_job_is_submitted_at_its_guest_only(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()

    with pytest.raises(SchedulerCommandFailed, match="submit the job at the guest") as info:
        fed.client(HOST).submit(PSI_EVAL)

    assert info.value.kind == "invalid"


def test_submitting_the_same_job_again_is_idempotent_and_another_pipeline_conflicts(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()
    client = fed.client(GUEST)

    first = client.submit(PSI_EVAL, job_id="job-twice")
    again = client.submit(PSI_EVAL, job_id="job-twice")
    with pytest.raises(SchedulerCommandFailed, match="exists with another pipeline") as info:
        client.submit(PSI_EVAL.replace("x0", "x1"), job_id="job-twice")

    assert again["job_id"] == first["job_id"] == "job-twice"
    assert info.value.kind == "conflict"
    fed.wait_state(GUEST, "job-twice", "success")
    assert len(fed.relay.of_type("job.propose")) == 1


def test_submit_without_a_job_id_gets_a_fresh_one(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()

    one = fed.client(GUEST).submit(PSI_EVAL)
    two = fed.client(GUEST).submit(PSI_EVAL)

    assert one["job_id"] != two["job_id"]
    listed = {j["job_id"] for j in fed.client(GUEST).list_jobs()}
    assert listed == {one["job_id"], two["job_id"]}


def test_the_job_submit_message_runs_a_job_and_records_a_refused_one_as_failed(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()

    send(fed, GUEST, GUEST, JobSubmit(job_id="job-msg", pipeline_yaml=PSI_EVAL), "job.submit")
    send(fed, GUEST, GUEST, JobSubmit(job_id="job-msg-bad", pipeline_yaml=CYCLE), "job.submit")

    fed.wait_state(GUEST, "job-msg", "success")
    bad = fed.wait_state(GUEST, "job-msg-bad", "failed")
    assert "cycle" in bad["reason"]


def test_bad_command_arguments_are_refused_with_their_names(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()
    client = fed.client(GUEST)

    with pytest.raises(SchedulerCommandFailed, match="bad arguments: colour") as info:
        client.call("status", job_id="x", colour="red")
    assert info.value.kind == "invalid"
    with pytest.raises(SchedulerCommandFailed, match="job_id"):
        client.call("status", job_id="has spaces")
    with pytest.raises(SchedulerCommandFailed, match="no job nope") as missing:
        client.list_tasks("nope")
    assert missing.value.kind == "not_found"


def test_list_jobs_filters_by_state(federation_factory: Callable[..., Federation]) -> None:
    fed = federation_factory()
    client = fed.client(GUEST)
    client.submit(PSI_EVAL, job_id="job-a")
    fed.wait_state(GUEST, "job-a", "success")
    with pytest.raises(SchedulerCommandFailed):
        client.submit(CYCLE, job_id="job-b")

    assert [j["job_id"] for j in client.list_jobs(state="success")] == ["job-a"]
    assert client.list_jobs(state="failed") == []


def test_a_party_may_not_stop_a_job_it_did_not_initiate(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: a running job initiated by the guest
    fed = submit_held_psi(federation_factory, "job-guarded")
    fed.wait_state(HOST, "job-guarded", "running")

    # Execute: the host sends job.stop to the guest
    stop = JobStop(job_id="job-guarded", attempt=0, state="canceled", reason="hostile")
    send(fed, GUEST, HOST, stop, "job.stop")

    # Assert
    dead = wait_for(lambda: fed.buses[GUEST].dead_letters("svc.scheduler"), what="dead letter")
    assert "only the initiator (9999) stops job job-guarded" in dead[0].headers[HEADER_DEAD_REASON]
    assert fed.job(GUEST, "job-guarded")["state"] == "running"


def test_task_status_from_another_party_is_refused(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = submit_held_psi(federation_factory, "job-forged")
    fed.wait_state(HOST, "job-forged", "running")

    forged = TaskStatus(
        job_id="job-forged", component="psi_0", attempt=0, party_id=GUEST, state="failed"
    )
    send(fed, GUEST, HOST, forged, "task.status")

    dead = wait_for(lambda: fed.buses[GUEST].dead_letters("svc.scheduler"), what="dead letter")
    assert "must come from this party (9999)" in dead[0].headers[HEADER_DEAD_REASON]
    assert fed.job(GUEST, "job-forged")["state"] == "running"
