"""Site-link liveness benchmark: how fast a cut link is reported down, how fast it is back, and
whether a healthy idle link is ever reported down.

Two gateways in this process on memory:// brokers, the real link over loopback TLS; the sender
reaches the receiver's link port through a TCP relay that blackholes the path on demand (open
connections stay open, nothing passes, new connections are refused; tests/gateway/blackhole.py).

Measured, in one run:
- "heartbeats" (the defaults: the receiver sends a heartbeat every link_keepalive_s = 0.5 s,
  the sender drops a connection silent for link_dead_after_s = 2.5 s): for each of `--cuts`
  cuts, the time from the cut to fedmq_gateway_link_up = 0, and from mending the path to 1;
- baseline "no heartbeats" (link_keepalive_s = 0 at the receiver: the sender cannot judge
  silence, as before issue #21/#22): one cut of an idle link, watched for `--baseline-wait`
  seconds;
- false downs: reconnects of a healthy idle link over `--idle` seconds (must be 0).

    .venv/bin/python bench/gateway/liveness.py                 # 5 cuts, 40 s baseline, 60 s idle
    .venv/bin/python bench/gateway/liveness.py --cuts 3 --baseline-wait 10 --idle 10
Results: printed, and bench/gateway/liveness_results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # tests.gateway.blackhole, tests.relay_helpers

from fedgateway.main import Gateway  # noqa: E402

from fedmq.local import free_port  # noqa: E402
from tests.gateway.blackhole import Blackhole  # noqa: E402
from tests.relay_helpers import InProcessGateways  # noqa: E402

SENDER, RECEIVER = "9999", "10000"


@contextmanager
def linked(root: Path, **receiver_settings: Any) -> Iterator[tuple[Gateway, Blackhole]]:
    """The sender gateway (reaching the receiver through a Blackhole) and that Blackhole."""
    parties = InProcessGateways(root, [SENDER, RECEIVER], f"liveness-{uuid.uuid4().hex[:8]}")
    ports = {p: free_port() for p in (SENDER, RECEIVER)}
    path = Blackhole(ports[RECEIVER])
    receiver = Gateway(
        parties.settings(
            RECEIVER,
            listen_port=ports[RECEIVER],
            peers={SENDER: {"address": f"127.0.0.1:{ports[SENDER]}"}},
            **receiver_settings,
        )
    )
    sender = Gateway(
        parties.settings(
            SENDER,
            listen_port=ports[SENDER],
            peers={RECEIVER: {"address": f"127.0.0.1:{path.port}"}},
        )
    )
    try:
        receiver.start()
        sender.start()
        yield sender, path
    finally:
        sender.stop()
        receiver.stop()
        path.close()


def link_up(gateway: Gateway) -> float:
    value = gateway.metrics.registry.get_sample_value("fedmq_gateway_link_up", {"peer": RECEIVER})
    return 0.0 if value is None else value


def reconnects(gateway: Gateway) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "fedmq_gateway_link_reconnects_total", {"peer": RECEIVER}
    )
    return 0.0 if value is None else value


def seconds_until(gateway: Gateway, state: float, limit: float) -> float | None:
    """Seconds until the link's gauge reads `state` (None: not within `limit`)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if link_up(gateway) == state:
            return time.monotonic() - start
        time.sleep(0.01)
    return None


def run(cuts: int, baseline_wait: float, idle: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with linked(root / "hb") as (sender, path):
            assert seconds_until(sender, 1, 30) is not None, "the link never came up"
            start_reconnects = reconnects(sender)
            time.sleep(idle)
            results["idle_s"] = idle
            results["idle_false_downs"] = reconnects(sender) - start_reconnects
            downs, ups = [], []
            for _ in range(cuts):
                path.cut()
                downs.append(seconds_until(sender, 0, 60))
                path.mend()
                ups.append(seconds_until(sender, 1, 60))
                time.sleep(1.0)
            results["heartbeats"] = {
                "cut_to_down_s": downs,
                "mend_to_up_s": ups,
                "settings": {
                    "link_keepalive_s": sender.settings.link_keepalive_s,
                    "link_dead_after_s": sender.settings.link_dead_after_s,
                },
            }
        with linked(root / "nohb", link_keepalive_s=0) as (sender, path):
            assert seconds_until(sender, 1, 30) is not None, "the link never came up"
            path.cut()
            results["baseline_no_heartbeats"] = {
                "watched_s": baseline_wait,
                "cut_to_down_s": seconds_until(sender, 0, baseline_wait),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=5)
    parser.add_argument("--baseline-wait", type=float, default=40.0)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    results = run(args.cuts, args.baseline_wait, args.idle)
    results["machine"] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    hb = results["heartbeats"]
    found = [d for d in hb["cut_to_down_s"] if d is not None]
    print(f"idle {results['idle_s']:.0f} s: {results['idle_false_downs']:.0f} false downs")
    print(
        "heartbeats: cut -> down "
        + ", ".join("-" if d is None else f"{d:.2f}" for d in hb["cut_to_down_s"])
        + (f" s (median {statistics.median(found):.2f}, max {max(found):.2f})" if found else "")
    )
    print(
        "heartbeats: mend -> up "
        + ", ".join("-" if d is None else f"{d:.2f}" for d in hb["mend_to_up_s"])
        + " s"
    )
    base = results["baseline_no_heartbeats"]
    down = base["cut_to_down_s"]
    print(
        "baseline (no heartbeats): cut -> down "
        + (f"{down:.2f} s" if down is not None else f"not within {base['watched_s']:.0f} s")
    )
    (HERE / "liveness_results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
