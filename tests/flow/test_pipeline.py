"""Pipeline YAML: parsed into the model the scheduler uses, and refused with a named problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedflow.pipeline import Pipeline, PipelineError, TableUse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"

CONTRACT_EXAMPLE = """
name: psi-eval
parties:
  guest: "9999"
  host: ["10000"]
  arbiter: null
components:
  - name: reader_0
    type: reader
    params:
      guest: {table: breast_guest}
      host: {table: breast_host}
  - name: psi_0
    type: psi
    inputs: {data: reader_0.data}
  - name: eval_0
    type: evaluation
    inputs: {data: psi_0.data}
    params:
      common: {label_column: y}
"""


def test_the_contract_example_parses_into_tasks_params_and_table_uses() -> None:
    # Execute
    pipeline = Pipeline.from_yaml(CONTRACT_EXAMPLE)

    # Assert
    assert pipeline.name == "psi-eval"
    assert pipeline.initiator == "9999"
    assert pipeline.party_ids() == ["9999", "10000"]
    assert pipeline.roles_of("10000") == ["host"]
    assert pipeline.roles_of("12345") == []
    assert [c.name for c in pipeline.components_in_order()] == ["reader_0", "psi_0", "eval_0"]
    assert [(t.party_id, t.role) for t in pipeline.task_parties("eval_0")] == [("9999", "guest")]
    assert [(c.name, role) for c, role in pipeline.tasks_for("10000")] == [
        ("reader_0", "host"),
        ("psi_0", "host"),
    ]
    assert pipeline.params_for("reader_0", "host", "10000") == {"table": "breast_host"}
    eval_params = pipeline.params_for("eval_0", "guest", "9999")
    assert eval_params["label_column"] == "y" and eval_params["threshold"] == 0.5
    assert pipeline.component("psi_0").inputs_as_strings() == {"data": "reader_0.data"}
    assert pipeline.tables_read_by("9999") == [
        TableUse("reader_0", "breast_guest", ["psi", "evaluation"])
    ]
    # The host's rows never reach the guest's evaluation: its grant need cover psi only.
    assert pipeline.tables_read_by("10000") == [TableUse("reader_0", "breast_host", ["psi"])]


def test_the_example_pipelines_are_valid() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        pipeline = Pipeline.from_yaml(path.read_text())
        assert pipeline.components_in_order(), path


def test_topological_order_is_stable_and_follows_the_file_where_the_dag_allows() -> None:
    # Prepare: eval_0 written before the psi it depends on; two independent readers.
    text = """
name: order
parties: {guest: 1, host: [2, 3]}
components:
  - {name: eval_0, type: evaluation, inputs: {data: psi_0.data}}
  - {name: reader_b, type: reader, params: {common: {table: b}}}
  - {name: psi_0, type: psi, inputs: {data: reader_a.data}}
  - {name: reader_a, type: reader, params: {common: {table: a}, "3": {table: a3}}}
