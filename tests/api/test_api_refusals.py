"""Bad requests get a 4xx with a reason, never a 500: a table of bad inputs, the token check,
a scheduler that does not answer (503), and random path and query values (hypothesis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fedgateway.settings import GatewaySettings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from .conftest import GUEST_ONLY, Party

CYCLE = """\
name: cycle
parties: {guest: "9999", host: []}
components:
  - name: a
    type: psi
    inputs: {data: b.data}
  - name: b
    type: psi
    inputs: {data: a.data}
"""

BAD_ROWS_CSV = b"id,y,x0\n1,0,0.5\n2,1,abc\n3,1\n4,,0.1\n"

NOT_A_PEER = GUEST_ONLY.replace("host: []", 'host: ["10000"]').replace(
    "guest: {table: breast_hetero_guest}",
    "guest: {table: breast_hetero_guest}\n      host: {table: t}",
)
"""A pipeline whose host, party 10000, is no peer of this party (nothing drains out.10000)."""


def csv_upload(name: str, content: bytes, **fields: str) -> dict[str, Any]:
    return {"data": {"name": name, **fields}, "files": {"file": ("t.csv", content, "text/csv")}}


YAML = {"Content-Type": "application/yaml"}

# (what, method, path, request kwargs, expected status, a phrase the reason must contain)
BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("unknown job", "GET", "/api/v1/jobs/nope", {}, 404, "no job nope"),
    ("job id with a space", "GET", "/api/v1/jobs/a%20b", {}, 422, "pattern"),
    ("tasks of an unknown job", "GET", "/api/v1/jobs/nope/tasks", {}, 404, "no job"),
    ("metrics of an unknown job", "GET", "/api/v1/jobs/nope/metrics", {}, 404, "no job"),
    ("logs of an unknown job", "GET", "/api/v1/jobs/nope/logs", {}, 404, "no job"),
    ("stop an unknown job", "POST", "/api/v1/jobs/nope/stop", {}, 404, "no job"),
    ("rerun an unknown job", "POST", "/api/v1/jobs/nope/rerun", {}, 404, "no job"),
    ("negative attempt", "GET", "/api/v1/jobs/x/tasks?attempt=-1", {}, 422, "greater"),
    (
        "attempt beyond the column's range",
        "GET",
        "/api/v1/jobs/x/tasks?attempt=19803954302",
        {},
        422,
        "less than or equal to 2147483647",
    ),
    (
        "a host that is not a peer",
        "POST",
        "/api/v1/jobs",
        {"content": NOT_A_PEER.encode(), "headers": YAML},
        409,
        "party 10000 is not a peer of party 9999",
    ),
    ("unknown state", "GET", "/api/v1/jobs?state=done", {}, 422, "state"),
    ("limit 0", "GET", "/api/v1/jobs?limit=0", {}, 422, "limit"),
    ("limit too big", "GET", "/api/v1/jobs?limit=100000", {}, 422, "limit"),
    ("not YAML", "POST", "/api/v1/jobs", {"content": b"a: [", "headers": YAML}, 400, "YAML"),
    ("a cycle", "POST", "/api/v1/jobs", {"content": CYCLE.encode(), "headers": YAML}, 400, "cycle"),
    (
        "unknown component type",
        "POST",
        "/api/v1/jobs",
        {"content": GUEST_ONLY.replace("evaluation", "evaluatoin").encode(), "headers": YAML},
        400,
        "evaluatoin",
    ),
    (
        "submitted at a party that is not the guest",
        "POST",
        "/api/v1/jobs",
        {"content": GUEST_ONLY.replace('"9999"', '"8888"').encode(), "headers": YAML},
        400,
        "guest is party 8888",
    ),
    (
        "empty pipeline",
        "POST",
        "/api/v1/jobs",
        {"content": b"", "headers": YAML},
        422,
        "at least 1 character",
    ),
    (
        "pipeline not UTF-8",
        "POST",
        "/api/v1/jobs",
        {"content": b"\xff\xfe", "headers": YAML},
        400,
        "UTF-8",
    ),
    (
        "pipeline as a form",
        "POST",
        "/api/v1/jobs",
        {"content": b"a=b", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        415,
        "application/yaml",
    ),
    ("JSON that is no object", "POST", "/api/v1/jobs", {"json": [1, 2]}, 400, "object"),
    ("JSON without the pipeline", "POST", "/api/v1/jobs", {"json": {"x": 1}}, 422, "pipeline_yaml"),
    (
        "JSON with a bad job id",
        "POST",
        "/api/v1/jobs",
        {"json": {"pipeline_yaml": GUEST_ONLY, "job_id": "../x"}},
        422,
        "job_id",
    ),
    (
        "broken JSON",
        "POST",
        "/api/v1/jobs",
        {"content": b"{", "headers": {"Content-Type": "application/json"}},
        400,
        "JSON",
    ),
    (
        "stop reason too long",
        "POST",
        "/api/v1/jobs/x/stop",
        {"json": {"reason": "r" * 2000}},
        422,
        "reason",
    ),
    ("upload without a file", "POST", "/api/v1/tables", {"data": {"name": "t"}}, 422, "file"),
    (
        "upload without a name",
        "POST",
        "/api/v1/tables",
        {"files": {"file": ("t.csv", b"id\n1\n")}},
        422,
        "name",
    ),
    (
        "upload with a bad name",
        "POST",
        "/api/v1/tables",
        csv_upload("../etc", b"id,x\n1,2\n"),
        422,
        "name",
    ),
    ("empty file", "POST", "/api/v1/tables", csv_upload("t", b""), 400, "empty"),
    (
        "binary file",
        "POST",
        "/api/v1/tables",
        csv_upload("t", b"\x89PNG\r\n\x1a\n\x00\x00"),
        400,
        "UTF-8",
    ),
    (
        "CSV without the id column",
        "POST",
        "/api/v1/tables",
        csv_upload("t", b"a,b\n1,2\n"),
        400,
        "no 'id' column",
    ),
    (
        "bad rows",
        "POST",
        "/api/v1/tables",
        csv_upload("t", BAD_ROWS_CSV, label_column="y"),
        400,
        "t.csv:3: not a number",
    ),
    (
        "missing label column",
        "POST",
        "/api/v1/tables",
        csv_upload("t", b"id,x\n1,2\n", label_column="y"),
        400,
        "label",
    ),
    ("unknown table", "GET", "/api/v1/tables/nope", {}, 404, "no table nope"),
    (
        "grant without types",
        "POST",
        "/api/v1/grants",
        {"json": {"table": "t", "grantee": "1", "component_types": []}},
        422,
        "component_types",
    ),
    (
        "grant of an unknown type",
        "POST",
        "/api/v1/grants",
        {"json": {"table": "t", "grantee": "1", "component_types": ["no_such_type"]}},
        400,
        "no_such_type",
    ),
    (
        "grant to a bad party id",
        "POST",
        "/api/v1/grants",
        {"json": {"table": "t", "grantee": "a b", "component_types": ["psi"]}},
        422,
        "grantee",
    ),
    (
        "grant with an unknown field",
        "POST",
        "/api/v1/grants",
        {"json": {"table": "t", "grantee": "1", "component_types": ["psi"], "x": 1}},
        422,
        "x",
    ),
    (
        "grant as text",
        "POST",
        "/api/v1/grants",
        {"content": b"psi", "headers": {"Content-Type": "text/plain"}},
        422,
        "",
    ),
    ("unknown route", "GET", "/api/v1/models", {}, 404, "Not Found"),
    ("wrong method", "DELETE", "/api/v1/jobs", {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize(
    ("what", "method", "path", "kwargs", "status", "reason"),
    BAD_REQUESTS,
    ids=[row[0] for row in BAD_REQUESTS],
)
def test_a_bad_request_gets_a_4xx_with_its_reason(
    party_factory: Callable[..., Party],
    what: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    party = party_factory(worker=False)
    headers = {**party.headers, **kwargs.pop("headers", {})}

    response = party.api.request(method, path, headers=headers, **kwargs)

    assert response.status_code == status, (what, response.text)
    assert reason in response.text, (what, response.text)


def test_a_refused_submission_leaves_no_job_behind(party_factory: Callable[..., Party]) -> None:
    party = party_factory(worker=False)

    refused = party.api.post(
        "/api/v1/jobs?job_id=to-nowhere",
        content=NOT_A_PEER.encode(),
        headers={**party.headers, **YAML},
    )
    job = party.api.get("/api/v1/jobs/to-nowhere", headers=party.headers)

    assert refused.status_code == 409
    assert job.status_code == 404


def test_stopping_a_job_whose_peer_is_gone_is_a_409_naming_it(
    party_factory: Callable[..., Party],
) -> None:
    # Prepare: a job proposed to party 10000 while it was a peer (its outbound topic existed),
    # then the peer removed (nothing takes out.10000 any more).
    party = party_factory(worker=False)
    bus = party.scheduler.bus
    bus.declare("out.10000")
    submitted = party.api.post(
        "/api/v1/jobs?job_id=peer-gone",
        content=NOT_A_PEER.encode(),
        headers={**party.headers, **YAML},
    )
    bus.delete("out.10000")

    # Execute
    stop = party.api.post("/api/v1/jobs/peer-gone/stop", headers=party.headers)
    job = party.api.get("/api/v1/jobs/peer-gone", headers=party.headers)

    # Assert
    assert submitted.status_code == 201, submitted.text
    assert stop.status_code == 409, stop.text
    assert "party 10000 is not a peer of party 9999 any more" in stop.json()["detail"]
    assert job.json()["state"] == submitted.json()["state"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"x": 1}, ["body", "pipeline_yaml"]),
        ({"pipeline_yaml": ""}, ["body", "pipeline_yaml"]),
        ({"pipeline_yaml": GUEST_ONLY, "job_id": "a b"}, ["body", "job_id"]),
    ],
    ids=["missing", "empty", "bad job id"],
)
def test_a_422_on_submit_lists_its_problems_as_the_openapi_document_says(
    party_factory: Callable[..., Party], body: dict[str, Any], loc: list[str]
) -> None:
    party = party_factory(worker=False)

    response = party.api.post("/api/v1/jobs", json=body, headers=party.headers)

    assert response.status_code == 422
    problems = response.json()["detail"]
    assert loc in [p["loc"] for p in problems]
    assert all(isinstance(p["msg"], str) and isinstance(p["type"], str) for p in problems)


def test_an_existing_table_is_a_conflict_unless_replaced(
    party_factory: Callable[..., Party],
) -> None:
    party = party_factory(worker=False)
    first = csv_upload("t", b"id,x\n1,2\n")
    party.api.post("/api/v1/tables", headers=party.headers, **first)

    again = party.api.post(
        "/api/v1/tables", headers=party.headers, **csv_upload("t", b"id,x\n1,3\n")
    )
    replaced = party.api.post(
        "/api/v1/tables",
        headers=party.headers,
        **csv_upload("t", b"id,x\n1,3\n2,4\n", replace="true"),
    )

    assert again.status_code == 409
    assert "exists" in again.json()["detail"]
    assert replaced.status_code == 201
    assert replaced.json()["rows"] == 2


def test_bad_rows_are_all_reported_with_their_lines(party_factory: Callable[..., Party]) -> None:
    party = party_factory(worker=False)

    response = party.api.post(
        "/api/v1/tables",
        headers=party.headers,
        **csv_upload("t", BAD_ROWS_CSV, label_column="y"),
    )

    detail = response.json()["detail"]
    assert response.status_code == 400
    assert detail.startswith("3 bad row(s)")
    assert "t.csv:3: not a number" in detail
    assert "t.csv:4: 2 fields, the header has 3" in detail
    assert "t.csv:5: missing label" in detail
    assert party.api.get("/api/v1/tables/t", headers=party.headers).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "basic", "empty"],
)
def test_without_the_right_token_every_route_is_401_and_no_command_is_sent(
    party_factory: Callable[..., Party], headers: dict[str, str]
) -> None:
    party = party_factory(worker=False)
    routes = [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/x"),
        ("POST", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs/x/stop"),
        ("GET", "/api/v1/tables"),
        ("POST", "/api/v1/tables"),
        ("POST", "/api/v1/grants"),
        ("GET", "/api/v1/grants"),
    ]

    statuses = [party.api.request(m, p, headers=headers).status_code for m, p in routes]

    assert statuses == [401] * len(routes)
    assert party.scheduler.metrics.rpc_requests._metrics == {}  # no command reached it


def test_a_scheduler_that_does_not_answer_is_503_naming_the_party(
    party_factory: Callable[..., Party],
) -> None:
    party = party_factory(worker=False)
    party.api.app.state.api._timeout = 0.5  # type: ignore[attr-defined]
    party.scheduler.stop()

    response = party.api.get("/api/v1/jobs", headers=party.headers)

    assert response.status_code == 503
    assert "scheduler of party 9999 did not answer" in response.json()["detail"]


def test_the_openapi_document_describes_every_route_and_the_bearer_scheme(
    party_factory: Callable[..., Party],
) -> None:
    party = party_factory(worker=False)

    doc = party.api.get("/api/v1/openapi.json").json()
    docs_page = party.api.get("/api/v1/docs")

    paths = set(doc["paths"])
    assert {
        "/api/v1/tables",
        "/api/v1/tables/{name}",
        "/api/v1/grants",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/stop",
        "/api/v1/jobs/{job_id}/rerun",
        "/api/v1/jobs/{job_id}/tasks",
        "/api/v1/jobs/{job_id}/metrics",
        "/api/v1/jobs/{job_id}/logs",
    } <= paths
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "application/yaml" in doc["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert docs_page.status_code == 200


INT32_MAX = 2**31 - 1


def request_integers(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every integer a client can send (parameters and request bodies, $refs followed), with
    where it is: ("POST /api/v1/replay/finished body.attempt", its schema)."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any, where: str, seen: frozenset[str]) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where, seen)
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            name = ref.rsplit("/", 1)[1]
            walk(doc["components"]["schemas"][name], where, seen | {ref})
        if node.get("type") == "integer":
            found.append((where, node))
        for key, value in node.get("properties", {}).items():
            walk(value, f"{where}.{key}", seen)
        for key in ("anyOf", "oneOf", "allOf", "items"):
            if key in node:
                walk(node[key], where, seen)

    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                walk(parameter["schema"], f"{label} {parameter['name']}", frozenset())
            for media in operation.get("requestBody", {}).get("content", {}).values():
                walk(media.get("schema", {}), f"{label} body", frozenset())
    return found


def test_every_integer_a_client_sends_is_bounded_to_a_32_bit_column(
    party_factory: Callable[..., Party],
) -> None:
    # A value past what the scheduler's INTEGER columns hold used to reach PostgreSQL and come
    # back as a 500 (DataError): each integer is refused at the API instead, as a 422.
    party = party_factory(worker=False)
    doc = party.api.get("/api/v1/openapi.json").json()

    integers = request_integers(doc)
    unbounded = [
        where
        for where, schema in integers
        if "minimum" not in schema or schema.get("maximum", INT32_MAX + 1) > INT32_MAX
    ]
    beyond = party.api.get(f"/api/v1/jobs/x/tasks?attempt={INT32_MAX + 1}", headers=party.headers)

    assert {where for where, _ in integers} >= {
        "GET /api/v1/jobs limit",
        "GET /api/v1/jobs/{job_id}/tasks attempt",
        "POST /api/v1/replay/finished body.attempt",
    }
    assert unbounded == []
    assert beyond.status_code == 422


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    segment=st.text(min_size=1, max_size=40).filter(lambda s: s not in (".", "..")),
    query=st.text(max_size=20),
    route=st.sampled_from(
        [
            ("GET", "/api/v1/jobs/{}"),
            ("GET", "/api/v1/jobs/{}/tasks?attempt={}"),
            ("GET", "/api/v1/jobs/{}/metrics?component={}"),
            ("POST", "/api/v1/jobs/{}/stop"),
            ("POST", "/api/v1/jobs/{}/rerun"),
            ("GET", "/api/v1/tables/{}"),
            ("GET", "/api/v1/jobs?state={}&limit={}"),
            ("GET", "/api/v1/grants?table={}&grantee={}"),
        ]
    ),
)
def test_random_path_and_query_values_never_get_a_5xx(
    fuzz_party: Party, segment: str, query: str, route: tuple[str, str]
) -> None:
    from urllib.parse import quote

    method, template = route
    path = template.format(quote(segment, safe=""), quote(query, safe=""))

    response = fuzz_party.api.request(method, path, headers=fuzz_party.headers)

    # Valid values (e.g. a grants query for table "0") are answered; nothing is a 5xx, and
    # every refusal says why.
    assert response.status_code < 500, (path, response.status_code, response.text)
    if response.status_code >= 400:
        assert response.json().get("detail"), response.text


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.binary(max_size=300))
def test_random_upload_bytes_are_refused_or_stored_never_a_5xx(
    fuzz_party: Party, body: bytes
) -> None:
    response = fuzz_party.api.post(
        "/api/v1/tables", headers=fuzz_party.headers, **csv_upload("fuzz", body, replace="true")
    )

    assert response.status_code in (201, 400), (body, response.text)


def test_placeholder_or_short_tokens_are_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="api_tokens"):
        GatewaySettings(environment="production")  # the placeholder default
    with pytest.raises(ValidationError, match="api_tokens"):
        GatewaySettings(environment="production", api_tokens=[SecretStr("short")])
    real = GatewaySettings(environment="production", api_tokens=[SecretStr("x" * 32)])
    assert real.api_tokens[0].get_secret_value() == "x" * 32
    assert "x" * 32 not in repr(real)
    assert GatewaySettings().api_tokens[0].get_secret_value() == "changethis"  # development


def test_tokens_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FEDMQ_GATEWAY_API_TOKENS", '["first-token-0123456789", "second-token-0123456789"]'
    )

    loaded = GatewaySettings(environment="production")

    assert [t.get_secret_value() for t in loaded.api_tokens] == [
        "first-token-0123456789",
        "second-token-0123456789",
    ]
