"""The audit in standalone mode: each party's audit records a clean run with no finding above
info and a chain that verifies, every message that crossed in both logs; a cheating party's
message stops the standalone job naming the rule."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Event

import numpy as np
import pytest
from fedaudit import test_hooks
from fedaudit.standalone import AuditedRun, StoppedByAudit
from fedflow.pipeline import Pipeline
from fedflow.standalone import LocalWorld, run_pipeline
from fedschemas import PartyRef

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"
GUEST, HOST = "9999", "10000"


def test_a_clean_standalone_run_breaks_no_rule_and_both_logs_hold_what_crossed(
    tmp_path: Path,
) -> None:
    # Prepare
    text = (REPO / "examples" / "pipelines" / "psi_eval.yaml").read_text()
    pipeline = Pipeline.from_yaml(text)
    audited = AuditedRun(pipeline, text, tmp_path)

    # Execute
    result = run_pipeline(pipeline, {GUEST: DATA, HOST: DATA}, tmp_path, watch=audited)

    # Assert: nothing above info, chains that verify
    assert all(task.state == "success" for task in result.tasks)
    for party in audited.audits.values():
        assert party.findings(result.job_id) == [], party.party_id
        assert party.chain_problems() == [], party.party_id
    # ...and each party logged every message the relay carried, sent at one end, received
    # at the other
    for sender, receiver in ((GUEST, HOST), (HOST, GUEST)):
        carried = sum(
            1 for c in result.crossings if c.source == sender and c.destination == receiver
        )
        sent = audited.audits[sender].records(result.job_id, "out")
        received = audited.audits[receiver].records(result.job_id, "in")
        assert carried > 0 and len(sent) == len(received) == carried
        assert {r["facts"]["content_sha256"] for r in sent} == {
            r["facts"]["content_sha256"] for r in received
        }
    # Each party's audit holds the columns of the table its reader read (report.column_stats,
    # data.profile_drift: tests/audit/test_profiles.py), as the CSV has them
    for party, table in ((GUEST, "breast_hetero_guest"), (HOST, "breast_hetero_host")):
        rows = np.loadtxt(DATA / f"{table}.csv", delimiter=",", skiprows=1)
        reports = [
            r["facts"]
            for r in audited.audits[party].records(result.job_id, "local")
            if r["type"] == "report.column_stats"
        ]
        assert [(f["table"], f["rows"]) for f in reports] == [(table, len(rows))], party
        first = reports[0]["columns"][0]  # x0: the first feature after id (and the guest's y)
        x0 = rows[:, 2 if party == GUEST else 1]
        assert first == ["x0", 0.0, pytest.approx(x0.min()), pytest.approx(x0.max())], party


def test_a_cheating_partys_message_stops_the_standalone_job_naming_the_rule(
    tmp_path: Path,
) -> None:
    # Prepare: the host announces a 2049-bit key for hetero_lr as the job starts
    text = (REPO / "examples" / "pipelines" / "hetero_lr_breast.yaml").read_text()
    pipeline = Pipeline.from_yaml(text)
    audited = AuditedRun(pipeline, text, tmp_path)

    @contextmanager
    def cheating(world: LocalWorld, job_id: str, abort: Event) -> Iterator[object]:
        with audited(world, job_id, abort) as run:
            forged = test_hooks.forged(
                test_hooks.ATTACKS["key_2049"](),
                job_id=job_id,
                component="hetero_lr_0",
                sender=PartyRef(party_id=HOST, role="host"),
                receiver=PartyRef(party_id=GUEST, role="guest"),
                tag="public_key",
            )
            test_hooks.inject(world.buses[HOST], forged)
            yield run

    # Execute / Assert: the run fails, stopped by the guest's audit, naming rule and party
    with pytest.raises(StoppedByAudit) as stopped:
        run_pipeline(pipeline, {GUEST: DATA, HOST: DATA}, tmp_path, watch=cheating)
    # Both parties' audits see the forged message; whichever asks first stops the run
    assert re.search(
        f"stopped by the audit of party ({GUEST}|{HOST}): rule data.key_width broken by "
        f"party {HOST} ",
        str(stopped.value),
    ), str(stopped.value)


def _cli_run(tmp_path: Path, *extra: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from fedmq.standalone_cli import standalone_app

    result = CliRunner().invoke(
        standalone_app,
        [
            "run",
            str(REPO / "examples" / "pipelines" / "psi_eval.yaml"),
            "--data",
            f"{GUEST}={DATA}",
            "--data",
            f"{HOST}={DATA}",
            "--workdir",
            str(tmp_path),
            *extra,
        ],
    )
    return result.exit_code, " ".join(result.output.split())


def test_the_cli_audit_flag_audits_each_party_and_says_its_chain_verifies(
    tmp_path: Path,
) -> None:
    # Execute
    code, output = _cli_run(tmp_path, "--audit")

    # Assert: the run succeeded, each party's audit reported, and its log is on disk
    assert code == 0, output
    for party in (GUEST, HOST):
        assert f"audit of party {party}: 0 finding(s); its chain verifies" in output
        assert (tmp_path / f"audit-{party}.db").stat().st_size > 0


def test_a_component_whose_code_is_not_the_approved_one_stops_the_standalone_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the operator approved another psi than the one installed here
    monkeypatch.setenv("FEDMQ_AUDIT_APPROVED_CODE", '{"psi": ["' + "0" * 64 + '"]}')

    # Execute
    code, output = _cli_run(tmp_path, "--audit")

    # Assert: the job fails, stopped by an audit naming the rule; the findings are listed
    assert code == 1, output
    assert re.search(
        f"job failed: stopped by the audit of party ({GUEST}|{HOST}): rule "
        f"control.component_code broken by party ({GUEST}|{HOST})",
        output,
    ), output
    # ...and the findings table after it names the rule again, with the task
    assert output.count("control.component_code") >= 2, output
    assert "psi_0" in output
