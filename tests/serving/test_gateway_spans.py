"""The gateway's REST API exports one span per request: FastAPI's own telemetry (a second
SERVER span, and dependencies, endpoint and serialization spans) only when asked for
(`api_fastapi_telemetry`), since five spans per prediction cost the serving path's CPU
(issue #15).

OpenTelemetry lets a process set its tracer provider once, so the app runs in a process of its
own with a provider that keeps the spans in memory, as a gateway's main.py sets one up."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from fedgateway.api.app import create_app
from fedgateway.metrics import GatewayMetrics

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)


class Gateway:
    metrics = GatewayMetrics()

    def health(self):
        return {"status": "ok"}

    def finish_attempt(self, job_id, attempt):
        pass


spans = {}
for fastapi_telemetry in (False, True):
    with TestClient(create_app(Gateway(), fastapi_telemetry=fastapi_telemetry)) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
    spans[str(fastapi_telemetry)] = [s.name for s in exporter.get_finished_spans()]
    exporter.clear()
print(json.dumps(spans))
"""


def test_a_request_exports_one_span_unless_fastapi_telemetry_is_asked_for() -> None:
    # Prepare / Execute: three requests to an app without and one with FastAPI's telemetry
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spans = json.loads(done.stdout.strip().splitlines()[-1])

    # Assert: by default, fedmq's own span per request and nothing else
    assert spans["False"] == ["GET /healthz"] * 3
    # asked for, FastAPI's spans come back beside it
    assert spans["True"].count("GET /healthz") >= 3
    assert len(spans["True"]) > 3
