"""Every example pipeline (examples/pipelines/*.yaml, found by glob: a new example is covered
without a line here) runs clean under both parties' audits on the local two-party stack over
RabbitMQ (issue #13: "zero findings above info on clean runs of every example pipeline,
standalone and on the local two-party stack"): the job succeeds at both parties, neither
party's audit found anything above info live, the post-hoc audit (the rules replayed over each
party's recorded log) finds nothing above info, and both parties' chains verify.

They run on the session's shared plain stack (tests/local_stack.py: shared_stack_fixture, the
one the e2e and security tests use), so they start no stack of their own, and they are all
submitted at once (the module's fixture) so that the jobs overlap while each test waits for
its own. Each example runs as written (its 2048-bit keys and the stack audits' 2048-bit floor
included) on the first ROWS rows of each table (uploaded under a name of their own, so no
other test's table profile sees them), with its epochs, trees and rounds cut as in the
standalone tests (tests/audit/test_examples_clean.py: what the audit judges does not depend on
either count).

Which run: every example whose parties are the stack's two. The ones that need a third or
fourth party (an arbiter, a second host) are skipped naming why: the local stack has two
parties (their audit runs standalone, tests/audit/test_examples_clean.py). No example is left
out silently."""

from __future__ import annotations

import runpy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedaudit.settings import AuditSettings
from fedflow.components import CATALOGUE
from fedflow.pipeline import Pipeline

from tests.audit.test_examples_clean import EXAMPLE_NAMES, EXAMPLES, SHORTENED
from tests.audit.test_stack import audit_api, statement_held
from tests.local_stack import DATA, GUEST, HOST, Stack, shared_stack_fixture
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

stack = shared_stack_fixture()

ROWS = 150
"""Rows kept of each table (hetero tables keep the same first ids at both parties; 100 leave
regression_linr's host too few rows to train on after data_split)."""
SUBMITTED_AT: list[float] = []
"""When the last example was submitted (printed with each job's end: the jobs overlap)."""
SUFFIX = f"_first{ROWS}"
"""Appended to each table's name: the cut tables' profiles are their own."""


def skip_reason(text: str) -> str | None:
    """Why an example cannot run on the two-party stack, or None."""
    extra = sorted(set(Pipeline.from_yaml(text).party_ids()) - {GUEST, HOST})
    if extra:
        return (
            f"needs parties {', '.join(extra)} besides {GUEST} and {HOST}; the local stack has "
            "two (its audit runs standalone: tests/audit/test_examples_clean.py)"
        )
    return None


def on_the_stack(text: str) -> str:
    """The example as written but for its iteration counts (cut to SHORTENED where it asks for
    more) and its tables' names (SUFFIX): its keys stay as written."""
    data = yaml.safe_load(text)
    for component in data["components"]:
        params = component.setdefault("params", {})
        if component["type"] == "reader":
            for party_params in params.values():
                if "table" in party_params:
                    party_params["table"] += SUFFIX
            continue
        fields = CATALOGUE[component["type"]].params.model_fields
        for name, most in SHORTENED.items():
            given = [p[name] for p in params.values() if name in p]
            if name in fields and (not given or max(given) > most):
                for party_params in params.values():
                    party_params.pop(name, None)
                params.setdefault("common", {})[name] = most
    return yaml.safe_dump(data, sort_keys=False)


def tables_read(pipeline: Pipeline) -> set[tuple[str, str]]:
    """(party, table) for each table a reader of the pipeline reads."""
    return {
        (task.party_id, str(spec.params_for(task.role, task.party_id)["table"]))
        for spec in pipeline.components_in_order()
        if spec.type == "reader"
        for task in spec.tasks
    }


def cut_tables(folder: Path) -> Path:
    """examples/data's tables and the ones the examples' scripts write, each cut to its header
    and first ROWS rows, named with SUFFIX, in `folder`."""
    source = folder / "source"
    source.mkdir()
    for script in sorted(EXAMPLES.glob("make_*.py")):
        runpy.run_path(str(script))["main"](source)
    cut = folder / "cut"
    cut.mkdir()
    for table in [*DATA.glob("*.csv"), *source.glob("*.csv")]:
        with table.open() as lines:
            head = [line for _, line in zip(range(ROWS + 1), lines, strict=False)]
        (cut / f"{table.stem}{SUFFIX}.csv").write_text("".join(head))
    return cut


