"""Wiring of one party's gateway: identity, link server, peer links, relay, HTTP, signals.

`Gateway(settings).start()` runs everything on background threads (tests run several in one
process); `main()` is `python -m fedgateway`: settings from the environment, run in the shared
service shell (fedcommon.service.run_service: logging, tracing, SIGTERM/SIGINT -> graceful
stop), SIGHUP -> reload the identity after a key rotation.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
import uvicorn
from cryptography import x509
from fedbus import Bus, connect
from fedcommon.service import run_service
from opentelemetry.trace import Tracer

from fedgateway.allocator import keep_freed_memory
from fedgateway.api.app import create_app
from fedgateway.control import ControlConsumer
from fedgateway.framing import Hello
from fedgateway.link import (
    ClientConnection,
    FrameSender,
    LinkLoop,
    LinkServer,
    PeerLink,
    PeerRefused,
    client_context,
    open_client_connection,
    server_context,
)
from fedgateway.metrics import GatewayMetrics
from fedgateway.migrations import MIGRATIONS
from fedgateway.pki import CertificateRefused, PartyIdentity, PkiError
from fedgateway.relay import OutboundRelay, RelayInboundSession, RelayJobLog, Signer
from fedgateway.rpc import RpcCaller, RpcResponder
from fedgateway.settings import GatewaySettings, load_settings
from fedgateway.transport import TransportOptions
from fedgateway.verify import (
    FinishedAttempts,
    InMemoryFinishedAttempts,
    KeyRing,
    SqlFinishedAttempts,
    Verifier,
)

log = structlog.get_logger("fedgateway")

ROTATION_WAIT_S = 10.0
"""How long a key rotation waits for the links to re-open with the new HELLO before signing with
the new key."""

FRAME_OVERHEAD = 64 << 10
"""DATA frames carry an envelope plus seq, message id and bus headers: allow this much extra."""


class _Identity:
    """The current identity and everything derived from it, swapped atomically on reload."""

    def __init__(self, identity: PartyIdentity, keepalive_s: float) -> None:
        self.identity = identity
        self.server_context = server_context(identity)
        self.client_context = client_context(identity)
        self.hello = Hello(
            party_id=identity.party_id,
            certificates=(identity.certificate.pem, *(p.pem for p in identity.previous)),
            keepalive_s=keepalive_s or None,
        )
        self.signer = Signer(identity.signing_key, identity.key_id)
        self.stamp = _identity_stamp(identity.directory)


def _identity_stamp(directory: Path) -> tuple[float, ...]:
    names = ("tls.cert.pem", "tls.key.pem", "signing.key.pem", "ca.cert.pem")
    return tuple(
        (directory / n).stat().st_mtime if (directory / n).exists() else 0.0 for n in names
    )


class Gateway:
    """One party's gateway. Thread-based; `start` returns once the link port listens."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        bus: Bus | None = None,
        finished: FinishedAttempts | None = None,
        metrics: GatewayMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """`tracer`: where the relay's spans go (default: the process's provider)."""
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self._tracer = tracer
        self._current = _Identity(
            PartyIdentity.load(settings.identity_dir), settings.link_keepalive_s
        )
        self.party_id = self._current.identity.party_id
        if self.party_id != settings.party_id:
            raise PkiError(
                f"identity in {settings.identity_dir} is party {self.party_id}, "
                f"settings say party {settings.party_id}"
            )
        self._bus = bus
        self._owns_bus = bus is None
        self._finished = finished
        self.keyring = KeyRing(self._current.identity.ca_cert, revoked=settings.revoked)
        self._link_loop = LinkLoop(f"fedgateway-link-{self.party_id}", netns=settings.link_netns)
        self._transport = TransportOptions(
            congestion=settings.link_congestion, buffer_bytes=settings.link_buffer_bytes
        )
        self._max_frame_bytes = settings.max_envelope_bytes + FRAME_OVERHEAD
        self._server: LinkServer | None = None
        self._links: dict[str, PeerLink] = {}
        self._relay: OutboundRelay | None = None
        self._job_log = RelayJobLog()
        self._rpc_pool: ThreadPoolExecutor | None = None
        self._rpc_caller: RpcCaller | None = None
        self._rpc_responder: RpcResponder | None = None
        self._control: ControlConsumer | None = None
        self._http: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._reload_lock = threading.Lock()
        self.verifier: Verifier | None = None
        self.link_port = 0
        self.http_port = 0
        self.started = threading.Event()
        self.stopping = threading.Event()

    # --- identity --------------------------------------------------------------------------

    @property
    def ca_cert(self) -> x509.Certificate:
        return self._current.identity.ca_cert

    @property
    def key_id(self) -> str:
        return self._current.identity.key_id

    def reload_identity(self) -> bool:
        """Load the party directory again (after `fedmq pki install` of a rotated key).

        In two steps, so no peer sees a signature by a key it has not been shown: first new
        connections use the new certificates and the outbound connections are re-opened, so
        peers receive them in HELLO, while messages are still signed by the old key (whose
        certificate stays valid); once every link is up again (or after
        `ROTATION_WAIT_S`: a peer that is down gets the new HELLO before anything else), new
        signatures use the new key. A half-written directory is refused and the old identity
        kept. Returns whether the identity changed."""
        with self._reload_lock:
            try:
                new = _Identity(
                    PartyIdentity.load(self.settings.identity_dir),
                    self.settings.link_keepalive_s,
                )
            except (PkiError, OSError, ValueError, ssl.SSLError) as exc:
                log.warning("identity_reload_refused", error=str(exc))
                return False
            if (
                new.identity.certificate.fingerprint
                == self._current.identity.certificate.fingerprint
            ):
                self._current = new if new.stamp != self._current.stamp else self._current
                return False
            old_key = self._current.identity.key_id
            new_signer, new.signer = new.signer, self._current.signer
            self._current = new
            self.keyring.set_ca(new.identity.ca_cert)
            deadline = time.monotonic() + ROTATION_WAIT_S
            links_up = all(
                [
                    link.reconnect(wait=max(0.0, deadline - time.monotonic()))
                    for link in self._links.values()
                ]
            )
            new.signer = new_signer
            log.info(
                "identity_reloaded",
                old_key_id=old_key,
                key_id=new.identity.key_id,
                links_up=links_up,
            )
            return True

    def _watch_identity(self) -> None:
        interval = self.settings.identity_check_interval_s
        while not self._watch_stop.wait(interval):
            try:
                if _identity_stamp(self.settings.identity_dir) != self._current.stamp:
                    self.reload_identity()
            except OSError:
                continue

    # --- InboundHandler (used by LinkServer on the loop thread) ---------------------------

    def server_context(self) -> ssl.SSLContext:
        return self._current.server_context

    def local_hello(self) -> Hello:
        return self._current.hello

    def admit(self, peer_party: str, hello: Hello) -> None:
        if peer_party not in self.settings.peers:
            raise PeerRefused("unknown_party", f"party {peer_party} is not a configured peer")
        learned = 0
        for pem in hello.certificates:
            try:
                self.keyring.add_certificate(pem, party_id=peer_party)
                learned += 1
            except CertificateRefused as exc:
                # One stale certificate (expired earlier generation) must not block the link;
                # the current one is the TLS certificate, already verified by the handshake.
                log.info("peer_certificate_ignored", peer_party=peer_party, reason=exc.reason)
        if learned == 0:
            raise PeerRefused("no_valid_certificate", "HELLO carried no usable certificate")

    def open_session(self, peer_party: str, sender: FrameSender) -> RelayInboundSession:
        assert self.verifier is not None and self._bus is not None
        return RelayInboundSession(
            peer_party=peer_party,
            sender=sender,
            verifier=self.verifier,
            bus=self._bus,
            metrics=self.metrics,
            buffer_bytes=self.settings.inbound_buffer_bytes,
            tracer=self._tracer,
            job_log=self._job_log,
        )

    def on_request(self, peer_party: str, sender: FrameSender, body: bytes) -> None:
        assert self._rpc_responder is not None
        self._rpc_responder.on_request(peer_party, sender, body)

    def connection_refused(
        self, side: str, reason: str, detail: str, address: str, claimed_party: str | None
    ) -> None:
        self.metrics.connections_refused.labels(side, reason).inc()
        log.warning(
            "peer_refused",
            side=side,
            reason=reason,
            detail=detail[:300],
            address=address,
            claimed_party=claimed_party,
        )

    def _link_state(self, party: str, up: bool) -> None:
        self.metrics.link_state(party, up)

    # --- outbound connections -------------------------------------------------------------

    async def _connect(self, peer_party: str, address: str) -> ClientConnection:
        current = self._current
        conn = await open_client_connection(
            address,
            context=current.client_context,
            hello=current.hello,
            expected_party=peer_party,
            ca_cert=current.identity.ca_cert,
            max_frame_bytes=self._max_frame_bytes,
            ping_interval=self.settings.ping_interval_s,
            on_rtt=self.metrics.link_rtt.labels(peer_party).observe,
            dead_after=self.settings.link_dead_after_s,
            transport=self._transport,
        )
        for pem in conn.peer_hello.certificates:
            try:
                self.keyring.add_certificate(pem, party_id=peer_party)
            except CertificateRefused:
                continue
        return conn

    # --- lifecycle ------------------------------------------------------------------------

    def _make_finished_store(self) -> FinishedAttempts:
        url = self.settings.database_url.get_secret_value()
        store: FinishedAttempts
        if url:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, pool_pre_ping=True)
            MIGRATIONS.upgrade_head(engine)
            store = SqlFinishedAttempts(engine)
        else:
            store = InMemoryFinishedAttempts()
        return store

    def start(self) -> None:
        s = self.settings
        if self._bus is None:
            self._bus = connect(s.bus_url.get_secret_value())
        if self._finished is None:
            self._finished = self._make_finished_store()
        for job in s.finished_jobs:
            self._finished.finish_job(job)
        for job, attempt in s.finished_attempts.items():
            self._finished.finish_attempt(job, attempt)
        self.metrics.known_peers(s.peers)
        for party, peer in s.peers.items():
            for path in peer.certificates:
                try:
                    self.keyring.add_certificate(path.read_bytes(), party_id=party)
                except (CertificateRefused, OSError) as exc:
                    log.warning("peer_certificate_ignored", peer_party=party, error=str(exc))
        for topic in sorted(set(s.routes.values())):
            self._bus.declare(topic)
        self.verifier = Verifier(
            party_id=self.party_id,
            keyring=self.keyring,
            finished=self._finished,
            routes=s.routes,
            clock_window=dt.timedelta(seconds=s.clock_window_s),
            max_envelope_bytes=s.max_envelope_bytes,
        )
        self._rpc_pool = ThreadPoolExecutor(s.rpc_threads, thread_name_prefix="gw-rpc")
        self._rpc_responder = RpcResponder(
            self._bus,
            party_id=self.party_id,
            services={topic: frozenset(parties) for topic, parties in s.rpc_services.items()},
            signer=lambda: self._current.signer,
            verifier=self._require_verifier,
            metrics=self.metrics,
            max_timeout_s=s.rpc_max_timeout_s,
        )
        self._link_loop.start()
        self._server = LinkServer(
            self._link_loop,
            self,
            s.listen_host,
            s.listen_port,
            max_frame_bytes=self._max_frame_bytes,
            transport=self._transport,
        )
        self.link_port = self._server.start()
        for party, peer in s.peers.items():
            # Down until its first connection: a peer that never connects is a series at 0
            # (what the link-down alert fires on), not a missing series (which never fires).
            self.metrics.add_peer(party)
            self._links[party] = PeerLink(
                self._link_loop,
                party,
                peer.address,
                self._connect,
                ack_timeout=s.ack_timeout_s,
                on_refused=lambda reason, detail, address: self.connection_refused(
                    "client", reason, detail, address, None
                ),
                on_state=partial(self._link_state, party),
                streams=s.link_streams,
                stripe_bytes=s.link_stripe_bytes,
                stall_after=s.link_stall_after_s,
                compress_level=s.link_compress_level,
            )
        for party, link in self._links.items():
            self.metrics.link_transport.watch(
                party, link.tcp_infos, link.retransmits_total, link.compress_stats.copy
            )
        for link in self._links.values():
            link.start()  # open now and keep open: an idle healthy link is up (heartbeats)
        self._relay = OutboundRelay(
            self._bus,
            self._links,
            party_id=self.party_id,
            signer=lambda: self._current.signer,
            metrics=self.metrics,
            window=s.relay_window,
            max_deliveries=s.relay_max_deliveries,
            max_envelope_bytes=s.max_envelope_bytes,
            tracer=self._tracer,
            job_log=self._job_log,
        )
        self._relay.start()
        self._rpc_caller = RpcCaller(
            self._bus,
            self._links,
            party_id=self.party_id,
            signer=lambda: self._current.signer,
            verifier=self._require_verifier,
            metrics=self.metrics,
            executor=self._rpc_pool,
            max_envelope_bytes=s.max_envelope_bytes,
        )
        self._rpc_caller.start()
        self._control = ControlConsumer(self._bus, self._finished, party_id=self.party_id)
        self._control.start()
        self._start_http()
        if s.identity_check_interval_s > 0:
            threading.Thread(
                target=self._watch_identity, name="gw-identity-watch", daemon=True
            ).start()
        self.started.set()
        log.info(
            "gateway_started",
            party_id=self.party_id,
            link_port=self.link_port,
            http_port=self.http_port,
            peers=sorted(s.peers),
            key_id=self.key_id,
        )

    def _start_http(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.http_host, self.settings.http_port))
        sock.listen(64)
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self, fastapi_telemetry=self.settings.api_fastapi_telemetry),
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._http = uvicorn.Server(config)
        http = self._http
        self._http_thread = threading.Thread(
            target=lambda: http.run(sockets=[sock]), name="gw-http", daemon=True
        )
        self._http_thread.start()

    def health(self) -> dict[str, Any]:
        return {
            "status": "stopping"
            if self.stopping.is_set()
            else ("ok" if self.started.is_set() else "starting"),
            "party_id": self.party_id,
            "key_id": self.key_id,
            "link_port": self.link_port,
            "peers": {
                p: {"address": link.address, "connected": link.connected}
                for p, link in self._links.items()
            },
        }

    def _require_verifier(self) -> Verifier:
        assert self.verifier is not None
        return self.verifier

    def finish_attempt(self, job_id: str, attempt: int | None) -> None:
        """Operator / scheduler hook: messages of this job (attempt) are refused from now on."""
        assert self._finished is not None
        if attempt is None:
            self._finished.finish_job(job_id)
        else:
            self._finished.finish_attempt(job_id, attempt)
        log.info("replay_guard_updated", job_id=job_id, attempt=attempt)

    def stop(self) -> None:
        """Graceful: stop taking work, let in-flight messages finish (ACKed) or go back to their
        broker, then disconnect. Safe to call twice."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("gateway_stopping", party_id=self.party_id)
        self._watch_stop.set()
        grace = self.settings.shutdown_grace_s
        if self._server is not None:
            self._server.stop_accepting()
            self._server.say_goodbye()
        for link in self._links.values():
            link.stop_connecting()  # sends waiting for a (re)connection give up: requeued
        if self._relay is not None:
            self._relay.stop()  # in-flight sends finish with their ACK or are requeued
        if self._rpc_caller is not None:
            self._rpc_caller.stop()  # calls in flight get their reply or time out at the caller
        if self._control is not None:
            self._control.stop()
        for link in self._links.values():
            link.stop()
        if self._server is not None:
            deadline = threading.Event()
            waited = 0.0
            while waited < grace and any(s.buffered_bytes for s in self._server.sessions()):  # type: ignore[attr-defined]
                deadline.wait(0.05)
                waited += 0.05
            for session in self._server.sessions():
                session.close()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
        if self._bus is not None and self._owns_bus:
            self._bus.close()
        if self._rpc_pool is not None:
            self._rpc_pool.shutdown(wait=False, cancel_futures=True)
        self._link_loop.stop()
        log.info("gateway_stopped", party_id=self.party_id)


GC_THRESHOLDS = (7000, 10, 100)
"""gc.set_threshold once started: a young collection per 7,000 net new container objects, a
full one per 100 gen-1 ones (Python's defaults: 700, 10, 10)."""


def freeze_heap_once_started(started: threading.Event) -> None:
    """Once the gateway is started, take what is alive then (modules, the app, its routes and
    schemas: ~180,000 objects) out of the cyclic collector's reach for good (gc.freeze).
    Otherwise every full collection walks them all: 80-170 ms in which no other thread of the
    process runs, so every request in flight waits (the serving bench's p99, issue #15). What
    freezing costs: a reference cycle among those objects, if one is ever dropped, is never
    freed; start-up's garbage is collected first.

    Then fewer, larger young collections (GC_THRESHOLDS): at the defaults (700, 10, 10) the
    gateway under 300 predictions/s ran ~50 gen-1 collections (up to 9 ms of CPU each) and
    4-5 full ones (up to 15 ms) per 15 s; at these, none of either and a few gen-0 ones of
    2-3 ms (two alternating pairs, load 10-11; p99 178-374 ms against 527-847 ms)."""
    started.wait()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> None:
    settings = load_settings()
    keep_freed_memory()  # large bodies' buffers are reused, not mapped afresh (allocator.py)
    # The gateway serves /healthz and /metrics with its REST API, so the shell serves none.
    gateway: Gateway | None = None

    def build() -> Gateway:
        nonlocal gateway
        gateway = Gateway(settings)
        threading.Thread(
            target=freeze_heap_once_started, args=(gateway.started,), name="gw-gc", daemon=True
        ).start()
        return gateway

    def reload_identity() -> None:
        if gateway is not None:
            gateway.reload_identity()

    code = run_service("gateway", settings, build, on_reload=reload_identity)
    # run_service flushed the spans already; os._exit skips the atexit handlers, so nothing
    # that needs them may come after it.
    os._exit(code)  # daemon threads (bus IO, uvicorn) must not hold the exit
