"""The site link's transport: mutual TLS between two gateways, frames, pipelined acks.

Security assumptions (docs/gateway.md):
- TLS 1.2 is the floor, 1.3 preferred (OpenSSL negotiates the highest both sides offer); TLS 1.2
  is limited to ECDHE + AEAD suites, so every session has forward secrecy.
- Both sides present certificates (CERT_REQUIRED) and trust exactly one anchor: the federation CA.
- Identity is the party id in the certificate, not a host name: after the handshake the client
  checks the server's certificate names the peer it meant to reach, and the server checks the
  client's certificate names the party its HELLO claims. Host-name checking is therefore off.
- Every refusal (missing certificate, foreign CA, expired, wrong party, protocol breach) is logged
  as a structlog event and counted by the caller's metric.

Round trip: a client whose server announced the "ping" feature sends a PING frame as soon as
it is connected and then every `ping_interval` seconds; the server echoes it as a PONG from its
read loop at once, and the client reports the elapsed time (`on_rtt`). That is the link's own
latency (TLS, TCP, the two loops), apart from the broker confirms the relay's lag includes.

Liveness: a server that announces "keepalive" in HELLO_OK writes a heartbeat (PONG, nonce 0)
every `keepalive_s` to a client that announced it too, from a task of its own, so heartbeats go
out while its read loop waits (backpressure) or reads a long frame. The client drops a
connection on which it heard nothing for `dead_after` seconds (at least three heartbeats): a
cut or blackholed path, or a peer whose process hangs, is noticed within that time although
TCP would not say so for minutes. A client loop that was itself stalled (no CPU) does not count
the stall as the peer's silence. `PeerLink` keeps one such connection open from start-up and
reopens it when it drops, so the link's state (`on_state`) is true: up while a connection is
open and answering, down from the moment it is not.

Log context: link events are logged, and connections are opened, in an empty context
(`_link_log`, `LinkLoop.submit`): a relay thread that happens to (re)open a connection while it
handles some job's message must not lend that job's trace id or job id to the link's events.

Request/reply: a client whose server announced the "rpc" feature may send REQUEST frames on
the same connection as its DATA frames (`ClientConnection.submit_request`); each waits for its
REPLY until its own deadline, after which it fails with TimeoutError and a late REPLY is
ignored. The server hands REQUEST bodies to its handler's `on_request` without waiting.

WAN (docs/wan.md): every link socket is made by this module with the gateway's
`TransportOptions` (BBR, buffers sized to the bandwidth-delay product; transport.py), on the
loop thread, which may live in its own network namespace (`LinkLoop(netns=...)`). A PeerLink
may keep several connections to its peer and stripe large bodies across them (stripe.py);
the server keeps striped chunks per peer party, so they outlive the connection that brought
them.

Threads: all sockets live on one asyncio loop (`LinkLoop`) running on its own thread, so one
TLS object is never used by two threads at once. Relay handler threads talk to it through
`ClientConnection.submit` (thread-safe, returns a concurrent Future resolved by the peer's ACK).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

import structlog
from cryptography import x509
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_random_exponential,
)

from fedgateway import compression
from fedgateway.framing import (
    FEATURE_KEEPALIVE,
    FEATURE_PING,
    FEATURE_RPC,
    FEATURE_STRIPE,
    FEATURE_ZSTD,
    HEADER_SIZE,
    HEARTBEAT_NONCE,
    STRIPE_MISSING,
    DataFrame,
    FrameType,
    Hello,
    ProtocolError,
    ReplyOutcome,
    StripeChunk,
    decode_ack,
    decode_hello,
    decode_ping,
    decode_refused,
    decode_reply,
    decode_stripe,
    decode_stripe_ack,
    encode_data_prefix,
    encode_hello,
    encode_ping,
    encode_refused,
    encode_request_prefix,
    encode_stripe_ack,
    frame_header,
    parse_header,
    stripe_ref_of,
)
from fedgateway.pki import CertificateRefused, PartyIdentity, check_party_certificate
from fedgateway.stripe import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_STALL_AFTER,
    DEFAULT_STREAM_WINDOW,
    StripeStore,
    StripeTransfer,
    TransferStopped,
)
from fedgateway.transport import (
    TcpInfo,
    TransportOptions,
    client_socket,
    enter_netns,
    listening_socket,
    tcp_info,
)

log = structlog.get_logger("fedgateway.link")

T = TypeVar("T")

HANDSHAKE_TIMEOUT = 10.0
HELLO_TIMEOUT = 10.0
MAX_PINGS_IN_FLIGHT = 8
"""Unanswered PINGs remembered per connection (a silent server must not grow the table)."""
HEARTBEATS_BEFORE_DEAD = 3
"""A client waits at least this many of the server's heartbeat intervals before it calls the
connection dead, whatever its own `dead_after` says (a server may beat slower than expected)."""
STALL_GRACE = 0.5
"""After the client's own loop was stalled, it listens this long before judging the peer."""
MAX_STRIPED_TRANSFERS = 2
"""Bodies a PeerLink stripes at once (the others wait): one keeps every stream busy, a second
fills the pause while the first one's DATA frame is answered; the server's store holds both."""
READ_BUFFER = 4 << 20
"""A connection's StreamReader pauses the socket beyond twice this (asyncio's default, 64 KiB,
would pause and resume it every 128 KiB of a 1 MiB STRIPE frame on a fast path)."""
PROGRESS_CHUNK = 1 << 20
"""A client reads long frames (REPLY) in pieces of this size: each piece counts as hearing the
peer, so a large reply on a slow link is not mistaken for silence."""
# TLS 1.2 only: ECDHE key exchange (forward secrecy) and AEAD ciphers. TLS 1.3 suites are all
# AEAD with (EC)DHE and are not affected by this string.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class PeerRefused(Exception):
    """A connection was refused; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LinkDown(Exception):
    """The connection carrying a frame went away before its ACK; send it again."""


class LinkStopped(Exception):
    """The gateway is stopping: the message is left to the broker (requeued)."""


class MessageRefused(Exception):
    """The receiving gateway refused the message for good (reason from its REFUSED frame)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    PeerRefused,
    ProtocolError,
    TimeoutError,
    concurrent.futures.TimeoutError,
)
"""What one failed connection attempt raises (the next attempt follows after a backoff)."""


def _link_log(level: str, event: str, **fields: Any) -> None:
    """Log a link event in an empty context: no trace id, job id or message id of whatever
    message the calling thread happens to be handling."""
    contextvars.Context().run(getattr(log, level), event, **fields)


