"""Site link over an emulated WAN (issue #19): throughput of a ciphertext-like transfer at the
seed's five (round trip, loss) points, against one plain CUBIC TCP stream through the same
emulator in the same run.

The emulator (infra/wan/wan.sh, docs/wan.md): namespaces a and b, a TUN-to-TUN delay stage,
iptables statistic loss on each side's ingress, a tbf cap (`--rate-mbit`). Rows per point:

- "cubic" (the baseline): one plain TCP socket with CUBIC a -> b, kernel-autotuned buffers,
  no TLS, sending as fast as it can for `--baseline-seconds`; counted at the receiver.
- "bbr_streams": `--streams` plain TCP sockets with BBR and `--buffer-mib` MiB buffers, no TLS
  (the TCP layer the link uses, without Python).
- "link_only": the link alone: LinkServer in b, PeerLink in a (mutual TLS, BBR, `--streams`
  streams, bodies striped in 1 MiB chunks), `--message-mib` MiB random bodies ACKed on arrival.
- "link" (gateway to gateway): two gateways on memory:// brokers, each one's link loop in one
  namespace, each in its own process as deployed (the receiving gateway and its consumer run
  in a child process; row "gateway_1p" runs both in this process, as this bench did before);
  federation.data messages with a `--message-mib` MiB random blob (a ciphertext_vector:
  incompressible) published at out.<peer>, counted when the receiver's broker delivers them:
  signed, striped over TLS, verified, published. At most `--outstanding` messages in flight.
  Both processes raise glibc's malloc thresholds as `python -m fedgateway` does
  (fedgateway.allocator; `--malloc default` to compare). `--bus-frame-mib N` (an experiment,
  not a deployment setting) raises the memory:// buses' frame limit from fedbus's 8 MiB, so
  that a 32 MiB message is not chunked by the bus: fedbus hands chunked messages to the relay
  one at a time (docs/wan.md, "fourth session"), whole ones in groups sent side by side.
Transfers stop at `--size-mib` or after `--max-seconds`; throughput is bytes delivered over
the time from the first send to the last delivery.

    .venv/bin/python bench/wan/run.py                      # 256 MiB per point, 4 streams
    .venv/bin/python bench/wan/run.py --size-mib 1024      # the issue's 1 GiB
Results: printed, and bench/wan/results.json. Needs root, gcc, iproute2, iptables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.wan.emulator, tests.relay_helpers

import fedbus.in_memory_bus  # noqa: E402
from fedbus import Delivery, Message, connect  # noqa: E402
from fedgateway import link, pki  # noqa: E402
from fedgateway.allocator import keep_freed_memory  # noqa: E402
from fedgateway.framing import (  # noqa: E402
    DataFrame,
    FrameType,
    Hello,
    decode_data,
    encode_ack,
)
from fedgateway.main import Gateway  # noqa: E402
from fedgateway.transport import (  # noqa: E402
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    TCP_CONGESTION,
    TransportOptions,
)
from fedschemas import encode_envelope  # noqa: E402
from fedschemas.payloads import FederationData  # noqa: E402

from fedmq.local import free_port  # noqa: E402
from tests.relay_helpers import InProcessGateways  # noqa: E402
from tests.runtime.helpers import demo_envelope  # noqa: E402
from tests.wan.emulator import (  # noqa: E402
    ADDRESS_A,
    ADDRESS_B,
    WanEmulator,
    listen_in,
    missing_requirements,
    socket_in,
)

SENDER, RECEIVER = "9999", "10000"
POINTS = ((20, 0.01), (40, 0.1), (80, 1.0), (160, 2.0), (320, 4.0))
"""(round trip ms, loss % each way): the seed deck's table."""
SEED_PLAIN_MBPS = {20: 913, 40: 23.2, 80: 2.4, 160: 1.0, 320: 0.5}
SEED_PRO_MBPS = {20: 937, 40: 891, 80: 738, 160: 568, 320: 309}


