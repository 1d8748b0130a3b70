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

Request/reply: a client whose server announced the "rpc" feature may send REQUEST frames on
the same connection as its DATA frames (`ClientConnection.submit_request`); each waits for its
REPLY until its own deadline, after which it fails with TimeoutError and a late REPLY is
ignored. The server hands REQUEST bodies to its handler's `on_request` without waiting.

Threads: all sockets live on one asyncio loop (`LinkLoop`) running on its own thread, so one
TLS object is never used by two threads at once. Relay handler threads talk to it through
`ClientConnection.submit` (thread-safe, returns a concurrent Future resolved by the peer's ACK).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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

from fedgateway.framing import (
    FEATURE_PING,
    FEATURE_RPC,
    HEADER_SIZE,
    FrameType,
    Hello,
    ProtocolError,
    ReplyOutcome,
    decode_ack,
    decode_hello,
    decode_ping,
    decode_refused,
    decode_reply,
    encode_data_prefix,
    encode_hello,
    encode_ping,
    encode_request_prefix,
    frame_header,
    parse_header,
)
from fedgateway.pki import CertificateRefused, PartyIdentity, check_party_certificate

log = structlog.get_logger("fedgateway.link")

T = TypeVar("T")

HANDSHAKE_TIMEOUT = 10.0
HELLO_TIMEOUT = 10.0
MAX_PINGS_IN_FLIGHT = 8
"""Unanswered PINGs remembered per connection (a silent server must not grow the table)."""
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

    def __init__(self, name: str = "fedgateway-link") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def read_frame(reader: asyncio.StreamReader, max_frame_bytes: int) -> tuple[FrameType, bytes]:
    header = await reader.readexactly(HEADER_SIZE)
    frame_type, length = parse_header(header, max_frame_bytes=max_frame_bytes)
    body = await reader.readexactly(length) if length else b""
    return frame_type, body


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

    async def on_data(self, body: bytes) -> None:
        """Take one DATA body; may wait (backpressure), must not block the loop."""

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
    ) -> None:
        self._link_loop = link_loop
        self._handler = handler
        self._host = host
        self._port = port
        self._max_frame_bytes = max_frame_bytes
        self._server: asyncio.Server | None = None
        self._sessions: set[tuple[asyncio.StreamWriter, InboundSession]] = set()
        self.port = port

    def start(self) -> int:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._serve, self._host, self._port)

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
            write_frame(writer, FrameType.HELLO_OK, encode_hello(self._handler.local_hello()))
            sender = FrameSender(asyncio.get_running_loop(), writer)
            session = self._handler.open_session(cert_party, sender)
            entry = (writer, session)
            self._sessions.add(entry)
            log.info("link_accepted", peer_party=cert_party, address=address)
            while True:
                frame_type, body = await read_frame(reader, self._max_frame_bytes)
                if frame_type is FrameType.DATA:
                    await session.on_data(body)
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
        finally:
            if entry is not None:
                self._sessions.discard(entry)
            if session is not None:
                session.close()
            writer.close()


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
        self._on_rtt = on_rtt
        self._pings: dict[int, float] = {}  # nonce -> monotonic send time (loop thread only)
        self._next_ping = 1
        self._reader_task = loop.create_task(self._read_loop())
        self._ping_task: asyncio.Task[None] | None = None
        if ping_interval > 0 and on_rtt is not None and FEATURE_PING in peer_hello.features:
            self._ping_task = loop.create_task(self._ping_loop(ping_interval))

    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining)

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
        self, message_id: str, headers: Mapping[str, str], body: bytes
    ) -> concurrent.futures.Future[str | None]:
        """Send one DATA frame; the future gives None on ACK or the reason on REFUSED, and
        raises LinkDown if the connection ends first."""
        prefix_cache: list[bytes] = []
        fut: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        with self._lock:
            if not self.usable:
                raise LinkDown("connection closed or draining")
            seq = self._next_seq
            self._next_seq += 1
            self._pending[seq] = fut  # before the write: the ACK may come back at once
        prefix_cache.append(encode_data_prefix(seq, message_id, headers))

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
        sent = self._pings.pop(decode_ping(body), None)
        if sent is not None and self._on_rtt is not None:
            self._on_rtt(time.monotonic() - sent)

    async def _read_loop(self) -> None:
        error = "closed by peer"
        try:
            while True:
                frame_type, body = await read_frame(self._reader, self._max_frame_bytes)
                if frame_type is FrameType.ACK:
                    for seq in decode_ack(body):
                        self._resolve(seq, None)
                elif frame_type is FrameType.PONG:
                    self._pong(body)
                elif frame_type is FrameType.REPLY:
                    rid, outcome, payload = decode_reply(body)
                    self._settle_request(rid, (outcome, payload))
                elif frame_type is FrameType.REFUSED:
                    seq, reason = decode_refused(body)
                    self._resolve(seq, reason)
                elif frame_type is FrameType.GOODBYE:
                    with self._lock:
                        self.draining = True
                    log.info("link_peer_draining", peer_party=self.peer_party)
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
            if self._ping_task is not None:
                self._ping_task.cancel()
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
            log.info("link_down", peer_party=self.peer_party, error=error, unacked=len(pending))

    def abort(self) -> None:
        """Drop the connection now (e.g. ACK timeout); unacked frames fail with LinkDown."""
        self._loop.call_soon_threadsafe(self._writer.transport.abort)

    def close(self) -> None:
        """Say GOODBYE and close; unacked frames fail with LinkDown."""
        with self._lock:
            self.draining = True  # no new submits from now on, even before the loop runs

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
) -> ClientConnection:
    """Connect, handshake, check the server is `expected_party`, exchange HELLOs; then PING
    every `ping_interval` seconds (0: never) if the server understands it, reporting each
    round trip to `on_rtt`."""
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                int(port),
                ssl=context,
                server_hostname=host,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            ),
            HANDSHAKE_TIMEOUT + 5,
        )
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
    )


