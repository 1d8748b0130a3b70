"""The party's data service (fedworker.data, served by its workers on svc.data.rpc) on the real
RabbitMQ: a table larger than one bus frame, parts sent twice, parts missing, commits sent
twice, abandoned and aborted sessions, two replicas sharing one upload, and a commit another
replica is still parsing.

The workers run in this process on their own vhost and one SQLite database (with its tables
directory next to it, as replicas share them); commands go through `fedcontrol.DataClient` as
the REST API sends them.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fedbus import Bus, connect
from fedbus.chunking import DEFAULT_MAX_FRAME_BYTES
from fedcontrol import DataClient, DataCommandFailed
from fedworker import data
from fedworker.main import Worker
from fedworker.metrics import WorkerMetrics
from fedworker.settings import WorkerSettings
from pydantic import SecretStr

from fedmq import local

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTY = "9999"


@dataclass
class DataParty:
    client: DataClient
    workers: list[Worker]
    uploads_dir: Path

    def answered(self, worker: Worker, op: str) -> float:
        value = worker.metrics.registry.get_sample_value(
            "fedmq_worker_data_requests_total", {"op": op, "outcome": "ok"}
        )
        return value or 0.0


@pytest.fixture(scope="module")
def party(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataParty]:
    vhost = f"fedmqd{uuid.uuid4().hex[:8]}"
    local.ensure_vhost(vhost)
    bus_url = f"{amqp_url.rsplit('/', 1)[0]}/{vhost}"
    tmp = tmp_path_factory.mktemp("data-uploads")
    settings = WorkerSettings(
        party_id=PARTY,
        bus_url=SecretStr(bus_url),
        database_url=SecretStr(f"sqlite:///{tmp / 'party.db'}"),
        task_threads=1,
    )
    # Two replicas of the party's worker: one database, one tables directory.
    workers = [Worker(settings, WorkerMetrics(process=False)) for _ in range(2)]
    for worker in workers:
        worker.start()
    bus: Bus = connect(bus_url)
    try:
        yield DataParty(
            DataClient(bus, PARTY, timeout=20), workers, tmp / "party-tables" / ".uploads"
        )
    finally:
        bus.close()
        for worker in workers:
            worker.stop()
        local.delete_vhost(vhost)


def csv_text(rows: int, start: int = 0, id_prefix: str = "r") -> str:
    return "".join(f"{id_prefix}{i},{i % 7},{i % 11 / 3:.4f}\n" for i in range(start, start + rows))


HEADER = "id,a,b\n"


def assert_no_table(party: DataParty, name: str) -> None:
    """The party has no table `name`: the data service answers 404."""
    with pytest.raises(DataCommandFailed) as absent:
        party.client.table_get(name)
    assert absent.value.http_status == 404


def test_a_table_larger_than_one_frame_is_stored_and_the_queue_keeps_answering(
    party: DataParty,
) -> None:
    # Prepare: ~19 MiB, the size that used to get no answer at all, in 360,000 rows: long ids
    # make up the bytes, as parsing time goes by rows (1.25 million short rows took 4x longer)
    text = HEADER + csv_text(360_000, id_prefix="customer-with-a-long-reference-number-")
    assert len(text) > 2 * DEFAULT_MAX_FRAME_BYTES

    # Execute
    stored = party.client.table_upload("twenty_mib", text, timeout=120)
    started = time.monotonic()
    listed = party.client.table_list()
    answered_in = time.monotonic() - started

    # Assert
    assert stored["rows"] == 360_000 and stored["features"] == 2
    assert stored["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert "twenty_mib" in [t["name"] for t in listed]
    assert answered_in < 5


def test_two_replicas_share_one_upload_and_either_serves_the_table(party: DataParty) -> None:
    # Prepare: many small parts, so the broker hands some to each replica
    before = [party.answered(w, "table_upload_part") for w in party.workers]
    upload = party.client.table_upload_begin(name="shared")
    pieces = [HEADER + csv_text(50)] + [csv_text(50, start=50 * i) for i in range(1, 40)]

    # Execute
    for piece in pieces:
        upload.send(piece)
    stored = upload.commit("shared")
    seen = [w.tables.get("shared") for w in party.workers]

    # Assert
    after = [party.answered(w, "table_upload_part") for w in party.workers]
    answered = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(answered) == len(pieces)
    assert all(count > 0 for count in answered), answered
    assert stored["rows"] == 2000
    assert all(info is not None and info.sha256 == stored["sha256"] for info in seen)


def test_a_part_sent_twice_is_stored_once_and_a_changed_part_is_refused(
    party: DataParty,
) -> None:
    # Prepare
    first, second = HEADER + csv_text(1000), csv_text(1000, start=1000)
    upload = party.client.table_upload_begin(name="retried")
    upload_id = upload.upload_id

    # Execute: part 0 twice (an answer lost, the part sent again), then part 1
    party.client.call("table_upload_part", upload_id=upload_id, seq=0, data=first)
    again = party.client.call("table_upload_part", upload_id=upload_id, seq=0, data=first)
    party.client.call("table_upload_part", upload_id=upload_id, seq=1, data=second)
    with pytest.raises(DataCommandFailed) as changed:
        party.client.call("table_upload_part", upload_id=upload_id, seq=1, data=first)
    stored = party.client.call(
        "table_upload_commit",
        upload_id=upload_id,
        parts=2,
        sha256=hashlib.sha256((first + second).encode()).hexdigest(),
        name="retried",
    )

    # Assert
    assert isinstance(again, dict) and again["stored_bytes"] == len(first)
    assert changed.value.http_status == 409 and "other text" in changed.value.message
    assert isinstance(stored, dict) and stored["rows"] == 2000


def test_a_commit_with_a_missing_part_keeps_the_session_and_a_repeated_commit_answers_again(
    party: DataParty,
) -> None:
    # Prepare
    parts = [HEADER + csv_text(10), csv_text(10, start=10), csv_text(10, start=20)]
    digest = hashlib.sha256("".join(parts).encode()).hexdigest()
    upload_id = party.client.table_upload_begin().upload_id
    for seq in (0, 2):
        party.client.call("table_upload_part", upload_id=upload_id, seq=seq, data=parts[seq])
    commit = {"upload_id": upload_id, "parts": 3, "sha256": digest, "name": "gappy"}

    # Execute
    with pytest.raises(DataCommandFailed) as gap:
        party.client.call("table_upload_commit", **commit)
    party.client.call("table_upload_part", upload_id=upload_id, seq=1, data=parts[1])
    stored = party.client.call("table_upload_commit", **commit)
    repeated = party.client.call("table_upload_commit", **commit)

    # Assert
    assert gap.value.http_status == 400 and "part(s) 1 of 3 never arrived" in gap.value.message
    assert isinstance(stored, dict) and stored["rows"] == 30
    assert repeated == stored
    assert not list((party.uploads_dir / upload_id).glob("part-*"))


def test_a_commit_another_replica_is_parsing_is_refused_not_parsed_twice(
    party: DataParty,
) -> None:
    # Prepare: a complete session whose commit another replica has begun (its lock file)
    text = HEADER + csv_text(10)
    upload_id = party.client.table_upload_begin().upload_id
    party.client.call("table_upload_part", upload_id=upload_id, seq=0, data=text)
    (party.uploads_dir / upload_id / "committing.lock").touch()

    # Execute
    with pytest.raises(DataCommandFailed) as busy:
        party.client.call(
            "table_upload_commit", upload_id=upload_id, parts=1, name="being_committed"
        )

    # Assert
    assert busy.value.http_status == 409 and "another worker" in busy.value.message
    assert (party.uploads_dir / upload_id / "part-000000").exists()
    assert_no_table(party, "being_committed")


def test_parts_that_do_not_add_up_to_the_digest_are_refused_and_dropped(
    party: DataParty,
) -> None:
    # Prepare
    upload_id = party.client.table_upload_begin().upload_id
    party.client.call("table_upload_part", upload_id=upload_id, seq=0, data=HEADER + "r1,1,1\n")

    # Execute
    with pytest.raises(DataCommandFailed) as mismatch:
        party.client.call(
            "table_upload_commit",
            upload_id=upload_id,
            parts=1,
            sha256=hashlib.sha256(b"something else").hexdigest(),
            name="mismatched",
        )

    # Assert
    assert mismatch.value.http_status == 400 and "SHA-256" in mismatch.value.message
    assert not (party.uploads_dir / upload_id).exists()
    assert_no_table(party, "mismatched")


def test_an_abandoned_session_is_deleted_at_the_next_begin_and_an_aborted_one_at_once(
    party: DataParty,
) -> None:
    # Prepare: a session whose last part came two hours ago
    old = party.client.table_upload_begin().upload_id
    party.client.call("table_upload_part", upload_id=old, seq=0, data=HEADER)
    two_hours_ago = time.time() - 7200
    os.utime(party.uploads_dir / old, (two_hours_ago, two_hours_ago))
    recent = party.client.table_upload_begin()
    recent.send(HEADER)

    # Execute
    fresh = party.client.table_upload_begin().upload_id
    recent.abort()

    # Assert
    assert not (party.uploads_dir / old).exists()
    assert not (party.uploads_dir / recent.upload_id).exists()
    assert (party.uploads_dir / fresh).is_dir()
    with pytest.raises(DataCommandFailed) as late:
        party.client.call("table_upload_part", upload_id=old, seq=1, data="r1,1,1\n")
    assert late.value.http_status == 404 and "upload the file again" in late.value.message


def test_a_session_over_the_size_limit_is_refused_part_by_part(
    party: DataParty, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the workers run in this process, so their limit can be lowered here
    monkeypatch.setattr(data, "MAX_UPLOAD_BYTES", 1000)
    upload_id = party.client.table_upload_begin().upload_id
    party.client.call("table_upload_part", upload_id=upload_id, seq=0, data="x" * 600)

    # Execute
    with pytest.raises(DataCommandFailed) as over:
        party.client.call("table_upload_part", upload_id=upload_id, seq=1, data="x" * 600)

    # Assert
    assert over.value.http_status == 400 and "larger than" in over.value.message