# --- TLS -----------------------------------------------------------------------------------


def _base_context(purpose: int, identity: PartyIdentity) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Only the federation CA: no system store is loaded on a context built this way.
    ctx.load_verify_locations(cafile=str(identity.ca_cert_path))
    ctx.load_cert_chain(certfile=str(identity.tls_cert_path), keyfile=str(identity.tls_key_path))
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def server_context(identity: PartyIdentity) -> ssl.SSLContext:
    return _base_context(ssl.PROTOCOL_TLS_SERVER, identity)


def client_context(identity: PartyIdentity) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, identity)
    ctx.check_hostname = False  # identity is the party id in the certificate (checked after)
    return ctx


def classify_tls_error(exc: BaseException) -> str:
    """A short metric label for why a TLS handshake or first read failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return "expired"
        if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
            return "not_yet_valid"
        if code in (2, 18, 19, 20, 21):  # issuer unknown / self-signed / untrusted chain
            return "foreign_ca"
        return "bad_certificate"
    text = str(exc).lower()
    if "did not return a certificate" in text or "certificate required" in text:
        return "missing_certificate"
    if "unknown ca" in text or "unknown_ca" in text:
        return "foreign_ca"
    if "certificate expired" in text or "certificate_expired" in text:
        return "expired"
    if "bad certificate" in text or "bad_certificate" in text:
        return "bad_certificate"
    if "version" in text or "protocol" in text:
        return "protocol_version"
    if isinstance(exc, TimeoutError):
        return "handshake_timeout"
    return "tls_error"


def peer_party_of(ssl_object: Any, ca_cert: x509.Certificate) -> str:
    """The party id of the authenticated peer certificate of a finished handshake."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerRefused("missing_certificate", "peer presented no certificate")
    try:
        return check_party_certificate(der, ca_cert).party_id
    except CertificateRefused as exc:
        raise PeerRefused(exc.reason, exc.detail) from None


# --- the loop thread ---------------------------------------------------------------------


