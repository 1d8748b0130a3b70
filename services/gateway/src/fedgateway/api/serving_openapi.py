"""The OpenAPI document of a party's bound serving services (GET /api/v1/serving/openapi.json).

The main document (/api/v1/openapi.json) describes `POST /serving/{service_id}/predict` once,
with `features` as any object of numbers: it cannot know the feature names, which depend on the
model version a service id is bound to and change with a switch. This document is built per
request from the serving service's bindings: one `predict` and one `predict/batch` path per
bound service id, whose request schemas list that service's features by name (required, numbers
or null, nothing else), so that a client generator or a validator gets each service's exact
request shape. It is behind the API's token like the routes it describes, since service ids and
feature names are the party's own business.

Pure: the bindings in, a JSON-able dict out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

OPENAPI_VERSION: Final = "3.1.0"
PREFIX: Final = "/api/v1/serving"
MAX_BATCH_ROWS: Final = 10_000


def features_schema(names: Sequence[str]) -> dict[str, Any]:
    """JSON schema of a service's `features` object: every name required, a number or null
    (missing), no other name."""
    return {
        "type": "object",
        "required": list(names),
        "additionalProperties": False,
        "properties": {n: {"type": ["number", "null"]} for n in names},
    }


def row_schema(features_ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "features"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 256},
            "features": {"$ref": features_ref},
        },
    }


_TIMEOUT = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 30}


def _component(service_id: str) -> str:
    """A component name for the service (OpenAPI allows ^[a-zA-Z0-9._-]+$)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", service_id)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_REFUSALS: Final = {
    "401": _error("no token, or a wrong one"),
    "404": _error("the service is being unbound, or a host has no features for an id"),
    "422": {
        "description": "a feature missing, unknown or not a number (names the row and feature)",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ValidationError"}}
        },
    },
    "429": _error("the caller's rate limit, or a host's"),
    "503": _error("a host did not answer within the deadline (named), or serving is down"),
}


def serving_openapi(party_id: str, services: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The document for `services` (the serving service's service views: service_id,
    model_name, version, canary_version, feature_names)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["detail"],
            "properties": {"detail": {"type": "string"}},
        },
        "ValidationError": {
            "type": "object",
            "required": ["detail"],
            "properties": {"detail": {"type": "array", "items": {"type": "object"}}},
        },
        "Score": {
            "type": "object",
            "required": ["id", "score", "version"],
            "properties": {
                "id": {"type": "string"},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "version": {"type": "integer"},
            },
        },
    }
    for service in sorted(services, key=lambda s: str(s["service_id"])):
        sid = str(service["service_id"])
        name = _component(sid)
        names = [str(n) for n in service["feature_names"]]
        features_ref = f"#/components/schemas/{name}.Features"
        schemas[f"{name}.Features"] = {
            **features_schema(names),
            "description": f"the guest's features of service {sid} (model "
            f"{service['model_name']} version {service['version']})",
        }
        schemas[f"{name}.Row"] = row_schema(features_ref)
        one = row_schema(features_ref)
        one["properties"]["timeout_s"] = _TIMEOUT
        schemas[f"{name}.PredictRequest"] = one
        schemas[f"{name}.BatchRequest"] = {
            "type": "object",
            "required": ["rows"],
            "additionalProperties": False,
            "properties": {
                "rows": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH_ROWS,
                    "items": {"$ref": f"#/components/schemas/{name}.Row"},
                },
                "timeout_s": _TIMEOUT,
            },
        }
        versions = f"version {service['version']}"
        if service.get("canary_version") is not None:
            versions += f", canary version {service['canary_version']}"
        paths[f"{PREFIX}/{sid}/predict"] = {
            "post": {
                "operationId": f"predict_{name}",
                "summary": f"Score one row with service {sid} ({versions})",
                "tags": ["serving"],
                "requestBody": _body(f"#/components/schemas/{name}.PredictRequest"),
                "responses": {
                    "200": _json(
                        "the row's score",
                        {
                            "allOf": [
                                {"$ref": "#/components/schemas/Score"},
                                {
                                    "type": "object",
                                    "properties": {
                                        "model": {"type": "string"},
                                        "fallback": {"type": "boolean"},
                                    },
                                },
                            ]
                        },
                    ),
                    **_REFUSALS,
                },
            }
        }
        paths[f"{PREFIX}/{sid}/predict/batch"] = {
            "post": {
                "operationId": f"predict_batch_{name}",
                "summary": f"Score up to {MAX_BATCH_ROWS} rows with service {sid} ({versions})",
                "tags": ["serving"],
                "requestBody": _body(f"#/components/schemas/{name}.BatchRequest"),
                "responses": {
                    "200": _json(
                        "each row's score, in order",
                        {
                            "type": "object",
                            "properties": {
                                "results": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Score"},
                                },
                                "count": {"type": "integer"},
                                "model": {"type": "string"},
                                "fallback": {"type": "boolean"},
                            },
                        },
                    ),
                    **_REFUSALS,
                },
            }
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"fedmq serving at party {party_id}",
            "version": "1",
            "description": "The party's bound serving services, each with its own feature "
            "names (docs/serving.md). Built from the current bindings: a switch to a version "
            "with other features changes it.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
