"""The gateway's settings: FEDMQ_GATEWAY_* environment variables, or a JSON file named by
FEDMQ_GATEWAY_SETTINGS_FILE (the local launcher writes one per party). Peers and routes are
settings, so adding a party to the federation is a settings change, not a code change."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

from fedcommon.settings import ServiceSettings, is_placeholder_secret
from fedschemas import topics
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

DEFAULT_ROUTES: dict[str, str] = dict(topics.GATEWAY_ROUTES)
"""Message-type prefix -> local topic where arriving messages are published (longest wins)."""

SETTINGS_FILE_ENV = "FEDMQ_GATEWAY_SETTINGS_FILE"

PLACEHOLDER_API_TOKEN = "changethis"  # noqa: S105  # a known placeholder, refused in production
"""The development default of `api_tokens`: refused outside environment=development."""
MIN_API_TOKEN_LENGTH = 16


class PeerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    """host:port of the peer gateway's link listener."""
    certificates: list[Path] = Field(default_factory=list)
    """Optional certificate files of the peer, learned before its first connection (e.g. to
    verify messages signed by a key it no longer announces). Normally peers announce their own
    certificates in the link HELLO and nothing is needed here."""

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("peer address must be host:port")
        return value


class GatewaySettings(ServiceSettings):
    service_name: ClassVar[str] = "gateway"
    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_GATEWAY_",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        env_nested_delimiter="__",
    )

    identity_dir: Path = Path(".fedmq/identity")
    """The party directory written by `fedmq pki make-party` / `install`."""
    listen_host: str = "0.0.0.0"  # noqa: S104  # the link port faces other sites by design
    listen_port: int = 7443
    """The one link port (mutual TLS). 0 picks a free port (tests)."""
    http_host: str = "127.0.0.1"
    http_port: int = 8081
    """/healthz and /metrics (and the operator API). 0 picks a free port."""
    peers: dict[str, PeerSettings] = Field(default_factory=dict)
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    clock_window_s: float = 600.0
    """Messages whose created_at is further than this from our clock are refused as replays."""
    finished_jobs: list[str] = Field(default_factory=list)
    finished_attempts: dict[str, int] = Field(default_factory=dict)
    """job id -> highest finished attempt (attempts up to it are refused)."""
    revoked: list[str] = Field(default_factory=list)
    """Revoked certificate fingerprints or signing key ids."""
    relay_window: int = 96
    """Unacked frames in flight per peer (the prefetch of the ONE consumer of out.<peer> and the
    number of its sender threads: fedgateway.relay says why one). Throughput per peer is about
    window / (link round trip + remote publish-confirm latency): quorum-queue confirms take tens
    of milliseconds on a loaded machine, so this is large."""
    relay_max_deliveries: int = 15
    """A source message requeued this often (gateway stops mid-send) is dead-lettered. Must stay
    below the amqp bus's broker x-delivery-limit (20 by default)."""
    ack_timeout_s: float = 30.0
    ping_interval_s: float = Field(default=5.0, ge=0)
    """How often each outbound link sends a PING to measure its round trip
    (fedmq_gateway_link_rtt_seconds); 0: never."""
    link_keepalive_s: float = Field(default=0.5, ge=0, le=60)
    """As a link server: a heartbeat frame goes to each connected peer this often, whether or
    not the gateway is reading (announced in HELLO_OK; 0: none, peers cannot judge liveness)."""
    link_dead_after_s: float = Field(default=2.5, ge=0)
    """As a link client: an outbound connection on which nothing (heartbeat, PONG, ACK) arrived
    for this long is dropped and the link reported down (at least 3 peer heartbeats; 0: never,
    only the ACK timeout and TCP notice a dead link)."""
    link_netns: str = ""
    """Network namespace (as made by `ip netns add`) the link's sockets live in; "" for the
    gateway's own. The broker, database and HTTP stay in the gateway's namespace (docs/wan.md)."""
    link_congestion: str = "bbr"
    """TCP congestion control of the link's sockets ("" keeps the kernel's default); BBR keeps
    its rate on a lossy WAN where CUBIC collapses (docs/wan.md)."""
    link_buffer_bytes: int = Field(default=0, ge=0)
    """Send/receive buffer per link socket: the path's bandwidth-delay product (e.g. 1 Gbit/s x
    80 ms = 10 MB); 0: kernel autotuning."""
    link_streams: int = Field(default=4, ge=1, le=64)
    """TLS connections kept open per peer; large bodies are striped across all of them. Four
    carry about twice what one does on a lossy WAN (docs/wan.md); on a LAN the extra three
    cost three idle connections."""
    link_stripe_bytes: int = Field(default=8 << 20, ge=0)
    """Bodies at least this large are striped in chunks ACKed one by one (0: never)."""
    link_stall_after_s: float = Field(default=5.0, gt=0)
    """A link stream with striped chunks in flight and no chunk ACKed for this long is routed
    around."""
    link_compress_level: int = Field(default=1, ge=0, le=19)
    """zstd level of DATA bodies sent to a peer that announced "zstd", when samples of a body
    show it compresses (ciphertexts do not, and are sent as they are); 0: never compress
    (docs/wan.md, "Compression")."""
    rpc_services: dict[str, list[str]] = Field(default_factory=dict)
    """Request/reply: local service topic -> the peer parties that may call it ("*": every
    configured peer). A call to a service not listed here is refused (`not_exposed`)."""
    rpc_max_timeout_s: float = 60.0
    """A call whose deadline lies further ahead is refused: it bounds how long a captured
    request stays usable."""
    rpc_threads: int = 32
    """Threads that open a peer's link for calls made while it is down. Calls in flight hold no
    thread: the link loop verifies replies and awaits local services' answers (issue #15)."""
    max_envelope_bytes: int = 1 << 30
    inbound_buffer_bytes: int = 64 << 20
    """Per peer: bytes taken off the link but not yet published (backpressure beyond this)."""
    shutdown_grace_s: float = 10.0
    identity_check_interval_s: float = 2.0
    """How often the identity files are checked for a completed rotation (0 = only SIGHUP)."""
    api_fastapi_telemetry: bool = False
    """FastAPI's own OpenTelemetry spans on every REST request (a second server span and one
    each for dependencies, endpoint and serialization), beside the gateway's own span and
    metrics per request, which are always there. Off: five spans per request cost the serving
    path's CPU (issue #15)."""
    api_tokens: list[SecretStr] = Field(default_factory=lambda: [SecretStr(PLACEHOLDER_API_TOKEN)])
    """Bearer tokens the REST API (/api/v1) accepts (`Authorization: Bearer <token>`); several
    let a token be rotated without downtime; empty: every API request is refused. As JSON in
    FEDMQ_GATEWAY_API_TOKENS, e.g. '["..."]'. Outside development each must be a real secret of
    at least MIN_API_TOKEN_LENGTH characters (the placeholder default is refused)."""

    @model_validator(mode="after")
    def _real_api_tokens(self) -> GatewaySettings:
        if self.environment == "development":
            return self
        for token in self.api_tokens:
            value = token.get_secret_value()
            if is_placeholder_secret(value) or len(value) < MIN_API_TOKEN_LENGTH:
                raise ValueError(
                    "api_tokens: a placeholder or short token (under "
                    f"{MIN_API_TOKEN_LENGTH} characters) is refused outside "
                    "environment=development"
                )
        return self


def load_settings(**overrides: object) -> GatewaySettings:
    """Settings from the environment, under a JSON file named by FEDMQ_GATEWAY_SETTINGS_FILE."""
    data: dict[str, object] = {}
    path = os.environ.get(SETTINGS_FILE_ENV)
    if path:
        data.update(json.loads(Path(path).read_text()))
    data.update(overrides)
    return GatewaySettings(**data)  # type: ignore[arg-type]
