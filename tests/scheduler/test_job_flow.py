"""Jobs across two parties' schedulers: propose, accept, tasks in DAG order, success, failure,
stop, rerun. Memory buses and SQLite (fast); conftest.py has the federation harness."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from fedscheduler.rpc import SchedulerCommandFailed
from fedschemas.payloads import TaskRun

from .conftest import GUEST, HOST, PSI_EVAL, Federation, hold_psi, submit_held_psi, wait_for


def test_two_party_job_runs_every_component_in_dag_order_and_succeeds(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare
    fed = federation_factory()

    # Execute
    job = fed.client(GUEST).submit(PSI_EVAL, job_id="job-ok")
    done = fed.wait_state(GUEST, "job-ok", "success")
    host_view = fed.wait_state(HOST, "job-ok", "success")

    # Assert
    assert job["initiator"] == GUEST
    assert fed.workers[GUEST].components_run("job-ok") == ["reader_0", "psi_0", "eval_0"]
    # evaluation runs at the guest only (its type's roles)
    assert fed.workers[HOST].components_run("job-ok") == ["reader_0", "psi_0"]
    assert done["tasks_total"] == done["tasks_succeeded"] == 5
    assert host_view["tasks_succeeded"] == 2
    assert {p["party_id"]: p["state"] for p in done["parties"]} == {
        GUEST: "running",
        HOST: "running",
    }
    tasks = fed.client(GUEST).list_tasks("job-ok")
    assert {(t["component"], t["party_id"], t["state"]) for t in tasks} == {
        ("reader_0", GUEST, "success"),
        ("psi_0", GUEST, "success"),
        ("eval_0", GUEST, "success"),
        ("reader_0", HOST, "success"),
        ("psi_0", HOST, "success"),
    }


def test_task_run_carries_role_params_inputs_and_parties(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()

    fed.client(GUEST).submit(PSI_EVAL, job_id="job-args")
    fed.wait_state(GUEST, "job-args", "success")

    runs = {r.component: r for r in fed.workers[HOST].runs}
    reader: TaskRun = runs["reader_0"]
    assert (reader.role, reader.party_id, reader.attempt) == ("host", HOST, 0)
    assert reader.params["table"] == "breast_hetero_host"
    assert reader.parties == {"guest": [GUEST], "host": [HOST]}
    assert runs["psi_0"].inputs == {"data": "reader_0.data"}
    assert runs["psi_0"].pipeline_yaml == PSI_EVAL
    guest_eval = next(r for r in fed.workers[GUEST].runs if r.component == "eval_0")
    assert guest_eval.params["label_column"] == "y"


def test_a_component_starts_only_after_its_inputs_succeeded(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: the guest's worker holds psi_0 (reports running, never finishes)
    fed = federation_factory(scripts={GUEST: hold_psi})

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-hold")
    wait_for(lambda: "psi_0" in fed.workers[GUEST].components_run("job-hold"), what="psi_0")
    wait_for(lambda: "psi_0" in fed.workers[HOST].components_run("job-hold"), what="host psi_0")

    # Assert: eval_0 waits for psi_0; the job is running
    def guest_view() -> dict[tuple[str, str], str]:
        tasks = fed.client(GUEST).list_tasks("job-hold")
        return {(t["component"], t["party_id"]): t["state"] for t in tasks}

    wait_for(lambda: guest_view()[("psi_0", HOST)] == "success", what="host psi_0 reported")
    assert guest_view()[("eval_0", GUEST)] == "waiting"
    assert "eval_0" not in fed.workers[GUEST].components_run("job-hold")
    assert fed.job(GUEST, "job-hold")["state"] == "running"


def test_a_failed_task_at_a_party_fails_the_job_everywhere_with_that_partys_reason(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: the guest's psi is held (it would wait for the host); the host's psi fails once
    # the guest's has started
    guest_psi_started = threading.Event()

    def host_psi_fails(run: TaskRun) -> tuple[str, str | None] | None:
        if run.component != "psi_0":
            return ("success", None)
        guest_psi_started.wait(10)
        return ("failed", "curve mismatch")

    def guest_holds_psi(run: TaskRun) -> tuple[str, str | None] | None:
        if run.component != "psi_0":
            return ("success", None)
        guest_psi_started.set()
        return None

    fed = federation_factory(scripts={HOST: host_psi_fails, GUEST: guest_holds_psi})

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-fail")
    failed = fed.wait_state(GUEST, "job-fail", "failed")
    host_view = fed.wait_state(HOST, "job-fail", "failed")

    # Assert
    assert failed["reason"] == "party 10000: component psi_0 failed: curve mismatch"
    assert host_view["reason"] == failed["reason"]
    wait_for(lambda: fed.workers[GUEST].cancels, what="task.cancel at the guest")
    assert [(c.component, c.attempt) for c in fed.workers[GUEST].cancels] == [("psi_0", 0)]
    assert "eval_0" not in fed.workers[GUEST].components_run("job-fail")
    guest_tasks = {
        t["component"]: t["state"]
        for t in fed.client(GUEST).list_tasks("job-fail")
        if t["party_id"] == GUEST
    }
    assert guest_tasks == {"reader_0": "success", "psi_0": "canceled", "eval_0": "canceled"}


def test_stop_cancels_the_job_at_every_party_and_tells_their_workers(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: psi never finishes anywhere
    fed = submit_held_psi(federation_factory, "job-stop")
    for party in (GUEST, HOST):
        wait_for(lambda p=party: "psi_0" in fed.workers[p].components_run("job-stop"))

    # Execute
    stopped = fed.client(GUEST).stop("job-stop", reason="wrong data")

    # Assert
    assert stopped["state"] == "canceled"
    host_view = fed.wait_state(HOST, "job-stop", "canceled")
    assert host_view["reason"] == "wrong data"
    for party in (GUEST, HOST):
        wait_for(lambda p=party: fed.workers[p].cancels, what=f"task.cancel at {party}")
        assert [c.component for c in fed.workers[party].cancels] == ["psi_0"]
    with pytest.raises(SchedulerCommandFailed, match="already ended") as info:
        fed.client(GUEST).stop("job-stop")
    assert info.value.kind == "conflict"


def test_only_the_initiator_stops_or_reruns_a_job(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = submit_held_psi(federation_factory, "job-own")
    fed.wait_state(HOST, "job-own", "running")

    with pytest.raises(SchedulerCommandFailed, match="initiated by party 9999: stop it there"):
        fed.client(HOST).stop("job-own")
    with pytest.raises(SchedulerCommandFailed, match="rerun it there"):
        fed.client(HOST).rerun("job-own")
    assert fed.job(GUEST, "job-own")["state"] == "running"


def test_rerun_starts_a_new_attempt_from_the_failed_component_and_keeps_earlier_successes(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: the host's psi fails on the first attempt only (once the guest's has started)
    guest_psi_started = threading.Event()

    def host_psi_fails_once(run: TaskRun) -> tuple[str, str | None] | None:
        if run.component == "psi_0" and run.attempt == 0:
            guest_psi_started.wait(10)
            return ("failed", "host ran out of memory")
        return ("success", None)

    def guest_psi_waits_on_first_attempt(run: TaskRun) -> tuple[str, str | None] | None:
        if run.component == "psi_0" and run.attempt == 0:
            guest_psi_started.set()
            return None
        return ("success", None)

    fed = federation_factory(
        scripts={HOST: host_psi_fails_once, GUEST: guest_psi_waits_on_first_attempt}
    )
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-rerun")
    fed.wait_state(GUEST, "job-rerun", "failed")
    fed.wait_state(HOST, "job-rerun", "failed")

    # Execute
    rerun = fed.client(GUEST).rerun("job-rerun")
    done = fed.wait_state(GUEST, "job-rerun", "success")
    fed.wait_state(HOST, "job-rerun", "success")

    # Assert
    assert rerun["attempt"] == 1 and done["attempt"] == 1
    assert fed.workers[GUEST].components_run("job-rerun", attempt=1) == ["psi_0", "eval_0"]
    assert fed.workers[HOST].components_run("job-rerun", attempt=1) == ["psi_0"]
    # reader_0 ran once per party: its first-attempt success is kept
    assert fed.workers[HOST].components_run("job-rerun").count("reader_0") == 1
    first_ids = {e.message_id for e in fed.workers[HOST].run_envelopes if e.attempt == 0}
    second_ids = {e.message_id for e in fed.workers[HOST].run_envelopes if e.attempt == 1}
    assert second_ids and not first_ids & second_ids
    attempts = {
        (t["component"], t["party_id"], t["attempt"]): t["state"]
        for t in fed.client(GUEST).list_tasks("job-rerun")
    }
    assert attempts[("psi_0", HOST, 0)] == "failed"
    assert attempts[("psi_0", HOST, 1)] == "success"
    assert ("reader_0", HOST, 1) not in attempts


def test_rerun_of_a_running_or_successful_job_is_refused(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory()
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-done")
    fed.wait_state(GUEST, "job-done", "success")

    with pytest.raises(SchedulerCommandFailed, match="only a failed or canceled job is rerun"):
        fed.client(GUEST).rerun("job-done")


def test_repeated_success_reports_do_not_dispatch_a_component_twice(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: the guest's worker reports reader_0's success again with another message id
    # (e.g. a worker that crashed after reporting and reports again with a new sequence)
    fed = federation_factory(scripts={GUEST: hold_psi})
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-dup")
    wait_for(lambda: "psi_0" in fed.workers[GUEST].components_run("job-dup"))

    # Execute
    fed.workers[GUEST].report("job-dup", "reader_0", 0, "success", seq=7, outputs={"data": "x"})
    fed.workers[GUEST].report("job-dup", "reader_0", 0, "running", seq=8)
    fed.workers[GUEST].report("job-dup", "psi_0", 0, "success", seq=2)
    fed.wait_state(GUEST, "job-dup", "success")

    # Assert
    assert fed.workers[GUEST].components_run("job-dup") == ["reader_0", "psi_0", "eval_0"]
    reader = next(
        t
        for t in fed.client(GUEST).list_tasks("job-dup")
        if (t["component"], t["party_id"]) == ("reader_0", GUEST)
    )
    assert reader["state"] == "success"
    assert reader["outputs"] == {"data": "job-dup/reader_0"}  # the first report won


def test_a_single_party_pipeline_starts_without_proposals(
    federation_factory: Callable[..., Federation],
) -> None:
    solo = PSI_EVAL.replace('  host: ["10000"]\n', "").replace(
        "      host: {table: breast_hetero_host}\n", ""
    )
    solo = solo.split("  - name: psi_0")[0]
    fed = federation_factory(parties=(GUEST,))

    fed.client(GUEST).submit(solo, job_id="job-solo")
    done = fed.wait_state(GUEST, "job-solo", "success")

    assert done["tasks_total"] == 1
    assert fed.relay.crossed == []
