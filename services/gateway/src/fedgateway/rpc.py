"""Cross-site request/reply through both gateways: correlated calls with a deadline.

Path of one call from a service at party A to `service` at party B (docs/gateway.md):

    caller --Bus.request(svc.gateway.rpc)--> gateway A --REQUEST--> gateway B
        --Bus.arequest(service)--> responder --reply--> gateway B --REPLY--> gateway A
        --Bus.reply--> caller

`RpcCaller` (gateway A) consumes svc.gateway.rpc: it checks the request is this party's and
bound for a configured peer, signs it, sends it on the peer's link connection (opening it if
needed, within the deadline) and, when the REPLY comes, verifies the reply exactly as a relayed
message (signature, source, destination, clock window, finished jobs) plus that it answers this
request, and hands it to the caller. `RpcResponder` (gateway B) verifies each REQUEST the same
way, checks that `rpc_services` exposes the service to the calling party, asks the local service
with `Bus.arequest` until the deadline, checks and signs the answer and sends it back, all
on the link loop (no thread per call on either side).

Deadlines: the envelope's deadline (set by the caller, covered by the signature) is checked on
arrival at each gateway and again before anything is handed on; what is late is dropped, logged
(`rpc_expired`) and counted (`fedmq_gateway_rpc_expired_total{side, message}`), never delivered.
The deadline also bounds replays of a captured request: past it the request is worthless, and
it can be replayed only by its own party anyway (the link authenticates the source). A request
whose deadline lies further ahead than `rpc_max_timeout_s` is refused, so that bound holds.

Requests are at most once: nothing is retried or resent after a link failure (the caller sees
a timeout or an `unavailable` error and decides). Errors found by a gateway travel back as an
rpc.reply with ok=False from the party that found them: `refused` (verification,
authorization), `unavailable` (link down, no local responder), never a late answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog
from fedbus import Bus, BusError, Delivery, Reject, RequestTimeout, Subscription
from fedbus.remote import error_reply, reply_envelope
from fedschemas import (
    Envelope,
    MalformedMessage,
    PartyRef,
    decode_envelope,
    decode_payload,
    encode_envelope,
    topics,
)
from fedschemas.payloads import RemoteReply, RemoteRequest
from prometheus_client import Histogram

from fedgateway.framing import FrameType, ReplyOutcome, decode_request, encode_reply_prefix
from fedgateway.link import ClientConnection, FrameSender, LinkDown, PeerLink
from fedgateway.metrics import RTT_BUCKETS, GatewayMetrics
from fedgateway.relay import Signer, sign_envelope
from fedgateway.verify import Refused, Verifier

log = structlog.get_logger("fedgateway.rpc")

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _remaining(deadline: dt.datetime, now: dt.datetime) -> float:
    return (deadline - now).total_seconds()


class RpcCaller:
    """Gateway side of this party's outgoing calls: svc.gateway.rpc -> link -> caller."""

    def __init__(
        self,
        bus: Bus,
        links: Mapping[str, PeerLink],
        *,
        party_id: str,
        signer: Callable[[], Signer],
        verifier: Callable[[], Verifier],
        metrics: GatewayMetrics,
        executor: ThreadPoolExecutor,
        max_envelope_bytes: int,
        topic: str = topics.GATEWAY_RPC,
        prefetch: int = 256,
        clock: Clock = _utc_now,
    ) -> None:
        self._bus = bus
        self._links = dict(links)
        self._party_id = party_id
        self._signer = signer
        self._verifier = verifier
        self._metrics = metrics
        self._executor = executor
        self._max_envelope_bytes = max_envelope_bytes
        self._topic = topic
        self._prefetch = prefetch
        self._clock = clock
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self._bus.declare(self._topic)
        # Each handler run only signs and writes a frame (or hands a reconnect to the pool):
        # the consumer is not held for the round trip, so many calls are in flight at once.
        self._subscription = self._bus.subscribe(
            self._topic, self._on_request, prefetch=self._prefetch, max_deliveries=1
        )
        log.info("rpc_consuming", topic=self._topic)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    # bus consumer thread ------------------------------------------------------------------

    def _on_request(self, delivery: Delivery) -> None:
        started = time.perf_counter()
        try:
            request = decode_envelope(delivery.body, max_bytes=self._max_envelope_bytes)
        except MalformedMessage as exc:
            raise Reject(f"malformed envelope: {exc.reason}") from None
        if delivery.reply_to is None:
            raise Reject("an rpc.request needs a reply address (send it with Bus.request)")
        peer = request.destination.party_id
        problem = self._local_problem(request)
        if problem is not None:
            self._answer_error(delivery, request, peer, "refused", problem)
            return
        assert request.deadline is not None
        remaining = _remaining(request.deadline, self._clock())
        if remaining <= 0:
            self._expired(request, peer, "request")
            return
        body = sign_envelope(request, self._signer())
        conn = self._links[peer].usable_connection()
        if conn is None or not conn.supports_rpc:
            # Not connected (or an old peer): connect within the deadline, or answer
            # "unavailable", off the consumer thread.
            self._executor.submit(self._connect_and_send, delivery, request, body, started)
            return
        self._send(conn, delivery, request, body, remaining, started)

    def _local_problem(self, request: Envelope) -> str | None:
        if request.type != "rpc.request":
            return f"{request.type} is not an rpc.request"
        if request.source.party_id != self._party_id:
            return f"source party {request.source.party_id} is not this party ({self._party_id})"
        if request.destination.party_id not in self._links:
            return f"party {request.destination.party_id} is not a configured peer"
        if request.deadline is None:
            return "an rpc.request needs a deadline"
        return None

    # sending ------------------------------------------------------------------------------

    def _connect_and_send(
        self, delivery: Delivery, request: Envelope, body: bytes, started: float
    ) -> None:
        assert request.deadline is not None
        peer = request.destination.party_id
        conn = self._links[peer].connection_now(_remaining(request.deadline, self._clock()))
        remaining = _remaining(request.deadline, self._clock())
        if conn is None or not conn.supports_rpc:
            why = "link down" if conn is None else "its gateway does not support request/reply"
            self._answer_error(
                delivery, request, peer, "unavailable", f"party {peer} unreachable ({why})"
            )
            return
        if remaining <= 0:
            self._expired(request, peer, "request")
            return
        self._send(conn, delivery, request, body, remaining, started)

    def _send(
        self,
        conn: ClientConnection,
        delivery: Delivery,
        request: Envelope,
        body: bytes,
        remaining: float,
        started: float,
    ) -> None:
        peer = request.destination.party_id
        try:
            future = conn.submit_request(body, remaining)
        except LinkDown:
            self._executor.submit(self._connect_and_send, delivery, request, body, started)
            return
        # Handled where the REPLY settles it (the link loop): verifying it and handing it to
        # the bus (which does not wait for the publish) is a few hundred microseconds, less
        # than the pool thread's wake-up it replaced (issue #15).
        future.add_done_callback(lambda f: self._on_reply(f, delivery, request, started))
        log.debug("rpc_sent", peer=peer, request_id=request.message_id)

    # reply (link loop thread, or the sending thread if the future was settled already) --

    def _on_reply(
        self,
        future: concurrent.futures.Future[tuple[ReplyOutcome, bytes]],
        delivery: Delivery,
        request: Envelope,
        started: float,
    ) -> None:
        peer = request.destination.party_id
        try:
            outcome, body = future.result()
        except TimeoutError:
            self._expired(request, peer, "reply")
            return
        except LinkDown as exc:
            self._answer_error(
                delivery, request, peer, "unavailable", f"link to party {peer} lost: {exc}"
            )
            return
        if outcome is not ReplyOutcome.OK:
            kind = "refused" if outcome is ReplyOutcome.REFUSED else "unavailable"
            reason = body.decode(errors="replace")
            self._answer_error(delivery, request, peer, kind, f"party {peer}: {reason}")
            return
        try:
            reply = self._verifier().check_signed(body, message_id=None, peer_party=peer)
            problem = _reply_problem(reply, request)
        except Refused as exc:
            problem = f"{exc.reason}: {exc.detail}"
            self._metrics.refused.labels(exc.reason).inc()
        if problem is not None:
            log.warning("rpc_reply_refused", peer=peer, request_id=request.message_id, why=problem)
            self._answer_error(delivery, request, peer, "refused", f"bad reply: {problem}")
            return
        assert request.deadline is not None
        if self._clock() > request.deadline:
            self._expired(request, peer, "reply")
            return
        self._deliver(delivery, body)
        self._metrics.rpc_calls.labels("caller", peer, "ok").inc()
        self._metrics.rpc_seconds.labels(peer).observe(time.perf_counter() - started)

    def _deliver(self, delivery: Delivery, body: bytes) -> None:
        try:
            self._bus.reply(delivery, body)
        except (BusError, ValueError) as exc:  # the caller is gone or the broker is down
            log.warning("rpc_reply_undeliverable", error=f"{type(exc).__name__}: {exc}")

    def _answer_error(
        self, delivery: Delivery, request: Envelope, peer: str, kind: str, error: str
    ) -> None:
        self._metrics.rpc_calls.labels("caller", peer, kind).inc()
        log.warning("rpc_failed", peer=peer, request_id=request.message_id, kind=kind, error=error)
        if request.deadline is not None and self._clock() > request.deadline:
            self._expired(request, peer, "reply", counted=True)
            return
        reply = reply_envelope(
            request,
            error_reply(request, kind, error),
            source=PartyRef(party_id=self._party_id, role=request.source.role),
            created_at=self._clock(),
        )
        self._deliver(delivery, encode_envelope(reply))

    def _expired(
        self, request: Envelope, peer: str, message: str, *, counted: bool = False
    ) -> None:
        self._metrics.rpc_expired.labels("caller", message).inc()
        if not counted:
            self._metrics.rpc_calls.labels("caller", peer, "expired").inc()
        log.info(
            "rpc_expired", side="caller", message=message, peer=peer, request_id=request.message_id
        )


