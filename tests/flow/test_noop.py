"""The noop component: runs at guest and hosts, exchanges nothing, chains through `after`."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedflow.components import protocol_of
from fedflow.pipeline import Pipeline, PipelineError
from fedflow.standalone import run_pipeline

GUEST, HOST = "9999", "10000"


def chain_yaml(length: int) -> str:
    lines = [
        "name: noop-chain",
        "parties:",
        f'  guest: "{GUEST}"',
        f'  host: ["{HOST}"]',
        "components:",
    ]
    for i in range(length):
        lines += [f"  - name: noop_{i}", "    type: noop"]
        if i:
            lines.append(f"    inputs: {{after: noop_{i - 1}.done}}")
    return "\n".join(lines) + "\n"


def test_a_chain_of_noops_succeeds_in_chain_order_at_both_parties_and_sends_nothing(
    tmp_path: Path,
) -> None:
    # Prepare
    pipeline = Pipeline.from_yaml(chain_yaml(3))
    finished: list[tuple[str, str]] = []

    # Execute
    result = run_pipeline(
        pipeline,
        {},
        tmp_path,
        on_event=lambda state, party, _role, component, _p: (
            finished.append((party, component)) if state == "success" else None
        ),
    )

    # Assert
    assert [c.name for c in pipeline.components_in_order()] == ["noop_0", "noop_1", "noop_2"]
    assert pipeline.component("noop_2").upstream == ["noop_1"]
    assert sorted((t.party_id, t.component, t.state) for t in result.tasks) == sorted(
        (party, f"noop_{i}", "success") for party in (GUEST, HOST) for i in range(3)
    )
    for party in (GUEST, HOST):
        assert [c for p, c in finished if p == party] == ["noop_0", "noop_1", "noop_2"]
    assert result.crossings == []
    done = result.output(HOST, "host", "noop_1", "done")
    assert done.rows == 0 and done.feature_names == [] and done.labels is None


def test_noop_declares_an_empty_protocol_and_needs_no_input() -> None:
    # Execute
    pipeline = Pipeline.from_yaml(chain_yaml(1))
    protocol = protocol_of("noop")

    # Assert
    assert protocol.messages == ()
    assert [(t.party_id, t.role) for t in pipeline.task_parties("noop_0")] == [
        (GUEST, "guest"),
        (HOST, "host"),
    ]


def test_a_noop_after_an_output_that_does_not_exist_is_refused() -> None:
    # Prepare
    text = chain_yaml(2).replace("noop_0.done", "noop_0.data")

    # Execute / Assert
    with pytest.raises(PipelineError, match=r"noop_0 \(noop\) has no output 'data'"):
        Pipeline.from_yaml(text)
