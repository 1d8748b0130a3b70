"""`fedmq data` and `fedmq job` against the REST API served over real HTTP (one party: a real
scheduler and worker in this process), and the SDK's behaviour on success and refusal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmq import data_cli
from fedmq.cli import app
from fedmq.sdk import ApiError, Client, JobFailed

from .conftest import DATA, GUEST_ONLY, TOKEN, Party, serving

runner = CliRunner()
# Wide enough that tables and reasons are not wrapped (the consoles are made at import).
data_cli.console.width = data_cli.errors.width = 240


@pytest.fixture
def served(party_factory: Callable[..., Party]) -> Iterator[tuple[Party, str]]:
    party = party_factory()
    with serving(party.api.app) as url:
        yield party, url


def fedmq(url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args], env={"FEDMQ_API_URL": url, "FEDMQ_API_TOKEN": TOKEN})
    return result.exit_code, result.output


def test_upload_submit_wait_and_metrics_through_the_cli(
    served: tuple[Party, str], tmp_path: Path
) -> None:
    _party, url = served
    pipeline = tmp_path / "guest.yaml"
    pipeline.write_text(GUEST_ONLY)

    uploaded = fedmq(
        url, "data", "upload", str(DATA / "breast_hetero_guest.csv"), "--label-column", "y"
    )
    granted = fedmq(
        url, "data", "grant", "breast_hetero_guest", "--to", "10000", "--components", "psi"
    )
    listed = fedmq(url, "data", "list")
    submitted = fedmq(
        url, "job", "submit", str(pipeline), "--job-id", "cli-1", "--wait", "--poll", "0.2"
    )
    status = fedmq(url, "job", "status", "cli-1")
    tasks = fedmq(url, "job", "tasks", "cli-1")
    metrics = fedmq(url, "job", "metrics", "cli-1", "--component", "eval_0")
    logs = fedmq(url, "job", "logs", "cli-1")

    assert uploaded[0] == 0, uploaded[1]
    assert "breast_hetero_guest: 569 rows, 10 features, label y" in uploaded[1]
    assert granted[0] == 0 and "granted to party 10000 for psi" in granted[1]
    assert listed[0] == 0 and "breast_hetero_guest" in listed[1]
    assert submitted[0] == 0, submitted[1]
    assert "job cli-1 succeeded" in submitted[1]
    assert "eval_0" in submitted[1]  # a progress row per task
    assert "success" in status[1] and "2/2 tasks succeeded" in status[1]
    assert tasks[1].count("success") == 2
    assert "auc" in metrics[1] and "intersection" not in metrics[1]
    assert "job cli-1 success" in logs[1]


def test_a_failing_job_makes_wait_exit_1_with_the_reason(
    served: tuple[Party, str], tmp_path: Path
) -> None:
    _party, url = served
    pipeline = tmp_path / "bad.yaml"
    pipeline.write_text(GUEST_ONLY.replace("label_column: y", "label_column: nope"))
    fedmq(url, "data", "upload", str(DATA / "breast_hetero_guest.csv"), "--label-column", "y")

    code, output = fedmq(
        url, "job", "submit", str(pipeline), "--job-id", "cli-bad", "--wait", "--poll", "0.2"
    )

    assert code == 1, output
    assert "job cli-bad failed" in output
    assert "eval_0" in output and "nope" in output  # the task's reason names the column


def test_a_grant_naming_no_table_or_no_peer_is_recorded_with_a_warning_for_each(
    served: tuple[Party, str],
) -> None:
    # Prepare: the party holds one table; its gateway links to no peer (FakeGateway)
    _party, url = served
    fedmq(url, "data", "upload", str(DATA / "breast_hetero_guest.csv"), "--label-column", "y")

    # Execute
    typo = fedmq(url, "data", "grant", "breast_hetero_gues", "--to", "99x99", "--components", "psi")
    right_table = fedmq(
        url, "data", "grant", "breast_hetero_guest", "--to", "99x99", "--components", "psi"
    )

    # Assert: both grants are recorded (a grant may come before its upload or link), and each
    # possible typo is named
    assert typo[0] == 0, typo[1]
    assert "this party has no table breast_hetero_gues (yet)" in typo[1]
    assert "party 99x99 is not one of this site's peers (none)" in typo[1]
    assert right_table[0] == 0 and "has no table" not in right_table[1]
    assert "party 99x99 is not one of this site's peers" in right_table[1]


def test_a_refused_request_exits_2_with_the_servers_reason(served: tuple[Party, str]) -> None:
    _party, url = served

    unknown = fedmq(url, "job", "status", "no-such-job")
    bad_csv = fedmq(url, "data", "upload", str(DATA / "README.md"), "--name", "readme")
    wrong_token = runner.invoke(
        app, ["job", "list"], env={"FEDMQ_API_URL": url, "FEDMQ_API_TOKEN": "wrong"}
    )

    assert unknown[0] == 2 and "404" in unknown[1] and "no job no-such-job" in unknown[1]
    assert bad_csv[0] == 2 and "400" in bad_csv[1]
    assert wrong_token.exit_code == 2 and "invalid token" in wrong_token.output


def test_the_sdk_returns_models_and_raises_api_errors(served: tuple[Party, str]) -> None:
    _party, url = served
    with Client(url, TOKEN) as api:
        table = api.upload_table(
            "breast_hetero_guest", DATA / "breast_hetero_guest.csv", label_column="y"
        )
        job = api.submit(GUEST_ONLY, job_id="sdk-1")
        done = api.wait("sdk-1", timeout=60, poll=0.2)
        auc = api.metrics("sdk-1").value("eval_0", "auc")
        with pytest.raises(ApiError) as missing:
            api.job("nope")
        with pytest.raises(ApiError) as conflict:
            api.submit(GUEST_ONLY.replace("x0", "x1"), job_id="sdk-1")
        failed_yaml = GUEST_ONLY.replace("label_column: y", "label_column: nope")
        api.submit(failed_yaml, job_id="sdk-2")
        with pytest.raises(JobFailed) as failed:
            api.wait("sdk-2", timeout=60, poll=0.2, raise_on_failure=True)

    assert table.rows == 569
    assert job.job_id == "sdk-1"
    assert done.state == "success"
    assert auc is not None and 0.5 < auc <= 1.0
    assert missing.value.status == 404
    assert conflict.value.status == 409
    assert failed.value.job.state == "failed"
    assert "nope" in (failed.value.job.reason or "")