def _reply_problem(reply: Envelope, request: Envelope) -> str | None:
    if reply.type != "rpc.reply":
        return f"{reply.type} is not an rpc.reply"
    if reply.destination.party_id != request.source.party_id:
        return f"addressed to party {reply.destination.party_id}"
    try:
        payload = decode_payload(reply, RemoteReply)
    except MalformedMessage as exc:
        return exc.reason
    if payload.request_id != request.message_id:
        return "answers another request"
    return None


class RpcResponder:
    """Gateway side of calls from peers: REQUEST -> checks -> local service -> REPLY."""

    def __init__(
        self,
        bus: Bus,
        *,
        party_id: str,
        services: Mapping[str, frozenset[str]],
        signer: Callable[[], Signer],
        verifier: Callable[[], Verifier],
        metrics: GatewayMetrics,
        max_timeout_s: float,
        clock: Clock = _utc_now,
    ) -> None:
        self._bus = bus
        self._party_id = party_id
        self._services = dict(services)
        self._signer = signer
        self._verifier = verifier
        self._metrics = metrics
        self._max_timeout = dt.timedelta(seconds=max_timeout_s)
        self._clock = clock
        # Beside the caller side's fedmq_gateway_rpc_seconds: together they split a call's
        # time between the two gateways (bench/serving's per-hop breakdown).
        self._serve_seconds = Histogram(
            "fedmq_gateway_rpc_serve_seconds",
            "Responder side: from a REQUEST frame's arrival to its answered REPLY frame.",
            ["peer"],
            buckets=RTT_BUCKETS,
            registry=metrics.registry,
        )
        self._serving: set[asyncio.Task[None]] = set()  # requests being served, kept till done

    def on_request(self, peer_party: str, sender: FrameSender, body: bytes) -> None:
        """Link loop thread: serve the request on the link loop, without blocking it. Checks
        and the signature are a few hundred microseconds; the local service's answer is
        awaited (`Bus.arequest`), so the request crosses no thread of its own: the link loop
        to the bus's loop and back, where a pool thread cost two more hand-offs (issue #15)."""
        task = asyncio.get_running_loop().create_task(
            self._serve(peer_party, sender, body, time.perf_counter())
        )
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(
        self, peer: str, sender: FrameSender, frame_body: bytes, arrived: float
    ) -> None:
        try:
            rid, body = decode_request(frame_body)
        except Exception as exc:  # a broken frame: the connection's problem, not one request
            log.warning("link_protocol_error", peer_party=peer, error=str(exc))
            sender.close()
            return
        try:
            request, service = self._check(peer, body)
        except Refused as exc:
            self._metrics.refused.labels(exc.reason).inc()
            self._metrics.rpc_calls.labels("responder", peer, "refused").inc()
            log.warning("message_refused", reason=exc.reason, detail=exc.detail, peer_party=peer)
            self._reply(sender, rid, ReplyOutcome.REFUSED, exc.reason.encode())
            return
        assert request.deadline is not None
        remaining = _remaining(request.deadline, self._clock())
        if remaining <= 0:
            self._expired(request, peer, "request")
            return
        try:
            answer = await self._bus.arequest(service, body, timeout=remaining)
        except RequestTimeout:
            self._expired(request, peer, "reply")
            return
        except BusError as exc:  # nobody consumes the service topic (unroutable), broker down
            self._metrics.rpc_calls.labels("responder", peer, "unavailable").inc()
            log.warning("rpc_unavailable", peer_party=peer, service=service, error=str(exc))
            self._reply(sender, rid, ReplyOutcome.FAILED, f"{service} unavailable".encode())
            return
        reply, problem = self._answer(answer, request)
        if reply is None or problem is not None:
            self._metrics.rpc_calls.labels("responder", peer, "failed").inc()
            log.warning("rpc_bad_answer", peer_party=peer, service=service, why=problem)
            self._reply(sender, rid, ReplyOutcome.FAILED, f"{service} answered badly".encode())
            return
        if self._clock() > request.deadline:
            self._expired(request, peer, "reply")
            return
        self._reply(sender, rid, ReplyOutcome.OK, sign_envelope(reply, self._signer()))
        self._metrics.rpc_calls.labels("responder", peer, "ok").inc()
        self._serve_seconds.labels(peer).observe(time.perf_counter() - arrived)

    def _check(self, peer: str, body: bytes) -> tuple[Envelope, str]:
        """The verified request and the service it calls, or Refused."""
        request = self._verifier().check_signed(body, message_id=None, peer_party=peer)
        if request.type != "rpc.request":
            raise Refused("wrong_type", f"{request.type} in a REQUEST frame")
        if request.deadline is None:
            raise Refused("missing_deadline", "an rpc.request must carry a deadline")
        if request.deadline - self._clock() > self._max_timeout:
            raise Refused(
                "deadline_too_far",
                f"deadline more than {self._max_timeout.total_seconds():.0f} s ahead",
            )
        try:
            service = decode_payload(request, RemoteRequest).service
        except MalformedMessage as exc:
            raise Refused("malformed", exc.reason) from None
        allowed = self._services.get(service)
        if allowed is None or not ("*" in allowed or peer in allowed):
            raise Refused("not_exposed", f"service {service} is not exposed to party {peer}")
        return request, service

    def _answer(self, answer: Delivery, request: Envelope) -> tuple[Envelope | None, str | None]:
        """The service's reply envelope and what is wrong with it (None: nothing)."""
        try:
            reply = decode_envelope(answer.body)
        except MalformedMessage as exc:
            return None, exc.reason
        if reply.source.party_id != self._party_id:
            return reply, f"source party {reply.source.party_id} is not this party"
        return reply, _reply_problem(reply, request)

    def _reply(self, sender: FrameSender, rid: int, outcome: ReplyOutcome, body: bytes) -> None:
        sender.send(FrameType.REPLY, encode_reply_prefix(rid, outcome), body)

    def _expired(self, request: Envelope, peer: str, message: str) -> None:
        self._metrics.rpc_expired.labels("responder", message).inc()
        self._metrics.rpc_calls.labels("responder", peer, "expired").inc()
        log.info(
            "rpc_expired",
            side="responder",
            message=message,
            peer=peer,
            request_id=request.message_id,
        )
