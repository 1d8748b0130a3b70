"""The serving side of a party's commands: what the scheduler's and the data service's servers
share (fedscheduler.rpc.RpcServer, fedworker.data.DataServer).

Both answer request envelopes on one topic, one at a time, through direct reply-to: a command
without reply_to, a malformed one, one from another party and an answer too large for one
frame are refused the same way; only running the command differs (`CommandServer.answer`).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from fedbus import Bus, Delivery, Reject, Subscription
from fedcommon.tracing import span_from_remote
from fedschemas import MalformedMessage, decode_envelope, decode_payload
from fedschemas.payloads import DataRequest, DataResponse, SchedulerRequest, SchedulerResponse
from opentelemetry.trace import Span, SpanKind, Tracer

from fedcontrol.client import command_envelope

RequestT = TypeVar("RequestT", SchedulerRequest, DataRequest)
ResponseT = TypeVar("ResponseT", SchedulerResponse, DataResponse)


class CommandServer(Generic[RequestT, ResponseT]):
    """Answers `request_type` envelopes on `topic` with `response_type` ones.

    Subclasses set the class attributes (their log event names stay their own) and implement
    `answer`; `counted` is called once per answered command."""

    started_event = "rpc_started"
    no_reply_to_event = "rpc_without_reply_to"
    malformed_event = "rpc_malformed"
    too_large_event = "rpc_reply_too_large"

    def __init__(
        self,
        bus: Bus,
        topic: str,
        party_id: str,
        request_type: type[RequestT],
        response_type: type[ResponseT],
        *,
        log: Any,
        tracer: Tracer,
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._party_id = party_id
        self._request_type: type[RequestT] = request_type
        self._response_type: type[ResponseT] = response_type
        self._log = log
        self._tracer = tracer
        self._subscription: Subscription | None = None

    def answer(self, request: RequestT, span: Span) -> ResponseT:
        """Run one command from this party; every failure becomes a response, never a raise."""
        raise NotImplementedError

    def counted(self, request: RequestT, response: ResponseT) -> None:
        """Called with every command answered (after `answer` or a refusal of it)."""

    def start(self) -> None:
        self._bus.declare(self._topic)
        # One delivery only: a command is answered once; a crash mid-command leaves the
        # requester to time out and retry (commands are idempotent by their keys).
        self._subscription = self._bus.subscribe(
            self._topic, self._handle, prefetch=1, max_deliveries=1
        )
        self._log.info(self.started_event, topic=self._topic)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def _refusal(self, op: str, error: str) -> ResponseT:
        return self._response_type.model_validate(
            {"op": op, "ok": False, "error": error, "error_kind": "invalid"}
        )

    def _handle(self, delivery: Delivery) -> None:
        if delivery.reply_to is None:
            self._log.warning(self.no_reply_to_event, message_id=delivery.message_id)
            raise Reject("a command without reply_to: nobody to answer")
        try:
            envelope = decode_envelope(delivery.body)
            request = decode_payload(envelope, self._request_type)
        except MalformedMessage as exc:
            self._log.warning(self.malformed_event, reason=exc.reason)
            # Dead-lettered with the reason; the bus answers the requester with it.
            raise Reject(f"malformed command: {exc.reason}") from exc
        # The command's span is a child of the caller's (the REST call): everything the command
        # sends -- proposals to other parties, task.run to workers -- carries this trace on.
        with span_from_remote(
            self._tracer, f"rpc {request.op}", envelope.traceparent, kind=SpanKind.SERVER
        ) as span:
            span.set_attribute("rpc.system", "fedmq")
            span.set_attribute("rpc.method", request.op)
            if envelope.source.party_id != self._party_id:
                response = self._refusal(
                    request.op, f"commands come from this party ({self._party_id}) only"
                )
            else:
                response = self.answer(request, span)
            if response.error_kind:
                span.set_attribute("fedmq.error_kind", response.error_kind)
            body = command_envelope(response, self._party_id, request.op)
        self.counted(request, response)
        if len(body) > self._bus.capabilities.max_frame_bytes:
            # Replies cannot be chunked (direct reply-to): say so instead of never answering.
            self._log.warning(self.too_large_event, op=request.op, size=len(body))
            response = self._refusal(
                request.op, f"the answer is too large ({len(body)} bytes): ask for less"
            )
            body = command_envelope(response, self._party_id, request.op)
        self._bus.reply(delivery, body)
