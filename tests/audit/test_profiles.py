"""data.profile_drift: every table a component reads (ComponentContext.read_table) is reported
to the party's own audit column by column (report.column_stats: missing share, min, max); the
audit records the table's profile at its first read, or what a statistics component run on
the table reported, and flags a later read that breaks it.
(What a clean psi_eval run reports is checked in test_standalone.py, on the run it makes.)"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fedaudit.auditor import Auditor, make_record
from fedaudit.main import Audit
from fedaudit.rules.data import profiled_tables
from fedaudit.rules.state import AuditPolicy, Observation
from fedaudit.settings import AuditSettings
from fedaudit.store import iter_records, list_findings
from fedbus import Message
from fedcrypto.signing import SigningKey
from fedflow.runner import TaskSpec
from fedflow.standalone import LocalWorld
from fedschemas import PartyRef, Payload, encode_envelope, new_envelope, topics
from fedschemas.audit_payloads import ColumnStat, ColumnStats
from fedschemas.payloads import JobPropose

from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"
GUEST = "9999"
TABLE = "breast_hetero_guest"


@pytest.fixture
def guest_world(tmp_path: Path) -> Iterator[tuple[LocalWorld, Audit]]:
    """One party (the guest) with its broker, table store and runtime, and its audit."""
    with LocalWorld([GUEST], tmp_path / "world") as world:
        settings = AuditSettings(
            party_id=GUEST,
            bus_url="memory://unused",
            database_url=f"sqlite:///{tmp_path / 'audit.db'}",
            signing_key=SigningKey.generate().to_bytes().hex(),
            http_port=-1,
            log_json=False,
        )
        audit = Audit(settings, bus=world.buses[GUEST])
        audit.start()
        try:
            yield world, audit
        finally:
            audit.stop()


def _changed_copy(tmp_path: Path, name: str, column: str, change: str) -> Path:
    """The guest's table with `column` emptied ("empty") or multiplied by 1000 ("x1000")."""
    with (DATA / f"{TABLE}.csv").open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    for line in lines:
        line[column] = "" if change == "empty" else str(float(line[column]) * 1000)
    path = tmp_path / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    return path


def _read(world: LocalWorld, job_id: str) -> None:
    """A reader task of `job_id` at the guest: the real component reading the table."""
    party = world.parties[GUEST]
    spec = TaskSpec(
        job_id=job_id,
        component="reader_0",
        component_type="reader",
        attempt=0,
        role="guest",
        party_id=GUEST,
        parties={"guest": [GUEST]},
        params={"table": TABLE},
        inputs={},
    )
    party.runtime.run_task(spec)
    party.runtime.finish(spec.key)


STATISTICS = f"""\
name: profile-table
parties:
  guest: "{GUEST}"
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {TABLE}}}
  - name: statistics_0
    type: statistics
    inputs: {{data: reader_0.data}}
"""


def _profile(world: LocalWorld, audit: Audit, job_id: str) -> None:
    """A job that reads the table and runs statistics on it, proposed as a scheduler would
    (the audit learns from the pipeline which table statistics_0 profiles)."""
    me = PartyRef(party_id=GUEST, role="local")
    proposal = new_envelope(
        JobPropose(job_id=job_id, initiator=GUEST, pipeline_yaml=STATISTICS),
        job_id=job_id,
        component="job",
        task_id="",
        attempt=0,
        source=me,
        destination=me,
        tag="propose",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )
    bus = world.buses[GUEST]
    bus.declare(topics.SCHEDULER)
    bus.publish(Message(topics.SCHEDULER, encode_envelope(proposal), proposal.message_id))
    wait_for(lambda: job_id in audit.ctx.auditor.profilers)  # as a job's tasks follow its start
    _read(world, job_id)
    party = world.parties[GUEST]
    spec = TaskSpec(
        job_id=job_id,
        component="statistics_0",
        component_type="statistics",
        attempt=0,
        role="guest",
        party_id=GUEST,
        parties={"guest": [GUEST]},
        params={},
        inputs={"data": "reader_0.data"},
    )
    party.runtime.run_task(spec)
    party.runtime.finish(spec.key)


def _drift(audit: Audit, job_id: str) -> list[str]:
    """The job's data.profile_drift findings, once its read is recorded (committed)."""

    def recorded() -> bool:
        with audit.engine.connect() as conn:
            records = iter_records(conn, job_id=job_id)
            return any(r["type"] == "report.column_stats" for r in records)

    wait_for(recorded)
    with audit.engine.connect() as conn:
        return [
            str(f["detail"])
            for f in list_findings(conn, job_id=job_id)
            if f["rule"] == "data.profile_drift"
        ]


