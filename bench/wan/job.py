"""A hetero_lr job's wall time with the site link through the WAN emulator vs on loopback
(issue #19's second benchmark), in the same run, on the same two-party stack.

The local two-party stack (`fedmq local up`: every party's gateway, scheduler, worker and
audit as separate processes on RabbitMQ, PostgreSQL and Redis over loopback) runs psi +
hetero_lr (2048-bit keys) on default_credit (or breast). Between runs only the two gateways'
link changes, by their settings file and a restart of both gateways:

- "loopback": the link's sockets on 127.0.0.1 (the launcher's layout).
- "wan": the guest's link in the emulator's namespace a (10.213.0.1), the host's in b
  (10.213.0.2) (`link_netns`), the path at `--rtt-ms` / `--loss-pct` (infra/wan/wan.sh).
  Brokers, databases and the REST API stay on loopback: only gateway-to-gateway traffic
  crosses the emulated WAN, as between two sites.

Both settings use the link docs/wan.md recommends for a WAN (`link_streams` 4,
`link_buffer_bytes` = 1 Gbit/s x RTT, BBR), so the path is the only difference. The order is
loopback, wan, wan, loopback (`--rounds 2`), so a load that drifts does not favour one side.
The gateways restart when the mode changes; `--restart-each` restarts them before every run
as well, so every job starts on freshly connected links.

    .venv/bin/python bench/wan/job.py --data default_credit --epochs 1
Results: printed, and bench/wan/job_results.json. Needs root, gcc, iproute2, iptables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.local_stack, tests.wan.emulator

from fedmq import local  # noqa: E402
from tests.local_stack import GUEST, HOST, two_parties, upload_breast  # noqa: E402
from tests.wan.emulator import ADDRESS_A, ADDRESS_B, WanEmulator, missing_requirements  # noqa: E402

AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PG = os.environ.get("FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

PIPELINE = """
name: wan-bench-{data}
parties: {{guest: "{guest}", host: ["{host}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {data}_hetero_guest}}
      host: {{table: {data}_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: {epochs}, batch_size: {batch}, learning_rate: 1.0, seed: 0}}
"""


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _upload(stack: Any, data: str) -> None:
    if data == "breast":
        upload_breast(stack)
    else:
        folder = REPO / "examples" / "data"
        stack.guest.upload_table(
            "default_credit_hetero_guest",
            folder / "default_credit_hetero_guest.csv",
            label_column="y",
            replace=True,
        )
        stack.host.upload_table(
            "default_credit_hetero_host", folder / "default_credit_hetero_host.csv", replace=True
        )
    stack.host.grant(f"{data}_hetero_host", GUEST, ["psi", "hetero_lr"])


def _link_settings(state: Any, mode: str, wan: WanEmulator, rtt_ms: float) -> dict[str, Any]:
    """Each party's gateway overrides for `mode`."""
    common = {
        "link_streams": 4,
        # bandwidth x RTT at 1 Gbit/s (docs/wan.md), at least 4 MiB
        "link_buffer_bytes": max(4 << 20, int(125_000_000 * rtt_ms / 1000)),
    }
    ports = {p: state.parties[p].link_port for p in (GUEST, HOST)}
    if mode == "loopback":
        return {
            party: {
                **common,
                "listen_host": "127.0.0.1",
                "link_netns": "",
                "peers": {other: {"address": f"127.0.0.1:{ports[other]}"}},
            }
            for party, other in ((GUEST, HOST), (HOST, GUEST))
        }
    where = {GUEST: (wan.ns_a, ADDRESS_A), HOST: (wan.ns_b, ADDRESS_B)}
    return {
        party: {
            **common,
            "listen_host": "0.0.0.0",  # inside its namespace
            "link_netns": where[party][0],
            "peers": {other: {"address": f"{where[other][1]}:{ports[other]}"}},
        }
        for party, other in ((GUEST, HOST), (HOST, GUEST))
    }


def _gauge(port: int, name: str, peer: str) -> float | None:
    """A per-peer sample from a gateway's /metrics (None: not there)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'peer="{peer}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def _link_up(port: int, peer: str) -> bool:
    return _gauge(port, "fedmq_gateway_link_up", peer) == 1.0


def _link_tcp(stack: Any) -> dict[str, float | None]:
    """The guest's link to the host as the kernel sees it (TCP_INFO of the open streams): the
    proof that the link crossed the emulator (RTT) and met its loss (retransmissions)."""
    port = stack.http_port(GUEST, "gateway")
    return {
        "link_rtt_ms": round(
            (_gauge(port, "fedmq_gateway_link_tcp_rtt_seconds", HOST) or 0) * 1e3, 1
        ),
        "link_retransmits": _gauge(port, "fedmq_gateway_link_tcp_retransmits_total", HOST),
    }


def _switch(stack: Any, mode: str, wan: WanEmulator, rtt_ms: float) -> None:
    """Rewrite both gateways' settings for `mode`, restart them, wait until each one's link to
    the other is up."""
    for party, overrides in _link_settings(stack.state, mode, wan, rtt_ms).items():
        local.update_gateway_settings(stack.state, party, **overrides)
    for party in (GUEST, HOST):
        local.restart(stack.local_dir, party, "gateway")
    deadline = time.monotonic() + 90
    for party, peer in ((GUEST, HOST), (HOST, GUEST)):
        while not _link_up(stack.http_port(party, "gateway"), peer):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{party}'s link to {peer} not up in {mode} mode")
            time.sleep(0.5)


def _keep_logs(stack: Any, where: Path) -> None:
    """Copy every service's log to `where` before the stack is torn down."""
    import shutil

    where.mkdir(parents=True, exist_ok=True)
    for party in (GUEST, HOST):
        for service in local.SERVICES:
            source = local.log_file(stack.state, party, service)
            if source.exists():
                shutil.copy(source, where / f"{party}-{service}.log")


def run(
    data: str,
    epochs: int,
    rounds: int,
    rtt_ms: float,
    loss_pct: float,
    restart_each: bool = False,
    keep_logs: str = "",
) -> dict[str, Any]:
    why = missing_requirements()
    if why is not None:
        raise SystemExit(why)
    batch = 2000 if data == "default_credit" else 256
    text = PIPELINE.format(data=data, guest=GUEST, host=HOST, epochs=epochs, batch=batch)
    order: list[str] = []
    for round_ in range(rounds):
        pair = ["loopback", "wan"]
        order += pair if round_ % 2 == 0 else pair[::-1]
    times: dict[str, list[float]] = {"loopback": [], "wan": []}
    runs: list[dict[str, Any]] = []
    load_start = _load()
    wan = WanEmulator(f"fwj{os.getpid() % 100000}")
    wan.up(rtt_ms=rtt_ms, loss_pct=loss_pct, rate_mbit=1000)
    try:
        with two_parties(
            amqp_url=AMQP,
            redis_url=REDIS,
            pg_admin_url=PG,
            token="bench-" + uuid.uuid4().hex,
            label="wjob",
        ) as stack:
            _upload(stack, data)
            current = ""
            for i, mode in enumerate(order):
                if mode != current or restart_each:
                    _switch(stack, mode, wan, rtt_ms)
                    current = mode
                load = _load()
                started = time.perf_counter()
                submitted = stack.guest.submit(text, job_id=f"wan-bench-{i}-{mode}")
                ended = stack.guest.wait(submitted.job_id, timeout=1800, poll=0.5)
                took = round(time.perf_counter() - started, 2)
                if ended.state != "success":
                    raise RuntimeError(f"{mode} job {ended.state}: {ended.reason}")
                times[mode].append(took)
                runs.append({"mode": mode, "job_s": took, "load_before": load, **_link_tcp(stack)})
                print(json.dumps(runs[-1]), flush=True)
            if keep_logs:
                _keep_logs(stack, Path(keep_logs))
    finally:
        wan.down()
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": data,
        "epochs": epochs,
        "batch_size": batch,
        "rtt_ms": rtt_ms,
        "loss_pct": loss_pct,
        "link": "4 streams, BBR, buffers = 1 Gbit/s x RTT (both modes)",
        "gateways_restarted": "before every run" if restart_each else "when the mode changes",
        "cpus": os.cpu_count(),
        "load_start": load_start,
        "load_end": _load(),
        "runs": runs,
        "job_s_loopback": times["loopback"],
        "job_s_wan": times["wan"],
        "ratio_wan_over_loopback": round(sum(times["wan"]) / sum(times["loopback"]), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("default_credit", "breast"), default="default_credit")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (ABBA order)")
    parser.add_argument("--rtt-ms", type=float, default=80)
    parser.add_argument("--loss-pct", type=float, default=1)
    parser.add_argument(
        "--restart-each",
        action="store_true",
        help="restart both gateways before every run, not only when the mode changes",
    )
    parser.add_argument("--keep-logs", default="", help="copy the services' logs to this folder")
    parser.add_argument("--out", default=str(Path(__file__).with_name("job_results.json")))
    args = parser.parse_args()
    result = run(
        args.data,
        args.epochs,
        args.rounds,
        args.rtt_ms,
        args.loss_pct,
        args.restart_each,
        args.keep_logs,
    )
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