@pytest.fixture(scope="module")
def jobs(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every example the stack can run, submitted at once: example -> job id. The tables each
    reads are uploaded by the party that reads them; the host grants the guest its tables for
    the example's component types."""
    began = time.monotonic()
    folder = cut_tables(tmp_path_factory.mktemp("stack-examples"))
    clients = {GUEST: stack.guest, HOST: stack.host}
    uploaded: set[tuple[str, str]] = set()
    submitted: dict[str, str] = {}
    for example in EXAMPLE_NAMES:
        text = on_the_stack((EXAMPLES / f"{example}.yaml").read_text())
        if skip_reason(text):
            continue
        pipeline = Pipeline.from_yaml(text)
        types = sorted({spec.type for spec in pipeline.components_in_order()} - {"reader"})
        for party, table in sorted(tables_read(pipeline)):
            path = folder / f"{table}.csv"
            if (party, table) not in uploaded:
                label = "y" if path.read_text().split("\n", 1)[0].split(",")[1:2] == ["y"] else None
                clients[party].upload_table(table, path, label_column=label, replace=True)
                uploaded.add((party, table))
            if party == HOST:
                stack.host.grant(table, GUEST, types)
        job_id = f"audit-example-{example.replace('_', '-')}"
        submitted[example] = stack.guest.submit(text, job_id=job_id).job_id
    SUBMITTED_AT.append(time.monotonic())
    took = SUBMITTED_AT[-1] - began
    print(f"tables cut and uploaded, {len(submitted)} examples submitted in {took:.1f} s")
    yield submitted


def above_info(findings: list[dict[str, Any]]) -> list[str]:
    return [
        f"{f['rule']} ({f['severity']}) by {f.get('party_id', f.get('party'))}: {f['detail']}"
        for f in findings
        if f["severity"] != "info"
    ]


def test_the_stack_runs_every_example_its_two_parties_can() -> None:
    # Assert: the glob finds the examples, and the ones skipped below are skipped only for
    # needing more parties than the stack has
    assert EXAMPLE_NAMES
    texts = {e: (EXAMPLES / f"{e}.yaml").read_text() for e in EXAMPLE_NAMES}
    skipped = {e for e, text in texts.items() if skip_reason(text)}
    assert all(len(Pipeline.from_yaml(texts[e]).party_ids()) > 2 for e in skipped)
    assert len(skipped) < len(EXAMPLE_NAMES)


def cases() -> list[Any]:
    """Each example, marked skipped with its reason where the stack cannot run it."""
    return [
        pytest.param(e, marks=pytest.mark.skip(reason=reason) if reason else ())
        for e in EXAMPLE_NAMES
        for reason in [skip_reason((EXAMPLES / f"{e}.yaml").read_text())]
    ]


@pytest.mark.parametrize("example", cases())
def test_an_example_pipeline_runs_clean_on_the_stack_under_both_parties_audits(
    example: str, stack: Stack, jobs: dict[str, str]
) -> None:
    # Prepare: the module's fixture submitted every runnable example at once
    job_id = jobs[example]

    # Execute
    ended = stack.guest.wait(job_id, timeout=540)

    # Assert: success at both parties; nothing above info live, post hoc, in either party's
    # audit; both chains verify; the audits saw the job's federation traffic
    assert ended.state == "success", ended.reason
    assert stack.host.wait(job_id, timeout=60).state == "success"
    print(f"{example}: success {time.monotonic() - SUBMITTED_AT[-1]:.1f} s after the submissions")
    for party in (GUEST, HOST):
        alerts = audit_api(stack, party, "/alerts", job_id=job_id)["data"]
        assert [(a["rule"], a["detail"]) for a in alerts] == [], party
        report = audit_api(stack, party, f"/jobs/{job_id}/report")
        assert above_info(report["findings_live"]) == [], party
        assert above_info(report["findings_post_hoc"]) == [], party
        assert report["chain_ok"], (party, report["chain_problems"])
        crossed = [t for t in report["traffic"] if t["type"] == "federation.data"]
        assert crossed, (party, report["traffic"])


def test_each_examples_peer_statements_agree_once_the_jobs_settled(
    stack: Stack, jobs: dict[str, str]
) -> None:
    # Prepare: each party states a job's traffic once its messages were quiet for
    # statement_settle_s (the last crossing ones reach its audit through the fan-out queue,
    # behind the job's end); the peer compares it with its own log once settled there too
    settle = AuditSettings.model_fields["statement_settle_s"].default
    runnable = [e for e in jobs if not skip_reason((EXAMPLES / f"{e}.yaml").read_text())]

    # Execute: every job's two statements held, then one settle period for the comparisons
    for example in runnable:
        assert stack.guest.wait(jobs[example], timeout=540).state == "success", example
        for party in (GUEST, HOST):
            wait_for(
                lambda p=party, j=jobs[example]: statement_held(audit_api(stack, p, "/export"), j),
                timeout=120,
            )
    time.sleep(settle + 3)

    # Assert: no party found the other's statement of any example's traffic disagreeing
    for example in runnable:
        for party in (GUEST, HOST):
            alerts = audit_api(stack, party, "/alerts", job_id=jobs[example])["data"]
            assert [a["detail"] for a in alerts] == [], (example, party)