@pytest.mark.parametrize(
    ("column", "change", "named"),
    [("x3", "empty", "column x3 is all missing (recorded 0%)"), ("x5", "x1000", "column x5 spans")],
)
def test_a_table_reuploaded_with_an_empty_or_rescaled_column_is_flagged_at_its_next_read(
    guest_world: tuple[LocalWorld, Audit], tmp_path: Path, column: str, change: str, named: str
) -> None:
    # Prepare: the table read once (its profile recorded), read again unchanged (no finding),
    # then uploaded again with one column changed
    world, audit = guest_world
    tables = world.parties[GUEST].tables
    tables.upload(TABLE, DATA / f"{TABLE}.csv", label_column="y")
    _read(world, "profile-1")
    _read(world, "profile-2")
    changed = _changed_copy(tmp_path, "changed", column, change)
    tables.upload(TABLE, changed, label_column="y", replace=True)

    # Execute
    _read(world, "profile-3")

    # Assert: only the changed read is flagged, naming the table and the column
    assert _drift(audit, "profile-1") == []
    assert _drift(audit, "profile-2") == []
    flagged = _drift(audit, "profile-3")
    assert len(flagged) == 1 and f"table {TABLE} read by reader_0: {named}" in flagged[0]


def test_a_statistics_run_on_a_changed_table_becomes_its_profile(
    guest_world: tuple[LocalWorld, Audit], tmp_path: Path
) -> None:
    # Prepare: the table read once (its first-read profile), then uploaded again in other
    # units (x5 times 1000) on purpose
    world, audit = guest_world
    tables = world.parties[GUEST].tables
    tables.upload(TABLE, DATA / f"{TABLE}.csv", label_column="y")
    _read(world, "baseline-1")
    changed = _changed_copy(tmp_path, "x1000", "x5", "x1000")
    tables.upload(TABLE, changed, label_column="y", replace=True)

    # Execute: a job runs statistics on the new table; then another job reads it
    _profile(world, audit, "baseline-2")
    wait_for(lambda: "statistics_0" in _profiled(audit))
    _read(world, "baseline-3")

    # Assert: the statistics job's own read is still judged against the old profile; from
    # then on the statistics output is the profile: the next read is not flagged, and x5's
    # recorded range is the new table's
    assert [d for d in _drift(audit, "baseline-2") if "column x5 spans" in d]
    assert _drift(audit, "baseline-3") == []
    with changed.open(newline="") as handle:
        scaled = [float(r["x5"]) for r in csv.DictReader(handle)]
    assert audit.ctx.auditor.profiles[TABLE]["x5"] == (0.0, min(scaled), max(scaled))


def _profiled(audit: Audit) -> set[str]:
    with audit.engine.connect() as conn:
        records = iter_records(conn, job_id="baseline-2")
        return {str(r["component"]) for r in records if r["type"] == "report.column_stats"}


def test_only_statistics_on_a_readers_rows_profile_a_table() -> None:
    # Prepare: the scorecard pipeline profiles psi_0's rows split by split_0 (values
    # unchanged); the same statistics behind feature_scale would profile scaled values
    text = (REPO / "examples" / "pipelines" / "scorecard_credit.yaml").read_text()
    on_rows = "type: statistics\n    inputs: {data: split_0.train}"
    scaled = text.replace(on_rows, "type: statistics\n    inputs: {data: scale_train.data}")
    assert scaled != text

    # Execute
    found, behind_scaling = profiled_tables(text), profiled_tables(scaled)

    # Assert
    assert found == {
        "statistics_0": {
            GUEST: "default_credit_hetero_guest",
            "10000": "default_credit_hetero_host",
        }
    }
    assert behind_scaling == {}


def _observed(payload: Payload, *, job_id: str, component: str, tag: str) -> Observation:
    envelope = new_envelope(
        payload,
        job_id=job_id,
        component=component,
        task_id=f"{job_id}/{component}/{GUEST}/guest",
        attempt=0,
        source=PartyRef(party_id=GUEST, role="guest"),
        destination=PartyRef(party_id=GUEST, role="local"),
        tag=tag,
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )
    body = encode_envelope(envelope)
    return Observation(make_record(topics.AUDIT_REPORTS, body, envelope, payload, GUEST), payload)


def test_a_profile_that_overtakes_its_jobs_pipeline_is_applied_when_the_pipeline_comes() -> None:
    # Prepare: the reports topic delivered statistics_0's profile before the fan-out (lagging)
    # delivered the job's proposal
    auditor = Auditor(AuditPolicy(party_id=GUEST))
    profile = ColumnStats(
        job_id="early-1",
        component="statistics_0",
        attempt=0,
        party_id=GUEST,
        table="statistics_0.data",
        rows=10,
        columns=[ColumnStat(name="x5", null_share=0.1, min=1.0, max=2.0)],
    )
    proposal = JobPropose(job_id="early-1", initiator=GUEST, pipeline_yaml=STATISTICS)

    # Execute
    auditor.observe(
        _observed(profile, job_id="early-1", component="statistics_0", tag="column_profile.s")
    )
    before = dict(auditor.profiles)
    auditor.observe(_observed(proposal, job_id="early-1", component="job", tag="propose"))

    # Assert: nothing recorded under the report's own name, the table's profile once the
    # pipeline says which table statistics_0 ran on
    assert before == {}
    assert auditor.profiles == {TABLE: {"x5": (0.1, 1.0, 2.0)}}