def plain_tcp(
    wan: WanEmulator, seconds: float, congestion: str, streams: int = 1, buffer_bytes: int = 0
) -> float:
    """Mbit/s of `streams` plain TCP sockets a -> b with `congestion` for `seconds` (counted at
    the receiver; no TLS, no framing: what the kernel's TCP alone carries)."""
    listener = listen_in(wan.ns_b)
    if buffer_bytes:
        listener.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
    port = listener.getsockname()[1]
    received = [0]
    lock = threading.Lock()
    first: list[float] = []

    def receive(conn: socket.socket) -> None:
        conn.settimeout(seconds + 30)
        with conn:
            while True:
                try:
                    n = len(conn.recv(1 << 20))
                except OSError:
                    break
                if not n:
                    break
                with lock:
                    if not first:
                        first.append(time.monotonic())
                    received[0] += n

    def accept() -> None:
        for _ in range(streams):
            conn, _ = listener.accept()
            threading.Thread(target=receive, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    chunk = os.urandom(1 << 16)
    end = time.monotonic() + seconds

    def send() -> None:
        sock = socket_in(wan.ns_a)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, congestion.encode())
        if buffer_bytes:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
        sock.settimeout(30)
        sock.connect((ADDRESS_B, port))
        sock.settimeout(1.0)
        while time.monotonic() < end:
            try:
                sock.send(chunk)
            except TimeoutError:
                continue
        sock.close()

    senders = [threading.Thread(target=send, daemon=True) for _ in range(streams)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    stopped = time.monotonic()
    time.sleep(0.5)  # what was sent in the last moment still arrives
    listener.close()
    with lock:
        total = received[0]
    elapsed = stopped - first[0] if first else seconds
    return total * 8 / elapsed / 1e6


class _Sink:
    """The receiving side of the link-only run: counts DATA bodies and ACKs each at once."""

    def __init__(self, identity: pki.PartyIdentity, on_body: Callable[[int], None]) -> None:
        self._identity = identity
        self._on_body = on_body
        self._context = link.server_context(identity)

    def server_context(self) -> ssl.SSLContext:
        return self._context

    def local_hello(self) -> Hello:
        return Hello(party_id=self._identity.party_id, certificates=(), keepalive_s=0.5)

    def admit(self, peer_party: str, hello: Hello) -> None:
        return None

    def open_session(self, peer_party: str, sender: link.FrameSender) -> Any:
        on_body = self._on_body

        class Session:
            async def on_data(self, body: bytes | DataFrame) -> None:
                frame = body.whole() if isinstance(body, DataFrame) else decode_data(body)
                on_body(len(frame.body))
                sender.send(FrameType.ACK, encode_ack([frame.seq]))

            def close(self) -> None:
                return None

        return Session()

    def on_request(self, peer_party: str, sender: link.FrameSender, body: bytes) -> None:
        return None

    def connection_refused(self, *args: Any) -> None:
        print("refused", args, file=sys.stderr)

    @property
    def ca_cert(self) -> Any:
        return self._identity.ca_cert


def link_only(wan: WanEmulator, args: argparse.Namespace, root: Path) -> float:
    """Mbit/s of the link alone: LinkServer in b, PeerLink in a (mutual TLS, BBR, `--streams`
    streams, striping), bodies of random bytes ACKed on arrival (no envelope, no broker)."""
    pki.init_ca(root / "ca", "t")
    ids = {p: pki.ensure_party(root / "ca", p, root / p) for p in (SENDER, RECEIVER)}
    options = TransportOptions(buffer_bytes=args.buffer_mib << 20)
    got = [0]
    lock = threading.Lock()

    def on_body(n: int) -> None:
        with lock:
            got[0] += n

    loop_b = link.LinkLoop("bench-b", netns=wan.ns_b)
    loop_a = link.LinkLoop("bench-a", netns=wan.ns_a)
    loop_b.start()
    loop_a.start()
    server = link.LinkServer(
        loop_b,
        _Sink(ids[RECEIVER], on_body),  # type: ignore[arg-type]
        "0.0.0.0",
        0,
        max_frame_bytes=(args.message_mib + 1) << 20,
        transport=options,
    )
    port = server.start()
    client_ctx = link.client_context(ids[SENDER])
    hello = Hello(party_id=SENDER, certificates=(ids[SENDER].certificate.pem,))

    async def connect(peer: str, address: str) -> link.ClientConnection:
        return await link.open_client_connection(
            address,
            context=client_ctx,
            hello=hello,
            expected_party=peer,
            ca_cert=ids[SENDER].ca_cert,
            max_frame_bytes=(args.message_mib + 1) << 20,
            dead_after=2.5,
            transport=options,
        )

    peer = link.PeerLink(
        loop_a,
        RECEIVER,
        f"{ADDRESS_B}:{port}",
        connect,
        ack_timeout=120,
        on_refused=lambda *a: None,
        streams=args.streams,
        stripe_bytes=1 << 20,
    )
    peer.start()
    deadline = time.monotonic() + 60
    while peer.streams_up < args.streams and time.monotonic() < deadline:
        time.sleep(0.1)
    body = os.urandom(args.message_mib << 20)
    count = max(1, args.size_mib // args.message_mib)
    sent = [0]
    end = time.monotonic() + args.max_seconds

    def sender() -> None:
        while time.monotonic() < end:
            with lock:
                if sent[0] >= count:
                    return
                sent[0] += 1
            peer.send(uuid.uuid4().hex, {}, body)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(args.outstanding)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.max_seconds + 120)
    elapsed = time.monotonic() - started
    peer.stop()
    server.stop_accepting()
    loop_a.stop()
    loop_b.stop()
    return got[0] * 8 / elapsed / 1e6


def _payload(kind: str, nbytes: int) -> FederationData:
    """One federation.data payload of about `nbytes`: "ciphertext" (random bytes, as Paillier
    ciphertexts are: zstd cannot shrink them), "floats" (float64 normal values: hardly
    compressible either, about 4%), "bins" (int64 bin indices 0..31 of a binned feature
    matrix: very compressible)."""
    rng = np.random.default_rng(19)
    if kind == "ciphertext":
        return FederationData(
            kind="ciphertext_vector", blob=os.urandom(nbytes), blob_format="fedcrypto.paillier.v1"
        )
    if kind == "floats":
        return FederationData(kind="aggregate", array=rng.normal(size=nbytes // 8))
    if kind == "bins":
        return FederationData(kind="aggregate", array=rng.integers(0, 32, size=nbytes // 8))
    raise ValueError(f"unknown payload {kind!r}")


READY, DELIVERED = "wan-bench-ready", "wan-bench-delivered"
DELIVERED_PATTERN = re.compile(rf"{DELIVERED} (\d+)")


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_memory_bus_frame(nbytes: int) -> None:
    """Make `nbytes` the default frame limit of the memory:// buses this process connects (the
    gateways connect theirs from a URL, which has no such option)."""
    defaults = fedbus.in_memory_bus.InMemoryBus.__init__.__kwdefaults__
    assert defaults is not None and "max_frame_bytes" in defaults
    defaults["max_frame_bytes"] = nbytes


def receiver_main(settings_file: str) -> None:
    """The receiving gateway of a two-process run (`--receiver FILE`): starts the gateway from
    the settings in FILE, subscribes a consumer at svc.worker on its memory:// broker, prints
    READY, then DELIVERED and the length of each delivered body, one a line (among the
    gateway's log lines); stops when stdin closes."""
    from fedgateway.settings import GatewaySettings

    data = json.loads(Path(settings_file).read_text())
    gateway = Gateway(GatewaySettings(**data))
    lock = threading.Lock()

    def handle(delivery: Delivery) -> None:
        with lock:
            sys.stdout.write(f"{DELIVERED} {len(delivery.body)}\n")
            sys.stdout.flush()

    gateway.start()
    try:
        consumer = connect(data["bus_url"])
        consumer.declare("svc.worker")
        consumer.subscribe("svc.worker", handle, prefetch=8)
        with lock:
            sys.stdout.write(f"{READY}\n")
            sys.stdout.flush()
        sys.stdin.read()  # until the parent closes it
    finally:
        gateway.stop()


def link_transfer(
    wan: WanEmulator, args: argparse.Namespace, root: Path, *, processes: int = 2
) -> tuple[float, float, int, dict[str, Any]]:
    """(Mbit/s, seconds, bytes delivered, stripe stats) of the gateway-to-gateway transfer.

    `processes` 2: the receiving gateway (and its consumer) runs in a child process, as two
    gateways do in a deployment (each has its own interpreter and GIL); 1: both gateways in
    this process (the bench before; kept to compare in the same run)."""
    name = f"wanb{uuid.uuid4().hex[:8]}"
    parties = InProcessGateways(root / name, [SENDER, RECEIVER], name, ping_interval_s=1.0)
    ports = {p: free_port() for p in (SENDER, RECEIVER)}
    common: dict[str, Any] = {
        "listen_host": "0.0.0.0",  # inside the emulator's namespace
        "link_streams": args.streams,
        "link_stripe_bytes": 1 << 20,
        "link_buffer_bytes": args.buffer_mib << 20,
        "ack_timeout_s": 120.0,
        "link_compress_level": args.compress_level,
    }
    receiver_settings = parties.settings(
        RECEIVER,
        listen_port=ports[RECEIVER],
        link_netns=wan.ns_b,
        peers={SENDER: {"address": f"{ADDRESS_A}:{ports[SENDER]}"}},
        **common,
    )
    sender = Gateway(
        parties.settings(
            SENDER,
            listen_port=ports[SENDER],
            link_netns=wan.ns_a,
            peers={RECEIVER: {"address": f"{ADDRESS_B}:{ports[RECEIVER]}"}},
            **common,
        )
    )
    delivered = [0, 0]  # bytes, messages
    slots = threading.Semaphore(args.outstanding)
    done = threading.Condition()

    def delivered_one(nbytes: int) -> None:
        with done:
            delivered[0] += nbytes
            delivered[1] += 1
            done.notify_all()
        slots.release()

    receiver: Gateway | None = None
    child: subprocess.Popen[str] | None = None
    try:
        if processes == 1:
            receiver = Gateway(receiver_settings)
            receiver.start()
            consumer = connect(parties.bus_url(RECEIVER))
            consumer.declare("svc.worker")
            consumer.subscribe("svc.worker", lambda d: delivered_one(len(d.body)), prefetch=8)
        else:
            settings_file = root / name / "receiver.json"
            data = {  # secrets as they are (mode="json" would mask them)
                k: v.get_secret_value() if isinstance(v, SecretStr) else v
                for k, v in receiver_settings.model_dump(exclude_unset=True).items()
            }
            settings_file.write_text(json.dumps(data, default=str))
            child = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--receiver",
                    str(settings_file),
                    "--malloc",
                    args.malloc,
                    "--bus-frame-mib",
                    str(args.bus_frame_mib),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            lines = child.stdout
            # The gateway logs to stdout too, from other threads, and a log line's newline can
            # come after one of these markers: look for them anywhere in a line.
            for line in lines:
                if READY in line:
                    break
            else:
                raise RuntimeError("the receiving gateway's process did not start")

            def read_deliveries() -> None:
                for line in lines:
                    for found in DELIVERED_PATTERN.finditer(line):
                        delivered_one(int(found.group(1)))

            threading.Thread(target=read_deliveries, daemon=True).start()
        sender.start()
        link = sender._links[RECEIVER]  # a benchmark's look inside
        deadline = time.monotonic() + 60
        while link.streams_up < args.streams and time.monotonic() < deadline:
            time.sleep(0.1)
        bus = connect(parties.bus_url(SENDER))
        # built before the clock starts: the publisher's own encoding is not the link's work
        payload = _payload(args.payload, args.message_mib << 20)
        messages = []
        for seq in range(max(1, args.size_mib // args.message_mib)):
            env = demo_envelope(
                payload,
                "wan-bench",
                seq,
                job_id="wan-bench",
            )
            messages.append(
                Message(
                    topic=f"out.{RECEIVER}", body=encode_envelope(env), message_id=env.message_id
                )
            )
        started = time.monotonic()
        # the CPU of both gateways, both buses and the consumer: the machine is shared, so
        # CPU per GiB says more than Mbit/s about what the path costs
        cpu_started = time.process_time() + (_proc_cpu_s(child.pid) if child else 0.0)
        end = started + args.max_seconds
        published = 0
        while published < len(messages) and time.monotonic() < end:
            if not slots.acquire(timeout=1.0):
                continue
            bus.publish(messages[published])
            published += 1
        with done:
            done.wait_for(
                lambda: delivered[1] >= published, timeout=max(1.0, end - time.monotonic() + 60)
            )
        elapsed = time.monotonic() - started
        cpu_s = time.process_time() + (_proc_cpu_s(child.pid) if child else 0.0) - cpu_started
        stats = {
            **link.stripe_stats,
            **link.compress_stats,
            "cpu_s": round(cpu_s, 1),
            "processes": processes,
        }
    finally:
        sender.stop()
        if receiver is not None:
            receiver.stop()
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return delivered[0] * 8 / elapsed / 1e6, elapsed, delivered[0], stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--message-mib", type=int, default=32)
    parser.add_argument("--outstanding", type=int, default=4)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--buffer-mib", type=int, default=16)
    parser.add_argument("--rate-mbit", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=90)
    parser.add_argument("--baseline-seconds", type=float, default=20)
    parser.add_argument("--points", default="", help="e.g. 80:1,160:2 (default: all five)")
    parser.add_argument("--prefix", default="fwb")
    parser.add_argument("--payload", choices=("ciphertext", "floats", "bins"), default="ciphertext")
    parser.add_argument(
        "--rows",
        default="bbr,link_only,gateway",
        help="rows besides the CUBIC baseline: bbr, bbr1 (one BBR stream), link_only, gateway "
        "(two processes), gateway_1p (both gateways in this process)",
    )
    parser.add_argument(
        "--compress-level", type=int, default=1, help="the gateways' link_compress_level (0: off)"
    )
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    parser.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: glibc's thresholds raised as `python -m fedgateway` does "
        "(fedgateway.allocator); default: glibc's defaults (to compare)",
    )
    parser.add_argument(
        "--bus-frame-mib",
        type=int,
        default=0,
        help="memory:// buses' frame limit in MiB (0: fedbus's default, 8 MiB); an experiment",
    )
    parser.add_argument("--receiver", help=argparse.SUPPRESS)  # the child of a two-process run
    args = parser.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()
    if args.bus_frame_mib:
        raise_memory_bus_frame(args.bus_frame_mib << 20)
    if args.receiver:
        receiver_main(args.receiver)
        return
    why = missing_requirements()
    if why is not None:
        sys.exit(why)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the emulator is taken down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    points = POINTS
    if args.points:
        points = tuple(
            (int(p.split(":")[0]), float(p.split(":")[1])) for p in args.points.split(",")
        )
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.release()}",
        "load_before": os.getloadavg(),
        "settings": vars(args),
        "points": [],
    }
    wan = WanEmulator(args.prefix)
    wan.up(rate_mbit=args.rate_mbit)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rtt, loss in points:
                wan.set(rtt_ms=rtt, loss_pct=loss, rate_mbit=args.rate_mbit)
                rows = set(args.rows.split(","))
                load_start = os.getloadavg()
                cubic = plain_tcp(wan, args.baseline_seconds, "cubic")
                bbr = 0.0
                if "bbr" in rows:
                    bbr = plain_tcp(
                        wan, args.baseline_seconds, "bbr", args.streams, args.buffer_mib << 20
                    )
                bbr1 = 0.0
                if "bbr1" in rows:
                    bbr1 = plain_tcp(wan, args.baseline_seconds, "bbr", 1, args.buffer_mib << 20)
                only = (
                    link_only(wan, args, Path(tmp) / f"only-{rtt}") if "link_only" in rows else 0.0
                )
                one: dict[str, Any] = {}
                if "gateway_1p" in rows:
                    mbps1, seconds1, nbytes1, stats1 = link_transfer(
                        wan, args, Path(tmp), processes=1
                    )
                    one = {
                        "gateway_1p_mbps": round(mbps1, 1),
                        "gateway_1p_seconds": round(seconds1, 1),
                        "gateway_1p_mib": round(nbytes1 / (1 << 20), 1),
                        "gateway_1p_cpu_s_per_gib": (
                            round(stats1["cpu_s"] * (1 << 30) / nbytes1, 1) if nbytes1 else None
                        ),
                        "gateway_1p_ratio": round(mbps1 / cubic, 1) if cubic else None,
                    }
                mbps, seconds, nbytes, stats = 0.0, 0.0, 0, {}
                if "gateway" in rows:
                    mbps, seconds, nbytes, stats = link_transfer(wan, args, Path(tmp))
                row = {
                    "rtt_ms": rtt,
                    "loss_pct": loss,
                    "link_mbps": round(mbps, 1),
                    "link_seconds": round(seconds, 1),
                    "link_mib": round(nbytes / (1 << 20), 1),
                    "link_cpu_s_per_gib": (
                        round(stats["cpu_s"] * (1 << 30) / nbytes, 1) if nbytes else None
                    ),
                    "cubic_mbps": round(cubic, 2),
                    "ratio": round(mbps / cubic, 1) if cubic else None,
                    "link_only_mbps": round(only, 1),
                    "link_only_ratio": round(only / cubic, 1) if cubic else None,
                    "bbr_streams_mbps": round(bbr, 1),
                    "bbr_ratio": round(bbr / cubic, 1) if cubic else None,
                    "bbr1_mbps": round(bbr1, 1),
                    **one,
                    "seed_plain_mbps": SEED_PLAIN_MBPS.get(rtt),
                    "seed_pro_mbps": SEED_PRO_MBPS.get(rtt),
                    "stripe": stats,
                    "load_start": load_start,
                    "load": os.getloadavg(),
                }
                results["points"].append(row)
                print(json.dumps(row), flush=True)
    finally:
        wan.down()
    results["load_after"] = os.getloadavg()
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
