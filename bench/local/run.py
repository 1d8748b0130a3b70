"""CI time: `fedmq local up` + `fedmq local down --purge` of two parties, the broker
administered through the management HTTP API (what the launcher does now) against rabbitmqctl
(what it did before; FEDMQ_RABBIT_ADMIN_MODE=rabbitmqctl forces it), in the same run.

Two measurements per mode, alternating modes so that the machine's load hits both alike:
- "broker only": what `prepare` and `down --purge` do on the broker for two parties (a vhost
  and one user per service each, then both deleted), through the admin alone, no services;
- "up + down --purge": the real commands (`fedmq local up --parties 9999,10000`, services
  started and healthy; then `fedmq local down --purge`) as subprocesses, wall time each;
- "stop": stopping the 8 services of a healthy two-party stack one by one (`stop_service`
  each: what `down` did before) against `down` (every service signalled first, then all
  awaited together), on fresh stacks, alternating.

    .venv/bin/python bench/local/run.py [--reps 2] [--skip-stack]
    .venv/bin/python bench/local/run.py --stop-only [--reps 3]
Results: printed table, and bench/local/results.json (stop: bench/local/stop_results.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fedmq import local
from fedmq.rabbit_admin import RabbitAdminSettings, open_admin

PARTIES = ("9999", "10000")
MODES = ("rabbitmqctl", "http")
FEDMQ = str(Path(sys.executable).with_name("fedmq"))


def broker_only(mode: str) -> float:
    """Seconds for the broker part of a two-party up and purge through `mode`'s admin."""
    start = time.perf_counter()
    admin = open_admin(local.DEFAULT_AMQP, RabbitAdminSettings(mode=mode))
    prefix = f"fedmqb{uuid.uuid4().hex[:8]}"
    vhosts = [f"{prefix}-{party}" for party in PARTIES]
    for vhost in vhosts:
        local.ensure_vhost(vhost, admin=admin)
        known = local.existing_users(admin)
        for service in local.SERVICES:
            local.ensure_broker_user(vhost, service, uuid.uuid4().hex, known=known, admin=admin)
    for vhost in vhosts:
        local.delete_vhost(vhost, admin=admin)
    admin.close()
    return time.perf_counter() - start


def _fedmq(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([FEDMQ, "local", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fedmq local {args[0]}: {done.stdout[-800:]}{done.stderr[-800:]}")
    return time.perf_counter() - start


def stack(mode: str) -> tuple[float, float]:
    """(up seconds, down --purge seconds) of two parties through the CLI."""
    root = Path(tempfile.mkdtemp(prefix="fedmq-bench-local-"))
    env = {**os.environ, "FEDMQ_RABBIT_ADMIN_MODE": mode}
    prefix = f"fedmqs{uuid.uuid4().hex[:8]}"
    up = down = float("nan")
    try:
        up = _fedmq(
            env, "up", "--parties", ",".join(PARTIES), "--dir", str(root / "local"),
            "--prefix", prefix, "--base-port", "0",
        )  # fmt: skip
        down = _fedmq(env, "down", "--dir", str(root / "local"), "--purge")
    finally:
        if (root / "local" / local.STATE_FILE).exists():
            _fedmq(env, "down", "--dir", str(root / "local"), "--purge")
        shutil.rmtree(root, ignore_errors=True)
    return up, down


def stop(one_by_one: bool) -> float:
    """Seconds to stop a healthy two-party stack's services (no purge timed)."""
    root = Path(tempfile.mkdtemp(prefix="fedmq-bench-stop-"))
    saved = dict(os.environ)
    os.environ["FEDMQ_GATEWAY_API_TOKENS"] = f'["bench-{uuid.uuid4().hex}"]'
    try:
        state = local.up(
            list(PARTIES), root / "local", prefix=f"fedmqt{uuid.uuid4().hex[:8]}", federation="b"
        )
        start = time.perf_counter()
        if one_by_one:
            for party in PARTIES:
                for service in local.SERVICES:
                    local.stop_service(state, party, service)
        else:
            local.down(root / "local")
        seconds = time.perf_counter() - start
        local.down(root / "local", purge=True)
        return seconds
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--skip-stack", action="store_true", help="only the broker part")
    parser.add_argument("--stop-only", action="store_true", help="only the stop comparison")
    args = parser.parse_args()
    if args.stop_only:
        stops: dict[str, list[float]] = {"one_by_one_s": [], "all_at_once_s": []}
        for rep in range(args.reps):
            for one_by_one in (True, False) if rep % 2 == 0 else (False, True):
                key = "one_by_one_s" if one_by_one else "all_at_once_s"
                stops[key].append(stop(one_by_one))
            print({k: [round(x, 1) for x in v] for k, v in stops.items()}, flush=True)
        path = Path(__file__).with_name("stop_results.json")
        path.write_text(json.dumps({"load": os.getloadavg()[0], "runs": stops}, indent=2) + "\n")
        return
    rows: dict[str, dict[str, list[float]]] = {
        m: {"broker_only_s": [], "up_s": [], "down_purge_s": []} for m in MODES
    }
    load_before = os.getloadavg()[0]
    for rep in range(args.reps):
        for mode in MODES if rep % 2 == 0 else reversed(MODES):
            rows[mode]["broker_only_s"].append(broker_only(mode))
            if not args.skip_stack:
                up, down = stack(mode)
                rows[mode]["up_s"].append(up)
                rows[mode]["down_purge_s"].append(down)
            print(mode, {k: [round(x, 1) for x in v] for k, v in rows[mode].items()}, flush=True)
    medians = {m: {k: statistics.median(v) for k, v in r.items() if v} for m, r in rows.items()}
    print(f"\n{'':24}{'rabbitmqctl':>14}{'http':>10}{'ratio':>8}")
    for key in medians["http"]:
        before, after = medians["rabbitmqctl"][key], medians["http"][key]
        print(f"{key:24}{before:>13.1f}s{after:>9.1f}s{before / after:>7.1f}x")
    results = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "services": list(local.SERVICES),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "runs": rows,
        "medians": medians,
    }
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
