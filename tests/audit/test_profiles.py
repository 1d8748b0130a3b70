"""data.profile_drift: every table a component reads (ComponentContext.read_table) is reported
to the party's own audit column by column (report.column_stats: missing share, min, max); the
audit records the table's profile at its first read and flags a later read that breaks it.
(What a clean psi_eval run reports is checked in test_standalone.py, on the run it makes.)"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedaudit.store import iter_records, list_findings
from fedcrypto.signing import SigningKey
from fedflow.runner import TaskSpec
from fedflow.standalone import LocalWorld

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
