"""The initiator publishes a job's proposal inside its submit's transaction, so a party's answer
can come back before that transaction commits (a loaded machine, a slow commit). The answer
must wait for the job row, not find no job and be dead-lettered: the job would stay "waiting"
until party_timeout_s fails it (seen as the first job of a fresh `fedmq local` stack hanging)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fedscheduler import rpc

from .conftest import GUEST, HOST, PSI_EVAL, Federation


@pytest.mark.integration
def test_an_answer_that_comes_back_before_the_submit_committed_starts_the_job_on_postgresql(
    federation_factory: Callable[..., Federation],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: the guest (PostgreSQL, row locks) holds its submit's transaction open for a
    # second after the proposal went out; the host answers within milliseconds meanwhile.
    submit = rpc.OPS["submit"]

    def slow_to_commit(session: Any, ctx: Any, raw: Any) -> Any:
        result = submit(session, ctx, raw)
        time.sleep(1.0)
        return result

    monkeypatch.setitem(rpc.OPS, "submit", slow_to_commit)
    fed = federation_factory(database_urls={GUEST: pg_url})

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-slow-commit")

    # Assert: the host's acceptance counted, so the job ran to its end at both parties
    done = fed.wait_state(GUEST, "job-slow-commit", "success", timeout=20.0)
    assert done["tasks_succeeded"] == 5
    fed.wait_state(HOST, "job-slow-commit", "success")