class PeerLink:
    """The sending side towards one peer: reconnects with backoff, resends until ACKed.

    `send` blocks the calling relay thread until the peer's ACK (its broker confirmed the
    publish). Several relay threads sending at once share the connection: that is the window
    of unacked frames, so throughput does not wait on one round trip per message."""

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
    ) -> None:
        self._link_loop = link_loop
        self.peer_party = peer_party
        self.address = address
        self._connector = connector
        self._ack_timeout = ack_timeout
        self._on_refused = on_refused
        self._on_state = on_state
        self._connect_lock = threading.Lock()
        self._conn: ClientConnection | None = None
        self._stopped = threading.Event()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.usable

    def _connect_once(self) -> ClientConnection:
        coro = self._connector(self.peer_party, self.address)
        return self._link_loop.run(coro, timeout=HANDSHAKE_TIMEOUT + HELLO_TIMEOUT + 10)  # type: ignore[arg-type]

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, PeerRefused):
            self._on_refused(exc.reason, exc.detail, self.address)
        else:
            log.info(
                "link_connect_failed",
                peer_party=self.peer_party,
                address=self.address,
                error=f"{type(exc).__name__}: {exc}",
                attempt=state.attempt_number,
            )

    def _sleep(self, seconds: float) -> None:
        self._stopped.wait(seconds)

    def _connection(self) -> ClientConnection:
        with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            if conn is not None:
                self._on_state(False)
            retrying = Retrying(
                wait=wait_random_exponential(multiplier=0.05, max=5.0),
                stop=lambda _state: self._stopped.is_set(),
                sleep=self._sleep,
                retry=retry_if_exception_type(
                    (
                        OSError,
                        PeerRefused,
                        ProtocolError,
                        TimeoutError,
                        concurrent.futures.TimeoutError,
                    )
                ),
                before_sleep=self._log_retry,
                reraise=True,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        if self._stopped.is_set():
                            raise LinkStopped(f"link to party {self.peer_party} stopped")
                        conn = self._connect_once()
            except (OSError, PeerRefused, ProtocolError, TimeoutError) as exc:
                raise LinkStopped(f"link to party {self.peer_party} stopped ({exc})") from None
            assert conn is not None
            self._conn = conn
            self._on_state(True)
            log.info("link_up", peer_party=self.peer_party, address=self.address)
            return conn

    def usable_connection(self) -> ClientConnection | None:
        """The current connection if it is up and taking frames; never connects."""
        conn = self._conn
        return conn if conn is not None and conn.usable else None

    def connection_now(self, timeout: float) -> ClientConnection | None:
        """The usable connection, or one attempt to open it within `timeout` seconds: for calls
        with a deadline, which cannot wait out the relay's backoff. None when the peer cannot
        be reached in time (down, refusing, or another thread is already retrying)."""
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._stopped.is_set() or not self._connect_lock.acquire(timeout=max(timeout, 0.0)):
            return None
        try:
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            if conn is not None:
                self._on_state(False)
            opening = self._connector(self.peer_party, self.address)
            attempt: concurrent.futures.Future[ClientConnection] = self._link_loop.submit(
                opening  # type: ignore[arg-type]  # an Awaitable that is a coroutine
            )
            try:
                conn = attempt.result(timeout=max(timeout, 0.001))
            except (
                OSError,
                PeerRefused,
                ProtocolError,
                TimeoutError,
                concurrent.futures.TimeoutError,
            ) as exc:
                attempt.cancel()
                if isinstance(exc, PeerRefused):
                    self._on_refused(exc.reason, exc.detail, self.address)
                log.info(
                    "link_connect_failed",
                    peer_party=self.peer_party,
                    address=self.address,
                    error=f"{type(exc).__name__}: {exc}",
                    attempt=1,
                )
                return None
            self._conn = conn
            self._on_state(True)
            log.info("link_up", peer_party=self.peer_party, address=self.address)
            return conn
        finally:
            self._connect_lock.release()

    def send(self, message_id: str, headers: Mapping[str, str], body: bytes) -> None:
        """Return once the peer ACKed; raise MessageRefused or LinkStopped."""
        while True:
            if self._stopped.is_set() and not self.connected:
                raise LinkStopped(f"link to party {self.peer_party} stopped")
            conn = self._connection()
            try:
                fut = conn.submit(message_id, headers, body)
            except LinkDown:
                continue
            try:
                result = fut.result(timeout=self._ack_timeout)
            except concurrent.futures.TimeoutError:
                log.warning(
                    "link_ack_timeout",
                    peer_party=self.peer_party,
                    message_id=message_id,
                    timeout_s=self._ack_timeout,
                )
                conn.abort()
                continue
            except LinkDown:
                continue
            if result is not None:
                raise MessageRefused(result)
            return

    def reconnect(self) -> None:
        """Close the current connection (after an identity change); the next send reconnects.
        Unacked frames fail with LinkDown and their senders resend them on the new one. Does
        not wait: a link that is down and retrying picks up the new identity on its next try."""
        conn = self._conn
        if conn is not None:
            conn.close()

    def stop_connecting(self) -> None:
        """No new connections (a send waiting for one gives up with LinkStopped); frames on the
        current connection still get their ACKs."""
        self._stopped.set()

    def stop(self) -> None:
        """No new connections; the current one closes (unacked frames return to the broker)."""
        self._stopped.set()
        conn = self._conn
        if conn is not None:
            conn.close()
