"""The site link's TCP layer: congestion control, socket buffers, namespaces, TCP_INFO.

A WAN path between data centres has a large bandwidth-delay product and some loss. Loss-based
congestion control (CUBIC, the Linux default) halves its window at every loss: at 80 ms and 1%
loss one CUBIC stream carries a few Mbit/s whatever the link's capacity. BBR paces at the
bottleneck rate it measures and does not treat random loss as congestion, so the link's
sockets ask for it (TCP_CONGESTION) where the kernel offers it; the kernel's default is kept
where it does not (logged once). Buffers: a stream cannot have more than its send buffer in
flight, nor the peer more than its receive buffer unread, so both are sized to the
bandwidth-delay product the operator declares (`buffer_bytes`); they are set before connect /
listen, as the receive window's scale is fixed in the SYN. Without a declared size the kernel
autotunes them (up to net.ipv4.tcp_rmem / tcp_wmem).

`enter_netns` moves the calling thread into a named network namespace (/var/run/netns/<name>,
as made by `ip netns add`): the link loop's thread can live in a WAN-facing namespace (and the
WAN emulator's, docs/wan.md) while the rest of the gateway talks to its broker on loopback.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from dataclasses import dataclass

import structlog

log = structlog.get_logger("fedgateway.transport")

CLONE_NEWNET = 0x40000000
# SO_SNDBUFFORCE / SO_RCVBUFFORCE: like SO_SNDBUF / SO_RCVBUF but not capped by
# net.core.wmem_max / rmem_max (needs CAP_NET_ADMIN; the plain option is the fallback).
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
TCP_INFO = getattr(socket, "TCP_INFO", 11)
_warned: set[str] = set()


@dataclass(frozen=True)
class TransportOptions:
    """How the link's TCP sockets are set up (GatewaySettings.link_*)."""

    congestion: str = "bbr"
    """TCP congestion control; "" keeps the kernel's default."""
    buffer_bytes: int = 0
    """Send and receive buffer per socket (the path's bandwidth-delay product); 0: autotuned."""


def apply(sock: socket.socket, options: TransportOptions) -> None:
    """Set congestion control and buffers on a socket not yet connected or listening."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if options.congestion:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, options.congestion.encode())
        except OSError as exc:
            if options.congestion not in _warned:
                _warned.add(options.congestion)
                log.warning(
                    "link_congestion_unavailable", congestion=options.congestion, error=str(exc)
                )
    if options.buffer_bytes > 0:
        pairs = ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF))
        for force, plain in pairs:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, options.buffer_bytes)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, plain, options.buffer_bytes)


def congestion_of(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def listening_socket(host: str, port: int, options: TransportOptions) -> socket.socket:
    """A bound, listening, non-blocking socket; accepted sockets inherit its options."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        apply(sock, options)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def client_socket(host: str, options: TransportOptions) -> socket.socket:
    """An unconnected non-blocking socket for `host` (an address literal or name)."""
    info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    sock = socket.socket(info[0][0], socket.SOCK_STREAM)
    try:
        apply(sock, options)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class TcpInfo:
    """What the kernel knows of one TCP connection (struct tcp_info, linux/tcp.h)."""

    rtt_s: float
    retransmits_total: int
    """Segments retransmitted over the connection's life (tcpi_total_retrans)."""
    unacked: int
    """Segments sent and not yet acknowledged (tcpi_unacked): in flight."""
    snd_mss: int
    delivery_rate_bps: float
    """The kernel's latest delivery-rate sample (bytes/s; 0 on kernels without it)."""

    @property
    def bytes_in_flight(self) -> int:
        return self.unacked * self.snd_mss


# struct tcp_info up to tcpi_delivery_rate: 8 u8 fields, then u32 fields, then u64 fields.
_TCP_INFO_HEAD = struct.Struct("8B24I")
_TCP_INFO_U64 = struct.Struct("4Q")  # pacing_rate, max_pacing_rate, bytes_acked, bytes_received
# then six u32 (segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out)
_DELIVERY_OFFSET = _TCP_INFO_HEAD.size + _TCP_INFO_U64.size + 6 * 4


def tcp_info(sock: socket.socket) -> TcpInfo | None:
    """TCP_INFO of a connected socket; None where the kernel does not give it."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < _TCP_INFO_HEAD.size:
        return None
    fields = _TCP_INFO_HEAD.unpack_from(raw)
    u32 = fields[8:]
    # u32 order: rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets,
    # last_data_sent, last_ack_sent, last_data_recv, last_ack_recv, pmtu, rcv_ssthresh, rtt,
    # rttvar, snd_ssthresh, snd_cwnd, advmss, reordering, rcv_rtt, rcv_space, total_retrans
    delivery = 0.0
    if len(raw) >= _DELIVERY_OFFSET + 8:
        delivery = float(struct.unpack_from("Q", raw, _DELIVERY_OFFSET)[0])
    return TcpInfo(
        rtt_s=u32[15] / 1e6,
        retransmits_total=u32[23],
        unacked=u32[4],
        snd_mss=u32[2],
        delivery_rate_bps=delivery,
    )


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace `name` (sockets it creates from now on
    live there). Raises OSError if the namespace does not exist or may not be entered."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad network namespace name {name!r}")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)
