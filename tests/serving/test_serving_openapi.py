"""The per-service OpenAPI document (GET /api/v1/serving/openapi.json): a valid OpenAPI 3.1
document whose request schemas accept a service's own features and refuse anything else. The
stack test fetches it through the REST API."""

from __future__ import annotations

from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from fedgateway.api.serving_openapi import serving_openapi

# The official OpenAPI 3.1 meta-schema, as schemathesis ships it (loading a document through
# schemathesis itself costs seconds; this validator, milliseconds).
from schemathesis.specs.openapi.definitions import OPENAPI_31

SERVICES = [
    {"service_id": "risk", "model_name": "credit", "version": 1, "feature_names": ["x0", "x1"]},
    {
        "service_id": "churn.v2",
        "model_name": "churn",
        "version": 3,
        "canary_version": 4,
        "feature_names": ["age"],
    },
]


def request_validator(doc: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{component}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


def test_the_document_is_valid_openapi_with_two_paths_per_service() -> None:
    doc = serving_openapi("9999", SERVICES)

    jsonschema_rs.validator_for(OPENAPI_31).validate(doc)  # raises on an invalid document

    assert sorted(doc["paths"]) == [
        "/api/v1/serving/churn.v2/predict",
        "/api/v1/serving/churn.v2/predict/batch",
        "/api/v1/serving/risk/predict",
        "/api/v1/serving/risk/predict/batch",
    ]
    assert "canary version 4" in doc["paths"]["/api/v1/serving/churn.v2/predict"]["post"]["summary"]
    assert serving_openapi("9999", [])["paths"] == {}


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"id": "1", "features": {"x0": 0.5, "x1": None}}, True),
        ({"id": "1", "features": {"x0": 0.5, "x1": 2}, "timeout_s": 0.3}, True),
        ({"id": "1", "features": {"x0": 0.5}}, False),  # a feature missing
        ({"id": "1", "features": {"x0": 0.5, "x1": 1, "age": 3}}, False),  # another service's
        ({"id": "1", "features": {"x0": "high", "x1": 1}}, False),  # not a number
        ({"features": {"x0": 0.5, "x1": 1}}, False),  # no id
    ],
)
def test_a_services_request_schema_names_exactly_its_features(
    body: dict[str, Any], valid: bool
) -> None:
    validator = request_validator(serving_openapi("9999", SERVICES), "risk.PredictRequest")

    assert validator.is_valid(body) is valid


def test_a_batch_schema_checks_every_row() -> None:
    validator = request_validator(serving_openapi("9999", SERVICES), "churn.v2.BatchRequest")

    assert validator.is_valid({"rows": [{"id": "a", "features": {"age": 40}}]})
    assert not validator.is_valid({"rows": [{"id": "a", "features": {"age": 40, "x0": 1}}]})
    assert not validator.is_valid({"rows": []})