class LinkLoop:
    """One asyncio event loop on a daemon thread, shared by every link connection."""

    def __init__(self, name: str = "fedgateway-link", *, netns: str = "") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._netns = netns
        self._entered = threading.Event()
        self._netns_error: BaseException | None = None

    def _run(self) -> None:
        if self._netns:
            # Every socket of the link (listening, accepted, outbound) is made on this thread,
            # so it lives in this namespace; the gateway's other threads stay where they are.
            try:
                enter_netns(self._netns)
            except BaseException as exc:
                self._netns_error = exc
                self._entered.set()
                return
        self._entered.set()
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        """Start the loop thread; raise if it cannot enter its network namespace."""
        self._thread.start()
        self._entered.wait()
        if self._netns_error is not None:
            raise OSError(
                f"link loop cannot enter network namespace {self._netns!r}: {self._netns_error}"
            ) from self._netns_error

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the loop in an empty context: a connection opened on behalf of a relay
        thread must not carry (and log) the trace of the message that thread was relaying."""
        return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Cancel what still runs on the loop (readers, heartbeats, watchdogs: their `finally`
        blocks close their connections), then stop it."""
        if self.loop.is_closed() or not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)

        with contextlib.suppress(Exception):
            self.submit(cancel_all()).result(timeout=2.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def read_frame(
    reader: asyncio.StreamReader,
    max_frame_bytes: int,
    progress: Callable[[], None] | None = None,
) -> tuple[FrameType, bytes]:
    """One frame. `progress` (if given) is called after each PROGRESS_CHUNK of a long body."""
    header = await reader.readexactly(HEADER_SIZE)
    frame_type, length = parse_header(header, max_frame_bytes=max_frame_bytes)
    if not length:
        return frame_type, b""
    if progress is None or length <= PROGRESS_CHUNK:
        return frame_type, await reader.readexactly(length)
    body = bytearray()
    while len(body) < length:
        body += await reader.readexactly(min(PROGRESS_CHUNK, length - len(body)))
        progress()
    return frame_type, bytes(body)


def write_frame(writer: asyncio.StreamWriter, frame_type: FrameType, *parts: bytes) -> None:
    """Queue one frame on the transport (loop thread only). Parts are written without joining,
    so a 1 MiB envelope is not copied into a bigger buffer first."""
    writer.write(frame_header(frame_type, sum(len(p) for p in parts)))
    for part in parts:
        if part:
            writer.write(part)


class FrameSender:
    """Thread-safe handle to write frames on a connection owned by the loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter) -> None:
        self._loop = loop
        self._writer = writer

    def send(self, frame_type: FrameType, *parts: bytes) -> None:
        def write() -> None:
            if not self._writer.is_closing():
                write_frame(self._writer, frame_type, *parts)

        self._loop.call_soon_threadsafe(write)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._writer.close)


# --- server side ---------------------------------------------------------------------------


class InboundSession(Protocol):
    """The receiving half of one authenticated connection (implemented by the relay)."""

    async def on_data(self, body: bytes | DataFrame) -> None:
        """Take one DATA frame: its raw body, or decoded (the reassembled body of a striped
        one); may wait (backpressure), must not block the loop."""

    def close(self) -> None:
        """The connection ended: finish or drop in-flight work (unacked frames are resent)."""


class InboundHandler(Protocol):
    def server_context(self) -> ssl.SSLContext: ...

    def local_hello(self) -> Hello: ...

    def admit(self, peer_party: str, hello: Hello) -> None:
        """Accept the peer (raise PeerRefused): the certificate party is already verified."""

    def open_session(self, peer_party: str, sender: FrameSender) -> InboundSession: ...

    def on_request(self, peer_party: str, sender: FrameSender, body: bytes) -> None:
        """Take one REQUEST body (loop thread: hand it off, do not block); answer with a REPLY
        frame through `sender`, or not at all when the request is dropped."""

    def connection_refused(
        self, side: str, reason: str, detail: str, address: str, claimed_party: str | None
    ) -> None: ...

    @property
    def ca_cert(self) -> x509.Certificate: ...


class LinkServer:
    """The gateway's one listening port: mutual TLS, HELLO exchange, then DATA frames."""

    def __init__(
        self,
        link_loop: LinkLoop,
        handler: InboundHandler,
        host: str,
        port: int,
        *,
        max_frame_bytes: int,
        transport: TransportOptions | None = None,
        stripe_store_bytes: int = 0,
    ) -> None:
        self._link_loop = link_loop
        self._handler = handler
        self._host = host
        self._port = port
        self._max_frame_bytes = max_frame_bytes
        self._transport = transport or TransportOptions()
        # A client stripes at most MAX_STRIPED_TRANSFERS bodies at once, each no larger than a
        # frame; the third frame's worth is room for what abandoned transfers leave until they
        # expire. Beyond it the oldest transfer is dropped (its client stripes it again).
        room = (MAX_STRIPED_TRANSFERS + 1) * max_frame_bytes
        self._stripe_store_bytes = stripe_store_bytes or room
        self._stripes: dict[str, StripeStore] = {}
        """Peer party -> its striped transfers (shared by all of its connections)."""
        self._server: asyncio.Server | None = None
        self._sessions: set[tuple[asyncio.StreamWriter, InboundSession]] = set()
        self.port = port

    def stripe_store(self, peer_party: str) -> StripeStore:
        store = self._stripes.get(peer_party)
        if store is None:
            store = self._stripes[peer_party] = StripeStore(self._stripe_store_bytes)
        return store

    def start(self) -> int:
        async def start() -> asyncio.Server:
            # made on the loop thread: in the link's network namespace, with its TCP options
            sock = listening_socket(self._host, self._port, self._transport)
            return await asyncio.start_server(self._serve, sock=sock, limit=READ_BUFFER)

        self._server = self._link_loop.run(start(), timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop_accepting(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        self._link_loop.run(stop(), timeout=10)

    def say_goodbye(self) -> None:
        """Tell every connected peer to stop sending; in-flight frames still get their ACKs."""

        async def goodbye() -> None:
            for writer, _ in list(self._sessions):
                if not writer.is_closing():
                    write_frame(writer, FrameType.GOODBYE)

        self._link_loop.run(goodbye(), timeout=10)

    def sessions(self) -> list[InboundSession]:
        return [s for _, s in list(self._sessions)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if peer else "?"
        claimed: str | None = None
        heartbeat: asyncio.Task[None] | None = None
        session: InboundSession | None = None
        entry: tuple[asyncio.StreamWriter, InboundSession] | None = None
        try:
            try:
                await writer.start_tls(
                    self._handler.server_context(), ssl_handshake_timeout=HANDSHAKE_TIMEOUT
                )
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                raise PeerRefused(classify_tls_error(exc), str(exc)) from None
            cert_party = peer_party_of(writer.get_extra_info("ssl_object"), self._handler.ca_cert)
            try:
                frame_type, body = await asyncio.wait_for(
                    read_frame(reader, self._max_frame_bytes), HELLO_TIMEOUT
                )
            except TimeoutError:
                raise PeerRefused("hello_timeout", "no HELLO within the timeout") from None
            if frame_type is not FrameType.HELLO:
                raise PeerRefused("protocol", f"expected HELLO, got {frame_type.name}")
            hello = decode_hello(body)
            claimed = hello.party_id
            if hello.party_id != cert_party:
                raise PeerRefused(
                    "wrong_party",
                    f"HELLO claims party {hello.party_id}, certificate is for party {cert_party}",
                )
            self._handler.admit(cert_party, hello)
            local_hello = self._handler.local_hello()
            write_frame(writer, FrameType.HELLO_OK, encode_hello(local_hello))
            if local_hello.keepalive_s and FEATURE_KEEPALIVE in hello.features:
                heartbeat = asyncio.get_running_loop().create_task(
                    _heartbeat(writer, local_hello.keepalive_s)
                )
            sender = FrameSender(asyncio.get_running_loop(), writer)
            session = self._handler.open_session(cert_party, sender)
            entry = (writer, session)
            self._sessions.add(entry)
            log.info("link_accepted", peer_party=cert_party, address=address)
            stripes = self.stripe_store(cert_party)
            while True:
                frame_type, body = await read_frame(reader, self._max_frame_bytes)
                if frame_type is FrameType.DATA:
                    ref = stripe_ref_of(body)
                    if ref is None:
                        await session.on_data(body)
                        continue
                    whole = self._striped_body(stripes, ref)
                    if whole is None:
                        write_frame(
                            writer, FrameType.REFUSED, encode_refused(ref.seq, STRIPE_MISSING)
                        )
                        continue
                    await session.on_data(whole)
                elif frame_type is FrameType.STRIPE:
                    chunk = decode_stripe(body, max_total=self._max_frame_bytes)
                    del body
                    self._take_chunk(stripes, chunk, writer)
                elif frame_type is FrameType.REQUEST:
                    self._handler.on_request(cert_party, sender, body)
                elif frame_type is FrameType.PING:
                    decode_ping(body)  # a malformed PING is a protocol error like any frame
                    write_frame(writer, FrameType.PONG, body)
                elif frame_type is FrameType.GOODBYE:
                    log.info("link_peer_goodbye", peer_party=cert_party)
                    break
                else:
                    raise ProtocolError(f"unexpected {frame_type.name} frame from a client")
        except PeerRefused as exc:
            self._handler.connection_refused("server", exc.reason, exc.detail, address, claimed)
        except ProtocolError as exc:
            self._handler.connection_refused("server", "protocol", str(exc), address, claimed)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as exc:
            if session is None:
                reason = (
                    classify_tls_error(exc) if isinstance(exc, ssl.SSLError) else "disconnected"
                )
                self._handler.connection_refused("server", reason, str(exc), address, claimed)
            else:
                log.info(
                    "link_closed", peer_party=claimed, address=address, error=type(exc).__name__
                )
        except asyncio.CancelledError:
            # The gateway is stopping (LinkLoop.stop). Not re-raised: Python 3.11's
            # start_server callback calls exception() on the task and logs a cancelled one
            # as an error.
            log.info("link_closed", peer_party=claimed, address=address, error="stopping")
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if entry is not None:
                self._sessions.discard(entry)
            if session is not None:
                session.close()
            writer.close()

    @staticmethod
    def _take_chunk(stripes: StripeStore, chunk: StripeChunk, writer: asyncio.StreamWriter) -> None:
        if not stripes.add(chunk):
            raise ProtocolError(f"STRIPE chunk contradicts transfer {chunk.xid:x}")
        write_frame(writer, FrameType.STRIPE_ACK, encode_stripe_ack([(chunk.xid, chunk.index)]))

    @staticmethod
    def _striped_body(stripes: StripeStore, ref: DataFrame) -> DataFrame | None:
        """The DATA frame a striped transfer stands for (as if it had come in one frame; handed
        on decoded, so its body is not copied behind a prefix and out again)."""
        assert ref.stripe is not None
        xid, total = ref.stripe
        pieces = stripes.take(xid, total)
        if pieces is None:
            _link_log("info", "link_stripe_missing", xid=xid, message_id=ref.message_id)
            return None
        return dataclasses.replace(ref, pieces=pieces, stripe=None)


async def _heartbeat(writer: asyncio.StreamWriter, interval: float) -> None:
    """Server side: a PONG with the heartbeat nonce every `interval` s until the connection
    closes. Written from its own task, so it goes out while the read loop waits for room."""
    body = encode_ping(HEARTBEAT_NONCE)
    while not writer.is_closing():
        write_frame(writer, FrameType.PONG, body)
        await asyncio.sleep(interval)


# --- client side ---------------------------------------------------------------------------


class ClientConnection:
    """One outbound connection to a peer gateway; `submit` is safe from any thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer_party: str,
        peer_hello: Hello,
        max_frame_bytes: int,
        *,
        ping_interval: float = 0.0,
        on_rtt: Callable[[float], None] | None = None,
        dead_after: float = 0.0,
    ) -> None:
        self._loop = loop
        self._reader = reader
        self._writer = writer
        self.peer_party = peer_party
        self.peer_hello = peer_hello
        self._max_frame_bytes = max_frame_bytes
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[str | None]] = {}
        self._next_seq = 1
        # rid -> the REPLY's (outcome, body); entries leave on REPLY, deadline or close.
        self._requests: dict[int, concurrent.futures.Future[tuple[ReplyOutcome, bytes]]] = {}
        self._request_timers: dict[int, asyncio.TimerHandle] = {}  # loop thread only
        self._next_rid = 1
        self.closed = False
        self.draining = False
        self.close_reason = ""
        """Why the connection ended (set when it does)."""
        self._unusable = threading.Event()  # set once closed or draining
        self._on_rtt = on_rtt
        self._pings: dict[int, float] = {}  # nonce -> monotonic send time (loop thread only)
        self._next_ping = 1
        self._last_heard = time.monotonic()  # loop thread only
        self._silence_reason = ""
        self._reader_task = loop.create_task(self._read_loop())
        self._ping_task: asyncio.Task[None] | None = None
        if ping_interval > 0 and on_rtt is not None and FEATURE_PING in peer_hello.features:
            self._ping_task = loop.create_task(self._ping_loop(ping_interval))
        self.dead_after = 0.0
        """Seconds of silence after which this connection is dropped (0: never, the server
        promised no heartbeats)."""
        if dead_after > 0 and peer_hello.keepalive_s and FEATURE_KEEPALIVE in peer_hello.features:
            self.dead_after = max(dead_after, HEARTBEATS_BEFORE_DEAD * peer_hello.keepalive_s)
        self._watchdog_task: asyncio.Task[None] | None = None
        if self.dead_after:
            self._watchdog_task = loop.create_task(self._watchdog(self.dead_after))
        # Striping (loop thread only): chunk bytes written and not yet ACKed on this
        # connection, when it last ACKed one, and where its STRIPE_ACKs go.
        self.stripe_in_flight = 0
        self.stripe_last_progress = time.monotonic()
        self.stripe_sink: Callable[[ClientConnection, int, int], None] | None = None
        # Retransmissions (metrics): the most TCP_INFO showed, and who to tell when the
        # connection ends (before it stops being listed, so a peer's total never drops).
        self.retransmits_seen = 0
        self.on_closed: Callable[[ClientConnection], None] | None = None

    @property
    def supports_stripe(self) -> bool:
        """The server announced the "stripe" feature: STRIPE frames may be sent."""
        return FEATURE_STRIPE in self.peer_hello.features

    @property
    def supports_zstd(self) -> bool:
        """The server announced the "zstd" feature: DATA bodies may be compressed."""
        return FEATURE_ZSTD in self.peer_hello.features

    def write_stripe(self, prefix: bytes, chunk: memoryview) -> bool:
        """Loop thread: queue one STRIPE frame; False if the connection is closing."""
        if self._writer.is_closing() or not self.usable:
            return False
        write_frame(self._writer, FrameType.STRIPE, prefix, chunk)  # type: ignore[arg-type]
        return True

    def tcp_info(self) -> TcpInfo | None:
        """The kernel's view of this connection (RTT, retransmissions, bytes in flight)."""
        sock = self._writer.get_extra_info("socket")
        info = tcp_info(sock) if sock is not None and sock.fileno() >= 0 else None
        if info is not None:
            self.retransmits_seen = max(self.retransmits_seen, info.retransmits_total)
        return info

    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining)

    def wait_unusable(self, timeout: float | None = None) -> bool:
        """Block until the connection is closed or draining (True) or `timeout` passed."""
        return self._unusable.wait(timeout)

    def _heard(self) -> None:
        self._last_heard = time.monotonic()

    async def _watchdog(self, dead_after: float) -> None:
        """Drop the connection after `dead_after` s without a frame from the server.

        The watchdog runs on the same loop as the reader: if the loop itself did not run for a
        while (CPU starvation, a long write), frames may be waiting unread, so after such a stall
        it listens STALL_GRACE more before it judges the peer (but never past twice
        `dead_after` of silence)."""
        tick = min(0.25, dead_after / 4)
        expected = time.monotonic() + tick
        listening_since = time.monotonic()
        while not self._writer.is_closing():
            await asyncio.sleep(tick)
            now = time.monotonic()
            stalled = now - expected > STALL_GRACE / 2
            expected = now + tick
            if stalled:
                # Our loop did not run: what the peer sent may be unread. No verdict on this
                # tick; the reader catches up first.
                listening_since = now
                continue
            silent = now - self._last_heard
            # Past twice the limit the verdict does not wait for STALL_GRACE of calm: sustained
            # overload must not hide a dead peer for ever (the ACK timeout would be the only
            # judge then).
            if silent > dead_after and (
                now - listening_since >= STALL_GRACE or silent > 2 * dead_after
            ):
                self._silence_reason = (
                    f"silent: no frame from party {self.peer_party} for {silent:.1f} s "
                    f"(dead after {dead_after:.1f} s)"
                )
                self._writer.transport.abort()
                return

    @property
    def supports_rpc(self) -> bool:
        """The server announced the "rpc" feature: REQUEST frames may be sent."""
        return FEATURE_RPC in self.peer_hello.features

    def submit_request(
        self, body: bytes, timeout: float
    ) -> concurrent.futures.Future[tuple[ReplyOutcome, bytes]]:
        """Send one REQUEST frame; the future gives the REPLY's (outcome, body), raises
        TimeoutError after `timeout` seconds (a later REPLY is ignored), or LinkDown if the
        connection ends first."""
        fut: concurrent.futures.Future[tuple[ReplyOutcome, bytes]] = concurrent.futures.Future()
        with self._lock:
            if not self.usable:
                raise LinkDown("connection closed or draining")
            rid = self._next_rid
            self._next_rid += 1
            self._requests[rid] = fut  # before the write: the REPLY may come back at once
        prefix = encode_request_prefix(rid)

        def write() -> None:
            if self._writer.is_closing():
                self._settle_request(rid, LinkDown("connection closed before the request"))
                return
            write_frame(self._writer, FrameType.REQUEST, prefix, body)
            self._request_timers[rid] = self._loop.call_later(
                max(timeout, 0.0),
                self._settle_request,
                rid,
                TimeoutError(f"no REPLY within {timeout:.3f} s"),
            )

        self._loop.call_soon_threadsafe(write)
        return fut

    def _settle_request(self, rid: int, result: tuple[ReplyOutcome, bytes] | Exception) -> None:
        """Loop thread: the REPLY, the deadline or the connection's end, whichever is first."""
        timer = self._request_timers.pop(rid, None)
        if timer is not None:
            timer.cancel()
        with self._lock:
            fut = self._requests.pop(rid, None)
        if fut is None or fut.done():
            return  # answered already, or a REPLY after the deadline: dropped
        if isinstance(result, Exception):
            fut.set_exception(result)
        else:
            fut.set_result(result)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def submit(
        self,
        message_id: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        stripe: tuple[int, int] | None = None,
        raw_size: int | None = None,
    ) -> concurrent.futures.Future[str | None]:
        """Send one DATA frame; the future gives None on ACK or the reason on REFUSED, and
        raises LinkDown if the connection ends first. With `stripe` (xid, total) the frame
        names a striped transfer the server ACKed whole, and `body` is empty. With `raw_size`
        the body (or transfer) is zstd-compressed from that many bytes."""
        prefix_cache: list[bytes] = []
        fut: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        with self._lock:
            if not self.usable:
                raise LinkDown("connection closed or draining")
            seq = self._next_seq
            self._next_seq += 1
            self._pending[seq] = fut  # before the write: the ACK may come back at once
        prefix_cache.append(encode_data_prefix(seq, message_id, headers, stripe, raw_size))

        def write() -> None:
            if self._writer.is_closing():
                self._fail(seq)
                return
            write_frame(self._writer, FrameType.DATA, prefix_cache[0], body)

        self._loop.call_soon_threadsafe(write)
        return fut

    def _fail(self, seq: int) -> None:
        with self._lock:
            fut = self._pending.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_exception(LinkDown("connection closed before the frame was written"))

    def _resolve(self, seq: int, result: str | None) -> None:
        with self._lock:
            fut = self._pending.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def _ping_loop(self, interval: float) -> None:
        while not self._writer.is_closing():
            nonce = self._next_ping
            self._next_ping += 1
            if len(self._pings) >= MAX_PINGS_IN_FLIGHT:
                del self._pings[min(self._pings)]
            self._pings[nonce] = time.monotonic()
            write_frame(self._writer, FrameType.PING, encode_ping(nonce))
            await asyncio.sleep(interval)

    def _pong(self, body: bytes) -> None:
        nonce = decode_ping(body)
        if nonce == HEARTBEAT_NONCE:
            return  # the server's heartbeat: hearing it is all it is for
        sent = self._pings.pop(nonce, None)
        if sent is not None and self._on_rtt is not None:
            self._on_rtt(time.monotonic() - sent)

    async def _read_loop(self) -> None:
        error = "closed by peer"
        try:
            while True:
                frame_type, body = await read_frame(
                    self._reader, self._max_frame_bytes, progress=self._heard
                )
                self._last_heard = time.monotonic()
                if frame_type is FrameType.ACK:
                    for seq in decode_ack(body):
                        self._resolve(seq, None)
                elif frame_type is FrameType.PONG:
                    self._pong(body)
                elif frame_type is FrameType.STRIPE_ACK:
                    sink = self.stripe_sink
                    for xid, index in decode_stripe_ack(body):
                        if sink is not None:
                            sink(self, xid, index)
                elif frame_type is FrameType.REPLY:
                    rid, outcome, payload = decode_reply(body)
                    self._settle_request(rid, (outcome, payload))
                elif frame_type is FrameType.REFUSED:
                    seq, reason = decode_refused(body)
                    self._resolve(seq, reason)
                elif frame_type is FrameType.GOODBYE:
                    with self._lock:
                        self.draining = True
                    self.close_reason = "the peer said GOODBYE (shutting down)"
                    self._unusable.set()
                    _link_log("info", "link_peer_draining", peer_party=self.peer_party)
                else:
                    raise ProtocolError(f"unexpected {frame_type.name} frame from a server")
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            ssl.SSLError,
            OSError,
            ProtocolError,
        ) as exc:
            error = f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            error = "cancelled"
        finally:
            if self._silence_reason:
                error = self._silence_reason
            if self._ping_task is not None:
                self._ping_task.cancel()
            if self._watchdog_task is not None:
                self._watchdog_task.cancel()
            self.tcp_info()  # the last count of retransmissions, while the socket is open
            if self.on_closed is not None:
                self.on_closed(self)
            with self._lock:
                self.closed = True
                pending, self._pending = self._pending, {}
                requests, self._requests = self._requests, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(LinkDown(error))
            for request in requests.values():
                if not request.done():
                    request.set_exception(LinkDown(error))
            for timer in self._request_timers.values():
                timer.cancel()
            self._request_timers.clear()
            self._writer.close()
            if not self.draining or not self.close_reason:
                self.close_reason = error
            self._unusable.set()
            _link_log(
                "info",
                "link_connection_closed",
                peer_party=self.peer_party,
                error=error,
                unacked=len(pending),
            )

    def abort(self) -> None:
        """Drop the connection now (e.g. ACK timeout); unacked frames fail with LinkDown."""
        self._loop.call_soon_threadsafe(self._writer.transport.abort)

    def close(self) -> None:
        """Say GOODBYE and close; unacked frames fail with LinkDown."""
        with self._lock:
            self.draining = True  # no new submits from now on, even before the loop runs
        self.close_reason = self.close_reason or "closed by this gateway"
        self._unusable.set()

        def close() -> None:
            if not self._writer.is_closing():
                write_frame(self._writer, FrameType.GOODBYE)
                self._writer.close()

        self._loop.call_soon_threadsafe(close)


async def open_client_connection(
    address: str,
    *,
    context: ssl.SSLContext,
    hello: Hello,
    expected_party: str,
    ca_cert: x509.Certificate,
    max_frame_bytes: int,
    ping_interval: float = 0.0,
    on_rtt: Callable[[float], None] | None = None,
    dead_after: float = 0.0,
    transport: TransportOptions | None = None,
) -> ClientConnection:
    """Connect, handshake, check the server is `expected_party`, exchange HELLOs; then PING
    every `ping_interval` seconds (0: never) if the server understands it, reporting each
    round trip to `on_rtt`, and drop the connection after `dead_after` seconds without a
    frame from a server that promised heartbeats (0: never)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # Our own socket: congestion control and buffers are set before the SYN (the window
        # scale is fixed then); made on the loop thread, so in the link's network namespace.
        loop = asyncio.get_running_loop()
        info = await loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        sock = client_socket(str(info[0][4][0]), transport or TransportOptions())
        try:
            await loop.sock_connect(sock, info[0][4])
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(
            sock=sock,
            limit=READ_BUFFER,
            ssl=context,
            server_hostname=host,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )

    try:
        reader, writer = await asyncio.wait_for(connect(), HANDSHAKE_TIMEOUT + 5)
    except ssl.SSLError as exc:
        raise PeerRefused(classify_tls_error(exc), str(exc)) from None
    try:
        party = peer_party_of(writer.get_extra_info("ssl_object"), ca_cert)
        if party != expected_party:
            raise PeerRefused(
                "wrong_party", f"{address} presented party {party}, expected {expected_party}"
            )
        write_frame(writer, FrameType.HELLO, encode_hello(hello))
        try:
            frame_type, body = await asyncio.wait_for(
                read_frame(reader, max_frame_bytes), HELLO_TIMEOUT
            )
        except ssl.SSLError as exc:  # TLS 1.3: the server's verdict on our certificate
            raise PeerRefused(classify_tls_error(exc), str(exc)) from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise PeerRefused("closed_by_peer", f"server closed during HELLO: {exc}") from None
        if frame_type is not FrameType.HELLO_OK:
            raise PeerRefused("protocol", f"expected HELLO_OK, got {frame_type.name}")
        peer_hello = decode_hello(body)
        if peer_hello.party_id != expected_party:
            raise PeerRefused("wrong_party", f"HELLO_OK claims party {peer_hello.party_id}")
    except BaseException:
        writer.close()
        raise
    return ClientConnection(
        asyncio.get_running_loop(),
        reader,
        writer,
        expected_party,
        peer_hello,
        max_frame_bytes,
        ping_interval=ping_interval,
        on_rtt=on_rtt,
        dead_after=dead_after,
    )


class PeerLink:
    """The sending side towards one peer: keeps a connection open, resends until ACKed.

    From `start()` a supervisor thread keeps one connection to the peer open whether or not
    there is anything to send (the server's heartbeats and our PINGs flow on it), opens it again
    with backoff when it closes, drains or falls silent, and reports each change through
    `on_state(up)`: up from HELLO_OK, down the moment the connection stops being usable. Only
    the supervisor opens connections; senders wait for it.

    `send` blocks the calling relay thread until the peer's ACK (its broker confirmed the
    publish). Several relay threads sending at once share the connection: that is the window
    of unacked frames, so throughput does not wait on one round trip per message.

    With `streams` > 1 it keeps that many connections to the peer (the first is the one above:
    its state is the link's state; the others are kept open the same way, quietly). Bodies of
    at least `stripe_bytes` (0: none) are striped across every usable connection whose server
    understands it (stripe.py, docs/wan.md); smaller ones go on the first connection as before,
    so their order on the wire is what it was with one connection."""

    def __init__(
        self,
        link_loop: LinkLoop,
        peer_party: str,
        address: str,
        connector: Callable[[str, str], Awaitable[ClientConnection]],
        *,
        ack_timeout: float,
        on_refused: Callable[[str, str, str], None],
        on_state: Callable[[bool], None] = lambda up: None,
        streams: int = 1,
        stripe_bytes: int = 0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        stall_after: float = DEFAULT_STALL_AFTER,
        compress_level: int = 0,
        _transfers: dict[int, StripeTransfer] | None = None,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self._link_loop = link_loop
        self.peer_party = peer_party
        self.address = address
        self._connector = connector
        self._ack_timeout = ack_timeout
        self._on_refused = on_refused
        self._on_state = on_state
        # Guards _conn, _failures and _supervisor; notified whenever the connection changes.
        self._state = threading.Condition()
        self._conn: ClientConnection | None = None
        self._failures = 0
        """Failed attempts since the last connection came up (> 0: the peer is known down)."""
        self._supervisor: threading.Thread | None = None
        self._stopped = threading.Event()
        self._wake = threading.Event()  # ends a backoff sleep early (stop)
        self._stripe_bytes = stripe_bytes
        self._chunk_bytes = chunk_bytes
        self._stream_window = stream_window
        self._stall_after = stall_after
        self._compress_level = compress_level
        # xid -> transfer under way (loop thread), shared with the extra streams' links
        self._transfers: dict[int, StripeTransfer] = {} if _transfers is None else _transfers
        self._extra = [
            PeerLink(
                link_loop,
                peer_party,
                address,
                connector,
                ack_timeout=ack_timeout,
                on_refused=on_refused,
                _transfers=self._transfers,
            )
            for _ in range(streams - 1)
        ]
        self.stripe_stats = {"transfers": 0, "chunks_sent": 0, "rerouted": 0, "restriped": 0}
        # Retransmissions of this stream's connections: those that ended (their last count)
        # and those open (read live); a connection moves from one to the other under the lock.
        self._retransmits_lock = threading.Lock()
        self._retransmits_ended = 0
        self._live: set[ClientConnection] = set()
        # bodies of at least compression.MIN_BYTES: compressed or sent as they were, and bytes
        # before / after compression of the compressed ones (any relay thread; approximate)
        self.compress_stats = {"compressed": 0, "skipped": 0, "raw_bytes": 0, "sent_bytes": 0}
        self._stripe_slots = threading.BoundedSemaphore(MAX_STRIPED_TRANSFERS)

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.usable

    def start(self) -> None:
        """Start keeping the connection open (idempotent)."""
        with self._state:
            if self._supervisor is not None or self._stopped.is_set():
                return
            self._supervisor = threading.Thread(
                target=self._supervise, name=f"gw-link-{self.peer_party}", daemon=True
            )
        self._supervisor.start()
        for extra in self._extra:
            extra.start()

    def connections(self) -> list[ClientConnection]:
        """Every usable connection to the peer (the first stream first)."""
        links = [self, *self._extra]
        return [c for c in (link.usable_connection() for link in links) if c is not None]

    @property
    def streams_up(self) -> int:
        return len(self.connections())

    def tcp_infos(self) -> list[TcpInfo]:
        """TCP_INFO of every usable stream to the peer (for metrics; any thread)."""
        infos = (conn.tcp_info() for conn in self.connections())
        return [info for info in infos if info is not None]

    def retransmits_total(self) -> int:
        """TCP segments retransmitted to the peer since this link started, over every stream
        and every connection each stream had (any thread). Never decreases: a connection's
        count is added to the ended ones before it leaves the open ones."""
        total = 0
        for link in (self, *self._extra):
            with link._retransmits_lock:
                total += link._retransmits_ended
                for conn in link._live:
                    conn.tcp_info()
                    total += conn.retransmits_seen
        return total

    def _connection_ended(self, conn: ClientConnection) -> None:
        """A connection's read loop ended (loop thread), or the supervisor saw it go down."""
        with self._retransmits_lock:
            if conn in self._live:
                self._live.discard(conn)
                self._retransmits_ended += conn.retransmits_seen

    # --- the supervisor thread --------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopped.is_set():
            try:
                conn = self._open()
            except Exception as exc:  # a bug, not a network error: keep the link alive
                if self._stopped.is_set():
                    return  # the attempt was cancelled by the loop stopping
                _link_log(
                    "error", "link_supervisor_failed", peer_party=self.peer_party, error=repr(exc)
                )
                self._sleep(1.0)
                continue
            if conn is None:
                return  # stopped while (re)connecting
            conn.wait_unusable()
            self._went_down(conn)

    def _open(self) -> ClientConnection | None:
        """Connect, retrying with exponential backoff and jitter (up to 5 s), until it works or
        the link is stopped (None)."""
        retrying = Retrying(
            wait=wait_random_exponential(multiplier=0.05, max=5.0),
            stop=lambda _state: self._stopped.is_set(),
            sleep=self._sleep,
            retry=retry_if_exception_type(CONNECT_ERRORS),
            before_sleep=self._log_retry,
            reraise=True,
        )
        conn: ClientConnection | None = None
        try:
            for attempt in retrying:
                with attempt:
                    if self._stopped.is_set():
                        return None
                    conn = self._attempt()
        except CONNECT_ERRORS:
            return None
        assert conn is not None
        if self._stopped.is_set():
            conn.close()
            return None
        self._came_up(conn)
        return conn

    def _attempt(self) -> ClientConnection:
        """One connection attempt; a failure is counted (callers waiting on it learn it)."""
        attempt: concurrent.futures.Future[ClientConnection] = self._link_loop.submit(
            self._connector(self.peer_party, self.address)  # type: ignore[arg-type]
        )
        try:
            return attempt.result(timeout=HANDSHAKE_TIMEOUT + HELLO_TIMEOUT + 10)
        except BaseException:
            attempt.cancel()
            with self._state:
                self._failures += 1
                self._state.notify_all()
            raise

    def _came_up(self, conn: ClientConnection) -> None:
        conn.stripe_sink = self._stripe_acked
        with self._retransmits_lock:
            self._live.add(conn)
        conn.on_closed = self._connection_ended
        with self._state:
            self._conn = conn
            self._failures = 0
            self._state.notify_all()
        self._on_state(True)
        _link_log(
            "info",
            "link_up",
            peer_party=self.peer_party,
            address=self.address,
            dead_after_s=conn.dead_after or None,
        )

    def _went_down(self, conn: ClientConnection) -> None:
        self._connection_ended(conn)  # if it ended before its on_closed was set
        with self._state:
            self._state.notify_all()
        self._on_state(False)
        if self._stopped.is_set():
            _link_log("info", "link_closed", peer_party=self.peer_party, reason="stopping")
        else:
            _link_log(
                "warning",
                "link_down",
                peer_party=self.peer_party,
                address=self.address,
                reason=conn.close_reason,
            )

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, PeerRefused):
            self._on_refused(exc.reason, exc.detail, self.address)
            return
        n = state.attempt_number
        # A peer down for hours must not fill the log: the 1st, 2nd, 4th, 8th... failure, then
        # one a minute or so, at info; the others at debug.
        level = "info" if n & (n - 1) == 0 or n % 12 == 0 else "debug"
        _link_log(
            level,
            "link_connect_failed",
            peer_party=self.peer_party,
            address=self.address,
            error=f"{type(exc).__name__}: {exc}",
            attempt=n,
        )

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)

    # --- senders ------------------------------------------------------------------------------

    def _usable_or_wait(self) -> ClientConnection:
        """The usable connection, waiting for the supervisor to open one; LinkStopped when the
        link is stopped and no usable connection is left."""
        if self._supervisor is None:
            self.start()
        with self._state:
            while True:
                conn = self._conn
                if conn is not None and conn.usable:
                    return conn
                if self._stopped.is_set():
                    raise LinkStopped(f"link to party {self.peer_party} stopped")
                # Woken when a connection comes up or the link stops; the timeout re-checks a
                # connection that went unusable without a notification yet.
                self._state.wait(1.0)

    def usable_connection(self) -> ClientConnection | None:
        """The current connection if it is up and taking frames; never waits."""
        conn = self._conn
        return conn if conn is not None and conn.usable else None

    def connection_now(self, timeout: float) -> ClientConnection | None:
        """The usable connection, for calls with a deadline, which cannot wait out the backoff:
        None at once when the peer is known down (the last attempt to reach it failed; the
        supervisor keeps trying), else the outcome of the attempt under way, within `timeout`."""
        conn = self.usable_connection()
        if conn is not None:
            return conn
        if self._supervisor is None:
            self.start()
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._state:
            while True:
                conn = self._conn
                if conn is not None and conn.usable:
                    return conn
                remaining = deadline - time.monotonic()
                if self._failures or self._stopped.is_set() or remaining <= 0:
                    return None
                self._state.wait(min(remaining, 1.0))

    def _stripe_acked(self, conn: ClientConnection, xid: int, index: int) -> None:
        transfer = self._transfers.get(xid)  # loop thread
        if transfer is not None:
            transfer.acked(conn, index)

    def _striped(self, conn: ClientConnection, body: bytes) -> bool:
        return bool(self._stripe_bytes) and len(body) >= self._stripe_bytes and conn.supports_stripe

    def _stripe(self, transfer: StripeTransfer) -> None:
        """Relay thread: until the peer holds every chunk of `transfer` (LinkStopped if the
        link stops first). A spell without any ACK longer than the ACK timeout drops the
        connections that had chunks in flight, as an ACK timeout does, and goes on."""

        def streams() -> list[ClientConnection]:
            return [c for c in self.connections() if c.supports_stripe]

        async def run() -> None:
            self._transfers[transfer.xid] = transfer
            try:
                await transfer.run(
                    streams, idle_timeout=self._ack_timeout, stopped=self._stopped.is_set
                )
            finally:
                self._transfers.pop(transfer.xid, None)
                transfer.release()

        while not transfer.done:
            try:
                self._link_loop.run(run())
            except TransferStopped:
                raise LinkStopped(f"link to party {self.peer_party} stopped") from None
            except TimeoutError:
                log.warning(
                    "link_stripe_timeout",
                    peer_party=self.peer_party,
                    xid=transfer.xid,
                    acked=transfer.acked_count,
                    chunks=transfer.count,
                )
                for conn in streams():
                    if conn.stripe_in_flight:
                        conn.abort()
                self._usable_or_wait()

    def _compressed(self, body: bytes) -> bytes | None:
        """`body` zstd-compressed when this link compresses and it pays (compression.py)."""
        if not self._compress_level or len(body) < compression.MIN_BYTES:
            return None
        conn = self.usable_connection()
        if conn is not None and not conn.supports_zstd:
            return None
        packed = compression.compress_if_worth(body, self._compress_level)
        if packed is None:
            self.compress_stats["skipped"] += 1
        else:
            self.compress_stats["compressed"] += 1
            self.compress_stats["raw_bytes"] += len(body)
            self.compress_stats["sent_bytes"] += len(packed)
        return packed

    def send(self, message_id: str, headers: Mapping[str, str], body: bytes) -> None:
        """Return once the peer ACKed; raise MessageRefused or LinkStopped."""
        packed = self._compressed(body)
        if self._stripe_bytes and len(packed if packed is not None else body) >= self._stripe_bytes:
            # the peer's store is sized for MAX_STRIPED_TRANSFERS bodies at once
            while not self._stripe_slots.acquire(timeout=1.0):
                if self._stopped.is_set():
                    raise LinkStopped(f"link to party {self.peer_party} stopped")
            try:
                self._send(message_id, headers, body, packed)
            finally:
                self._stripe_slots.release()
        else:
            self._send(message_id, headers, body, packed)

    def _send(
        self, message_id: str, headers: Mapping[str, str], plain: bytes, packed: bytes | None
    ) -> None:
        transfer: StripeTransfer | None = None
        transfer_zstd = False
        while True:
            conn = self._usable_or_wait()
            # Compressed only to a server that decompresses (a peer replaced by an older
            # gateway between two tries gets the plain bytes, striped afresh).
            body, raw_size = plain, None
            if packed is not None and conn.supports_zstd:
                body, raw_size = packed, len(plain)
            if transfer is not None and transfer_zstd != (raw_size is not None):
                transfer = None
            stripe: tuple[int, int] | None = None
            if self._striped(conn, body):
                if transfer is None:
                    transfer_zstd = raw_size is not None
                    transfer = StripeTransfer(
                        secrets.randbits(63),
                        body,
                        chunk_bytes=self._chunk_bytes,
                        stream_window=self._stream_window,
                        stall_after=self._stall_after,
                    )
                    self.stripe_stats["transfers"] += 1
                self._stripe(transfer)
                self.stripe_stats["chunks_sent"] += transfer.chunks_sent
                self.stripe_stats["rerouted"] += transfer.rerouted
                transfer.chunks_sent = transfer.rerouted = 0
                stripe = (transfer.xid, transfer.total)
                conn = self._usable_or_wait()
            try:
                if stripe is not None:
                    fut = conn.submit(message_id, headers, b"", stripe=stripe, raw_size=raw_size)
                else:
                    fut = conn.submit(message_id, headers, body, raw_size=raw_size)
            except LinkDown:
                continue
            try:
                result = fut.result(timeout=self._ack_timeout)
            except concurrent.futures.TimeoutError:
                log.warning(  # about this message: its context (trace) belongs here
                    "link_ack_timeout",
                    peer_party=self.peer_party,
                    message_id=message_id,
                    timeout_s=self._ack_timeout,
                )
                conn.abort()
                continue
            except LinkDown:
                continue
            if result == STRIPE_MISSING and stripe is not None:
                # the peer no longer holds the transfer (expired, evicted, or delivered before
                # an ACK was lost): stripe it again under a new id
                self.stripe_stats["restriped"] += 1
                transfer = None
                continue
            if result is not None:
                raise MessageRefused(result)
            return

    def reconnect(self, wait: float = 0.0) -> bool:
        """Close the current connection (after an identity change); the supervisor opens a new
        one. Unacked frames fail with LinkDown and their senders resend them on the new one.

        With `wait` > 0, blocks up to that long until every stream has a new usable connection
        (True) or gives up (False: the peer is down or slow; its next connection carries the new
        identity anyway). A link that is down and retrying picks up the new identity on its next
        try."""
        links = (self, *self._extra)
        closed = [link._conn for link in links]
        for conn in closed:
            if conn is not None:
                conn.close()
        if wait <= 0:
            return True
        deadline = time.monotonic() + wait
        for link, old in zip(links, closed, strict=True):
            with link._state:
                if not link._state.wait_for(
                    lambda link=link, old=old: link._stopped.is_set()  # type: ignore[misc]
                    or (link._conn is not None and link._conn is not old and link._conn.usable),
                    timeout=max(0.0, deadline - time.monotonic()),
                ):
                    return False
        return True

    def stop_connecting(self) -> None:
        """No new connections (a send waiting for one gives up with LinkStopped); frames on the
        current connection still get their ACKs."""
        self._stopped.set()
        self._wake.set()
        with self._state:
            self._state.notify_all()
        for extra in self._extra:
            extra.stop_connecting()

    def stop(self) -> None:
        """No new connections; the current one closes (unacked frames return to the broker)."""
        self.stop_connecting()
        conn = self._conn
        if conn is not None:
            conn.close()
        for extra in self._extra:
            extra.stop()
