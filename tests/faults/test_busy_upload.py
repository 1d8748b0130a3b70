"""Issue #21 (5): no command waits behind an upload. `fedmq job submit --wait` runs a job to its
end, and the data service answers its other commands, while the guest's worker is in the
middle of parsing an upload.

"In the middle" is made certain rather than likely, without timing: the upload's last part is
a FIFO in the session's staging directory, so the worker's one parser thread, which joins the
parts before it parses, blocks reading it until the test writes the part's text. The test
first waits until the parser has opened the FIFO (a non-blocking open for writing succeeds only
once a reader has it open), runs the command, checks the upload still says "parsing" with
nothing parsed, and only then lets the parse finish and checks the table it stored.

Runs on the fault suite's two-party stack (tests/faults/stack.py: real gateways, schedulers
and workers, real RabbitMQ/PostgreSQL/Redis), which it leaves as it found it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from fedbus import connect
from fedcontrol import DataClient
from typer.testing import CliRunner

from fedmq import local
from fedmq.cli import app
from tests.faults.stack import FaultStack
from tests.local_stack import GUEST, HOST
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PIPELINE = f"""
name: busy
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: sum_0
    type: iter_sum
    inputs: {{data: reader_0.data}}
    params:
      common: {{rounds: 2, seed: 5, round_delay_s: 0.0}}
"""
ROWS = 2_000


def _csv(first_row: int, rows: int) -> str:
    return "".join(f"{i},{i % 7}.5,{i % 3}\n" for i in range(first_row, first_row + rows))


def _status(data: DataClient, upload_id: str) -> dict[str, Any]:
    status = data.call("table_upload_status", upload_id=upload_id)
    assert isinstance(status, dict), status
    return status


def _open_writer_once_read(fifo: Path) -> int | None:
    """The FIFO's write end once some process has it open for reading (else None)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def test_job_submit_wait_and_data_commands_answer_while_an_upload_is_being_parsed(
    stack: FaultStack, tmp_path: Path
) -> None:
    # Prepare: an upload session at the guest with two parts, the second a FIFO
    party = stack.state.parties[GUEST]
    bus = connect(local.service_bus_url(stack.state, GUEST, "gateway"))
    data = DataClient(bus, GUEST, timeout=30)
    name = f"busy_{uuid.uuid4().hex[:8]}"
    head = "id,x,y\n" + _csv(0, ROWS // 2)
    tail = _csv(ROWS // 2, ROWS - ROWS // 2)
    writer: int | None = None
    try:
        upload = data.table_upload_begin(name=name)
        upload.send(head)
        assert upload.parts == 1
        (session,) = Path(party.tables_dir).rglob(upload.upload_id)
        fifo = session / "part-000001"
        os.mkfifo(fifo)
        digest = hashlib.sha256((head + tail).encode()).hexdigest()
        answer = data.call(
            "table_upload_commit",
            upload_id=upload.upload_id,
            parts=2,
            sha256=digest,
            name=name,
            label_column="y",
            background=True,
        )
        assert answer == {"upload_id": upload.upload_id, "state": "parsing"}
        writer = wait_for(
            lambda: _open_writer_once_read(fifo),
            timeout=60,
            interval=0.05,
            what="the worker's parser thread reading the upload's last part",
        )

        # Execute: the CLI submits a job and waits for its end; the data service is asked too
        pipeline = tmp_path / "busy.yaml"
        pipeline.write_text(PIPELINE)
        job_id = f"busy-{uuid.uuid4().hex[:6]}"
        token = json.loads(os.environ["FEDMQ_GATEWAY_API_TOKENS"])[0]
        env = {"FEDMQ_API_URL": f"http://127.0.0.1:{party.http_port}", "FEDMQ_API_TOKEN": token}
        submitted = CliRunner().invoke(
            app,
            ["job", "submit", str(pipeline), "--job-id", job_id, "--wait", "--poll", "0.2"],
            env=env,
        )
        listed = data.table_list()
        status_during = _status(data, upload.upload_id)

        # Assert: the job ran to success meanwhile; the upload had not moved
        assert submitted.exit_code == 0, submitted.output
        assert stack.guest.job(job_id).state == "success"
        assert stack.host.job(job_id).state == "success"
        assert name not in {t["name"] for t in listed}
        assert (status_during["state"], status_during["bytes_done"]) == ("parsing", 0)

        # Execute: the part's text arrives; the parse goes on and stores the table
        os.write(writer, tail.encode())
        os.close(writer)
        writer = None
        final = wait_for(
            lambda: s if (s := _status(data, upload.upload_id))["state"] != "parsing" else None,
            timeout=60,
            interval=0.1,
            what="the upload's end",
        )
        assert final["state"] == "committed", final
        table = data.table_get(name)
        assert (table["rows"], table["label_column"]) == (ROWS, "y")
    finally:
        if writer is not None:
            os.close(writer)
        bus.close()