"""
    # Execute
    pipeline = Pipeline.from_yaml(text)

    # Assert
    assert [c.name for c in pipeline.components_in_order()] == [
        "reader_b",
        "reader_a",
        "psi_0",
        "eval_0",
    ]
    assert pipeline.party_ids() == ["1", "2", "3"]
    assert pipeline.params_for("reader_a", "host", "3") == {"table": "a3"}
    assert pipeline.params_for("reader_a", "host", "2") == {"table": "a"}
    assert pipeline.downstream_of("reader_a") == ["psi_0", "eval_0"]


def test_an_initiator_other_than_the_guest_can_be_named() -> None:
    text = CONTRACT_EXAMPLE.replace("name: psi-eval", "name: psi-eval\ninitiator: '10000'")
    assert Pipeline.from_yaml(text).initiator == "10000"


def _with_components(components: str, parties: str = "{guest: '9999', host: ['10000']}") -> str:
    return f"name: bad\nparties: {parties}\ncomponents:\n{components}"


READER = "  - {name: reader_0, type: reader, params: {common: {table: t}}}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", r"not valid YAML at line 1"),
        ("", r"empty document"),
        ("- a list", r"pipeline: must be a mapping"),
        (
            _with_components(
                READER
                + "  - {name: a, type: psi, inputs: {data: b.data}}\n"
                + "  - {name: b, type: psi, inputs: {data: a.data}}\n"
            ),
            r"cycle: a -> b -> a",
        ),
        (
            _with_components("  - {name: x, type: psi, inputs: {data: x.data}}\n"),
            r"component x: input 'data' is its own output",
        ),
        (
            _with_components("  - {name: lr_0, type: secure_boost}\n"),
            r"component lr_0: unknown component type 'secure_boost' \(known: ",
        ),
        (
            _with_components(READER + "  - {name: psi_0, type: psi}\n"),
            r"component psi_0: missing input 'data'",
        ),
        (
            _with_components(READER + "  - {name: psi_0, type: psi, inputs: {data: nope.data}}\n"),
            r"component psi_0: input 'data' names unknown component nope.data",
        ),
        (
            _with_components(
                READER + "  - {name: psi_0, type: psi, inputs: {data: reader_0.model}}\n"
            ),
            r"reader_0 \(reader\) has no output 'model' \(outputs: data\)",
        ),
        (
            _with_components(
                READER + "  - {name: psi_0, type: psi, inputs: {table: reader_0.data}}\n"
            ),
            r"psi has no input 'table' \(inputs: data\)",
        ),
        (
            _with_components("  - {name: reader_0, type: reader, params: {common: {table: 5}}}\n"),
            r"component reader_0: params for guest 9999: table: Input should be a valid string",
        ),
        (
            _with_components("  - {name: reader_0, type: reader, params: {guest: {table: t}}}\n"),
            r"params for host 10000: table: Field required",
        ),
        (
            _with_components(
                READER
                + "  - {name: s, type: iter_sum, inputs: {data: reader_0.data},"
                + " params: {common: {rounds: many}}}\n"
            ),
            r"component s: params for guest 9999: rounds: Input should be a valid integer",
        ),
        (
            _with_components(
                READER
                + "  - {name: s, type: iter_sum, inputs: {data: reader_0.data},"
                + " params: {common: {rounds: 0}}}\n"
            ),
            r"rounds: Input should be greater than or equal to 1",
        ),
        (
            _with_components(
                READER
                + "  - {name: s, type: iter_sum, inputs: {data: reader_0.data},"
                + " params: {common: {round: 3}}}\n"
            ),
            r"round: Extra inputs are not permitted",
        ),
        (
            _with_components(
                READER
                + "  - {name: e, type: evaluation, inputs: {data: reader_0.data},"
                + " params: {host: {threshold: 0.3}}}\n"
            ),
            r"component e: params for host, but evaluation runs only at guest",
        ),
        (
            _with_components(
                "  - {name: reader_0, type: reader, params: {common: {table: t}, arbiter: {}}}\n"
            ),
            r"params for arbiter, but reader runs only at guest, host",
        ),
        (
            _with_components(
                "  - {name: reader_0, type: reader, params: {common: {table: t}, "
                "'777': {table: u}}}\n"
            ),
            r"params section '777' is neither common, a role, nor a party that runs reader_0",
        ),
        (_with_components(READER + READER), r"component reader_0: the name is used twice"),
        (_with_components(READER, "{host: ['10000']}"), r"parties: a guest is required"),
        (_with_components(READER, "{guest: '9 9'}"), r"parties.guest: bad party id '9 9'"),
        (_with_components(READER, "{guest: '1', host: ['1']}"), r"both guest and host"),
        (_with_components(READER, "{guest: '1', hosts: ['2']}"), r"unknown key\(s\) hosts"),
        (_with_components(READER) + "extra: 1\n", r"pipeline: unknown key\(s\) extra"),
        ("name: x\nparties: {guest: '1'}\ncomponents: []\n", r"components must be a non-empty"),
    ],
)
def test_a_malformed_pipeline_is_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        Pipeline.from_yaml(text)


def test_a_key_given_twice_is_refused_not_silently_overridden() -> None:
    # Prepare: the second `name:` would otherwise replace the first without a word
    text = CONTRACT_EXAMPLE.replace("name: psi-eval\n", "name: psi-eval\nname: other\n")

    # Execute / Assert
    with pytest.raises(PipelineError, match=r"not valid YAML at line 3.*'name' given twice"):
        Pipeline.from_yaml(text)


def test_a_pipeline_with_too_many_components_is_refused_before_anything_is_stored() -> None:
    # Prepare: one reader and 256 evaluations of it -- 257 components, one over the cap
    evaluations = "".join(
        f"  - {{name: eval_{i}, type: evaluation, inputs: {{data: reader_0.data}}}}\n"
        for i in range(256)
    )
    text = (
        "name: wide\nparties: {guest: 1, host: [2]}\ncomponents:\n"
        "  - {name: reader_0, type: reader, params: {common: {table: t}}}\n" + evaluations
    )

    # Execute / Assert: at the cap it parses; one more is refused naming the limit
    Pipeline.from_yaml(text.rsplit("  - {name: eval_255", 1)[0])
    with pytest.raises(PipelineError, match="257 components; at most 256"):
        Pipeline.from_yaml(text)
