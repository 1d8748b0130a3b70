"""The audit parses a job's pipeline YAML once per job.propose, for both of its readers
(the statistics components' tables, data.profiled_tables, and the job view's roles, key sizes
and asked severities, JobView.learn_pipeline): each parsed it, 12% of a short job's audit CPU."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fedaudit.auditor import Auditor, make_record
from fedaudit.rules.state import AuditPolicy, Observation
from fedflow.descriptors import Pipeline
from fedschemas import PartyRef, Payload, encode_envelope, new_envelope, topics
from fedschemas.payloads import JobPropose

REPO = Path(__file__).resolve().parents[2]
GUEST = "9999"


def _observed(payload: Payload, *, job_id: str) -> Observation:
    envelope = new_envelope(
        payload,
        job_id=job_id,
        component="job",
        task_id=f"{job_id}/job/{GUEST}/guest",
        attempt=0,
        source=PartyRef(party_id=GUEST, role="guest"),
        destination=PartyRef(party_id=GUEST, role="local"),
        tag="propose",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )
    body = encode_envelope(envelope)
    return Observation(make_record(topics.AUDIT_REPORTS, body, envelope, payload, GUEST), payload)


def test_a_proposed_jobs_pipeline_is_parsed_once_and_both_readers_learn_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: count Pipeline.from_yaml calls
    text = (REPO / "examples" / "pipelines" / "scorecard_credit.yaml").read_text()
    parse = Pipeline.from_yaml
    calls: list[int] = []

    def counted(yaml_text: str) -> Pipeline:
        calls.append(len(yaml_text))
        return parse(yaml_text)

    monkeypatch.setattr(Pipeline, "from_yaml", staticmethod(counted))
    auditor = Auditor(AuditPolicy(party_id=GUEST))

    # Execute
    auditor.observe(
        _observed(JobPropose(job_id="once-1", initiator=GUEST, pipeline_yaml=text), job_id="once-1")
    )

    # Assert: one parse; the profilers' tables and the job view both learned the pipeline
    assert len(calls) == 1
    assert auditor.profilers["once-1"]["statistics_0"][GUEST] == "default_credit_hetero_guest"
    view = auditor.jobs["once-1"]
    assert view.known and view.initiator == GUEST
    assert "guest" in view.roles[GUEST] and "host" in view.roles["10000"]
