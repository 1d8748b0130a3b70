"""An in-process OTLP/HTTP (protobuf) trace receiver: what a party's collector would get.

Services export to `http://127.0.0.1:<port>/<party>/v1/traces` (the launcher puts the party
into `{party}`); the receiver keeps every span in memory with the party named in that path
(`collector`). Used by tests/e2e/test_cross_party_trace.py and bench/jobs/trace_empty.py.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue


@dataclass(frozen=True)
class ReceivedSpan:
    collector: str
    """The party whose collector got it (from the export URL)."""
    party: str
    """fedmq.party_id of the resource: the process that made the span."""
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    """The parent's span id, "" for a root span."""
    start_ns: int
    end_ns: int
    attrs: dict[str, str]


def _values(attributes: Iterable[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = str(getattr(kv.value, kind)) if kind else ""
    return out


class OtlpReceiver:
    """Serves from construction until close() (or the end of a `with` block)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if len(parts) != 3 or parts[1:] != ["v1", "traces"]:
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.file(parts[0], request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def file(self, collector: str, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = _values(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            collector=collector,
                            party=resource.get("fedmq.party_id", ""),
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attrs=_values(span.attributes),
                        )
                    )
        with self.lock:
            self.spans.extend(received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
