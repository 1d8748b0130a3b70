"""data.profile_drift when statistics runs on a subset of a table's rows (behind data_split or
psi): the subset's profile only widens the table's recorded one. Taken as the profile outright,
a subset that missed a heavy tail recorded a narrow range, and the table's next whole read was
flagged for values it held all along."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedaudit.main import Audit
from fedaudit.store import iter_records
from fedbus import Message
from fedflow.components.data_split.component import parts_of
from fedflow.runner import TaskSpec
from fedflow.standalone import LocalWorld
from fedschemas import PartyRef, encode_envelope, new_envelope, topics
from fedschemas.payloads import JobPropose

from tests.audit.test_profiles import DATA, GUEST, TABLE, _drift, _read, guest_world
from tests.polling import wait_for

__all__ = ["guest_world"]

OUTLIER = 1e5
"""x5 of one row (breast's x5 is a standardised column, within [-2, 5])."""
SPLIT = {"train_fraction": 0.5, "validate_fraction": 0.5, "seed": 3}
ON_A_SPLIT = f"""\
name: profile-a-split
parties:
  guest: "{GUEST}"
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {TABLE}}}
  - name: split_0
    type: data_split
    inputs: {{data: reader_0.data}}
    params:
      common: {{train_fraction: 0.5, validate_fraction: 0.5, seed: 3}}
  - name: statistics_0
    type: statistics
    inputs: {{data: split_0.train}}
"""


def _with_outlier_outside_train(tmp_path: Path) -> Path:
    """The guest's table with x5 = OUTLIER in one row that split_0 puts in `validate`."""
    with (DATA / f"{TABLE}.csv").open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    fractions = (SPLIT["train_fraction"], SPLIT["validate_fraction"], 0.0)
    parts = parts_of([line["id"] for line in lines], fractions, int(SPLIT["seed"]))
    first_validate = int(list(parts).index(1))
    lines[first_validate]["x5"] = str(OUTLIER)
    path = tmp_path / "outlier.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    return path


def _propose(world: LocalWorld, audit: Audit, job_id: str, pipeline_yaml: str) -> None:
    me = PartyRef(party_id=GUEST, role="local")
    proposal = new_envelope(
        JobPropose(job_id=job_id, initiator=GUEST, pipeline_yaml=pipeline_yaml),
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
    wait_for(lambda: job_id in audit.ctx.auditor.profilers)


def _task(
    world: LocalWorld, job_id: str, name: str, kind: str, params: dict[str, Any], data: str
) -> None:
    party = world.parties[GUEST]
    spec = TaskSpec(
        job_id=job_id,
        component=name,
        component_type=kind,
        attempt=0,
        role="guest",
        party_id=GUEST,
        parties={"guest": [GUEST]},
        params=params,
        inputs={"data": data},
    )
    party.runtime.run_task(spec)
    party.runtime.finish(spec.key)


def _statistics_x5(audit: Audit, job_id: str) -> list[Any]:
    """x5 as statistics_0 of `job_id` reported it: [name, null share, min, max]."""

    def reported() -> list[Any] | None:
        with audit.engine.connect() as conn:
            for record in iter_records(conn, job_id=job_id):
                if record["component"] == "statistics_0":
                    return next(c for c in record["facts"]["columns"] if c[0] == "x5")
        return None

    wait_for(lambda: reported() is not None)
    found = reported()
    assert found is not None
    return found


def test_statistics_on_a_split_widens_the_profile_and_the_next_whole_read_is_clean(
    guest_world: tuple[LocalWorld, Audit], tmp_path: Path
) -> None:
    # Prepare: a table with one x5 far out, in a row data_split leaves out of `train`
    world, audit = guest_world
    world.parties[GUEST].tables.upload(
        TABLE, _with_outlier_outside_train(tmp_path), label_column="y"
    )

    # Execute: a job reads the table (its first read: the profile), splits it and runs
    # statistics on the train half; then another job reads the whole table again
    _propose(world, audit, "split-1", ON_A_SPLIT)
    _read(world, "split-1")
    _task(world, "split-1", "split_0", "data_split", SPLIT, "reader_0.data")
    _task(world, "split-1", "statistics_0", "statistics", {}, "split_0.train")
    profiled = _statistics_x5(audit, "split-1")
    _read(world, "split-2")

    # Assert: the train half missed the outlier (so its range alone was narrow), the recorded
    # profile still spans it, and neither read is flagged
    assert float(profiled[3]) < 10.0, profiled
    assert _drift(audit, "split-1") == []
    assert _drift(audit, "split-2") == []
    _, low, high = audit.ctx.auditor.profiles[TABLE]["x5"]
    assert high == OUTLIER and low is not None and low <= float(profiled[2])
