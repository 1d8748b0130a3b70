"""A large upload is parsed off the data service's command path, as a stream: while a ~40 MB
CSV parses, the same single replica keeps answering other commands, its peak memory grows by a
fraction of the file's size (the old whole-file parse took 4.6 to 9 bytes per byte of CSV), and
the stored table and its label profile are what the file says.

The worker runs as its own process (`python -m fedworker`, one replica on its own RabbitMQ
topics), so its peak resident memory is read from /proc (VmHWM) and is the data service's alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fedbus import Delivery, connect
from fedcontrol import DataClient, DataCommandFailed
from fedschemas import decode_envelope, decode_payload
from fedschemas.payloads import TableProfile

from tests.polling import wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTY = "9999"
ROWS = 160_000
FEATURES = 20
MAX_GROWTH_BYTES = 120 << 20
"""The data service's peak RSS may grow by this much for the whole upload (parts, join and
parse); the old parse of this file took over 400 MB more."""


@dataclass
class DataProcess:
    process: subprocess.Popen[bytes]
    client: DataClient
    profiles: list[TableProfile]
    """What the worker told its scheduler (control.table_profile), as they arrive."""

    def peak_rss(self) -> int:
        """The process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(scope="module")
def data_process(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataProcess]:
    # The shared broker's default vhost, isolated by topic names of this test's own.
    unique = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("upload-streaming")
    env = {
        **os.environ,
        "FEDMQ_WORKER_PARTY_ID": PARTY,
        "FEDMQ_WORKER_BUS_URL": amqp_url,
        "FEDMQ_WORKER_DATABASE_URL": f"sqlite:///{tmp / 'party.db'}",
        "FEDMQ_WORKER_TASK_THREADS": "1",
        "FEDMQ_WORKER_HTTP_PORT": "0",
        "FEDMQ_WORKER_TOPIC": f"svc.worker.{unique}",
        "FEDMQ_WORKER_REPLY_TOPIC": f"svc.worker.replies.{unique}",
        "FEDMQ_WORKER_SCHEDULER_TOPIC": f"svc.scheduler.{unique}",
        "FEDMQ_WORKER_OUTBOUND_PREFIX": f"out.{unique}.",
        "FEDMQ_WORKER_DATA_TOPIC": f"svc.data.rpc.{unique}",
    }
    log = (tmp / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fedworker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    bus = connect(amqp_url)
    client = DataClient(bus, PARTY, topic=f"svc.data.rpc.{unique}", timeout=30)
    profiles: list[TableProfile] = []

    def to_the_scheduler(delivery: Delivery) -> None:
        envelope = decode_envelope(delivery.body)
        if envelope.type == "control.table_profile":
            profiles.append(decode_payload(envelope, TableProfile))

    bus.declare(f"svc.scheduler.{unique}")
    bus.subscribe(f"svc.scheduler.{unique}", to_the_scheduler)
    try:
        wait_until(
            lambda: _answers(client, process),
            timeout=90,
            what="the data service to answer",
            describe=lambda: (tmp / "worker.log").read_text()[-2000:],
        )
        yield DataProcess(process, client, profiles)
    finally:
        bus.close()
        process.kill()  # its graceful stop is tested elsewhere; nothing here needs one
        process.wait(timeout=30)
        log.close()


def _answers(client: DataClient, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "the worker exited"
    try:
        client.table_list()
    except Exception:
        return False
    return True


def large_csv(path: Path, labels: tuple[int, ...]) -> str:
    """ROWS rows of FEATURES features (about 40 MB), labels cycling through `labels`: one
    block of random values repeated under fresh ids (quick to write; the parser cannot tell)."""
    rng = np.random.default_rng(7)
    block = [",".join(f"{v:.9f}" for v in row) for row in rng.normal(size=(1000, FEATURES))]
    header = "id,y," + ",".join(f"x{i}" for i in range(FEATURES)) + "\n"
    lines = [f"row{i},{labels[i % len(labels)]},{block[i % len(block)]}\n" for i in range(ROWS)]
    text = header + "".join(lines)
    path.write_text(text)
    return text


def test_a_large_upload_parses_off_the_command_path_in_bounded_memory(
    data_process: DataProcess, tmp_path: Path
) -> None:
    # Prepare: a ~40 MB CSV with three label values; the service's peak memory before it
    text = large_csv(tmp_path / "big.csv", labels=(0, 1, 2))
    assert len(text) > 35 << 20
    client = data_process.client
    before = data_process.peak_rss()
    answered_while_parsing: list[int] = []
    progress: list[tuple[int, int]] = []
    parsing = threading.Event()
    stored = threading.Event()

    def ask_meanwhile() -> None:
        # Other commands, one after the other, for as long as the upload runs.
        while not stored.is_set():
            rows = client.table_list()
            if parsing.is_set() and not stored.is_set():
                answered_while_parsing.append(len(rows))

    def on_progress(done: int, total: int) -> None:
        parsing.set()
        progress.append((done, total))

    asker = threading.Thread(target=ask_meanwhile)
    asker.start()

    # Execute
    upload = client.table_upload_begin(name="big")
    try:
        upload.send(text)
        del text
        upload.poll_s = 0.05
        table = upload.commit("big", label_column="y", on_progress=on_progress, timeout=240)
    finally:
        stored.set()
        asker.join()

    # Assert: the table is whole, its label profile recorded
    assert table["rows"] == ROWS
    assert table["features"] == FEATURES
    assert table["label_values"] == [0.0, 1.0, 2.0]
    # and told its scheduler, which checks pipelines against it (tests/policy/test_labels.py)
    told = wait_for(lambda: data_process.profiles, 30, "the table's profile at the scheduler")
    assert (told[0].table, told[0].rows, told[0].label_values) == ("big", ROWS, [0.0, 1.0, 2.0])
    # the one replica answered other commands while it parsed, and reported its progress
    assert answered_while_parsing, "no command was answered while the upload parsed"
    assert progress and all(done <= total for done, total in progress)
    # and its peak memory grew by a fraction of the file's size
    growth = data_process.peak_rss() - before
    assert growth < MAX_GROWTH_BYTES, f"peak RSS grew by {growth >> 20} MiB"


def test_a_refused_background_commit_reports_every_bad_line(
    data_process: DataProcess,
) -> None:
    client = data_process.client
    upload = client.table_upload_begin(name="bad_rows")
    upload.send("id,a\nr1,1\nr2,zz\nr1,3\n")

    with pytest.raises(DataCommandFailed) as refused:
        upload.commit("bad_rows")

    assert refused.value.http_status == 400
    assert "bad_rows.csv:3: not a number" in str(refused.value)
    assert "bad_rows.csv:4: id 'r1' already on line 2" in str(refused.value)


def test_an_upload_with_text_labels_records_their_classes_and_refuses_a_mixed_column(
    data_process: DataProcess,
) -> None:
    # Prepare: class names as labels (the breast table's, as a data team would write them)
    client = data_process.client
    rows = "".join(
        f"p{i},{x:.3f},{('benign', 'malignant')[i % 3 == 0]}\n"
        for i, x in enumerate(np.linspace(0.0, 1.0, 30))
    )
    upload = client.table_upload_begin(name="diagnosis")
    upload.send("id,x,diagnosis\n" + rows)

    # Execute
    table = upload.commit("diagnosis", label_column="diagnosis")

    # Assert: classes 0 and 1 in the sorted order of the names, recorded in the catalogue
    assert table["label_classes"] == ["benign", "malignant"]
    assert table["label_values"] == [0.0, 1.0]
    assert client.table_get("diagnosis")["label_classes"] == ["benign", "malignant"]
    told = wait_for(
        lambda: [p for p in data_process.profiles if p.table == "diagnosis"],
        30,
        "the table's profile at the scheduler",
    )
    assert (told[0].label_values, told[0].label_classes) == ([0.0, 1.0], ["benign", "malignant"])

    # and a label column of numbers and text is refused, naming a line of each
    mixed = client.table_upload_begin(name="mixed")
    mixed.send("id,x,y\nr1,1,0\nr2,2,1\nr3,3,yes\n")
    with pytest.raises(DataCommandFailed) as refused:
        mixed.commit("mixed", label_column="y")
    assert refused.value.http_status == 400
    assert "label column 'y' mixes numbers (line 2: '0') and text (line 4: 'yes')" in str(
        refused.value
    )
