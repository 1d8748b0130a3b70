"""What a job's audits record, message kind by message kind, and the audit's CPU per kind.

    .venv/bin/python bench/audit/census.py [--data breast|default_credit] [--epochs 1]
        [--baseline-src DIR] [--repeat 3]

Runs the psi + hetero_lr job on the local two-party stack (bench/audit/run.py job's set-up),
with a second fan-out subscription on each party's vhost (the audit's own patterns plus its
inbox, reports and serving topics) that keeps a copy of every message the party's audit is
given. After the job: each audit's records counted by direction, type and topic from its
database, and the copies replayed in this process, in the order they came, through a fresh
audit on PostgreSQL (one delivery per group, as a job's are), with each delivery's thread CPU
time summed per (direction, type). With --baseline-src (a directory holding another
version's `fedaudit` package) the copies are replayed through that version and this one
alternately, `--repeat` times each, in fresh processes.

Not a test: results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

import run as bench  # noqa: E402  (bench/audit/run.py: the job's set-up)


def capture(data: str, epochs: int) -> dict[str, Any]:
    """Run the job; return each party's messages as its audit was given them, and its
    records' census from its database."""
    import sqlalchemy as sa
    from fedaudit.settings import DEFAULT_PATTERNS
    from fedbus import connect
    from fedschemas import topics

    from tests.audit.test_stack import pipeline
    from tests.local_stack import two_parties, upload_breast

    patterns = (*DEFAULT_PATTERNS, topics.AUDIT, topics.AUDIT_REPORTS, topics.SERVING_EVENTS)
    redis = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    copies: dict[str, list[tuple[str, bytes]]] = {}
    census: dict[str, Any] = {}
    with two_parties(
        amqp_url=bench.AMQP,
        redis_url=redis,
        pg_admin_url=bench.PG,
        token="bench-" + uuid.uuid4().hex,
        label="census",
    ) as stack:
        if data == "default_credit":
            bench._upload_credit(stack)
            text = bench.CREDIT_PIPELINE.format(guest=bench.GUEST, host=bench.HOST, epochs=epochs)
        else:
            upload_breast(stack)
            stack.host.grant("breast_hetero_host", bench.GUEST, ["psi", "hetero_lr"])
            text = pipeline(epochs)
        buses, subscriptions = [], []
        for party, plan in stack.state.parties.items():
            got = copies.setdefault(party, [])
            bus = connect(plan.bus_url)
            bus.declare_fanout("census", patterns)
            subscriptions.append(
                bus.subscribe_fanout(
                    "census", patterns, lambda d, got=got: got.append((d.topic, d.body))
                )
            )
            buses.append(bus)
        submitted = stack.guest.submit(text, job_id=f"census-{uuid.uuid4().hex[:6]}")
        ended = stack.guest.wait(submitted.job_id, timeout=900, poll=0.5)
        assert ended.state == "success", ended.reason
        time.sleep(8)  # the last records, the job's statements and checkpoints
        for subscription in subscriptions:
            subscription.cancel()
        for bus in buses:
            bus.close()
        for party, plan in stack.state.parties.items():
            engine = sa.create_engine(
                plan.database_url.replace("postgresql://", "postgresql+psycopg://")
            )
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT direction, type, topic, size, findings FROM audit_records")
                ).all()
            engine.dispose()
            kinds: Counter[str] = Counter()
            sizes: defaultdict[str, int] = defaultdict(int)
            with_findings = 0
            for direction, type_, topic, size, found in rows:
                key = f"{direction} {type_} {topic}"
                kinds[key] += 1
                sizes[key] += size
                with_findings += found != "[]"
            census[party] = {
                "records": len(rows),
                "with_findings": with_findings,
                "copies": len(copies[party]),
                "by_kind": {k: [n, sizes[k]] for k, n in kinds.most_common()},
            }
    return {"census": census, "copies": copies}


def replay(copies: list[tuple[str, bytes]], party: str, profile: str = "") -> dict[str, Any]:
    """The copies through a fresh in-process audit of `party` on PostgreSQL, one delivery per
    group; thread CPU per (direction, type)."""
    import sqlalchemy as sa
    from fedaudit import handlers
    from fedaudit.auditor import direction_of
    from fedaudit.main import Audit
    from fedaudit.settings import AuditSettings
    from fedbus import Delivery, connect
    from fedcrypto.signing import SigningKey
    from fedschemas import MalformedMessage, decode_envelope, topics

    db = f"bench_census_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(bench.PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    audit = None
    try:
        settings = AuditSettings(
            party_id=party,
            bus_url="memory://unused",
            database_url=f"{bench.PG.rsplit('/', 1)[0]}/{db}",
            signing_key=SigningKey.generate().to_bytes().hex(),
            http_port=-1,
            log_json=False,
            log_level="ERROR",
        )
        audit = Audit(settings, bus=connect(f"memory://census-{db}"))
        handlers.load(audit.ctx)
        profiler = cProfile.Profile(time.thread_time) if profile else None
        if profiler is not None:
            profiler.enable()
        cpu: defaultdict[str, float] = defaultdict(float)
        count: Counter[str] = Counter()
        for i, (topic, body) in enumerate(copies):
            try:
                envelope = decode_envelope(body)
                key = f"{direction_of(topic, envelope, party)} {envelope.type}"
            except MalformedMessage:
                key = "undecodable"
            delivery = Delivery(
                topic=topic, body=body, message_id=f"m{i}", headers={}, delivery_count=1
            )
            started = time.thread_time()
            try:
                if topic == topics.AUDIT:
                    handlers.handle_inbox(audit.ctx, None, delivery)
                elif topic == topics.AUDIT_REPORTS:
                    handlers.handle_report(audit.ctx, delivery)
                elif topic == topics.SERVING_EVENTS:
                    handlers.handle_serving_event(audit.ctx, delivery)
                else:
                    handlers.handle_batch(audit.ctx, [delivery])
            except Exception as exc:  # a dead-letter (Reject) costs what it cost
                key += f" ({type(exc).__name__})"
            cpu[key] += time.thread_time() - started
            count[key] += 1
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        return {
            "fedaudit": str(Path(handlers.__file__).parent),
            "party": party,
            "messages": len(copies),
            "cpu_ms": round(sum(cpu.values()) * 1000, 1),
            "by_kind": {
                k: [count[k], round(cpu[k] * 1000, 2), round(cpu[k] * 1000 / count[k], 3)]
                for k in sorted(cpu, key=lambda k: -cpu[k])
            },
        }
    finally:
        if audit is not None:
            audit.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("breast", "default_credit"), default="breast")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--baseline-src", default="")
    parser.add_argument(
        "--current-src",
        default="",
        help="the version compared with --baseline-src's (default: this checkout's fedaudit)",
    )
    parser.add_argument("--profile", default="", help="cProfile one replay into this file")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--copies", default="", help="reuse the copies saved in this file")
    parser.add_argument("--replay", default="", help=argparse.SUPPRESS)  # file: one replay
    parser.add_argument("--party", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        copies = pickle.loads(Path(args.replay).read_bytes())["copies"][args.party]
        print(json.dumps(replay(copies, args.party, args.profile)))
        return 0
    if args.copies and Path(args.copies).exists():
        captured = pickle.loads(Path(args.copies).read_bytes())
    else:
        captured = capture(args.data, args.epochs)
        if args.copies:
            Path(args.copies).write_bytes(pickle.dumps(captured))
    print(json.dumps(captured["census"], indent=1))
    saved = args.copies or tempfile.mkstemp(prefix="census-", suffix=".pickle")[1]
    Path(saved).write_bytes(pickle.dumps(captured))
    versions = [("current", args.current_src)]
    if args.baseline_src:
        versions = [("baseline", args.baseline_src), *versions]
    totals: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.repeat):
        for label, src in versions:
            for party in captured["copies"]:
                extra = ["--profile", f"{args.profile}.{label}.{party}"] if args.profile else []
                env = {**os.environ, "PYTHONPATH": src} if src else dict(os.environ)
                out = subprocess.run(
                    [sys.executable, __file__, "--replay", saved, "--party", party, *extra],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                result = json.loads(out[out.index("{") :])
                if src and not result["fedaudit"].startswith(src):
                    raise RuntimeError(f"the baseline ran {result['fedaudit']}, not {src}")
                totals[f"{label} {party}"].append(result["cpu_ms"])
                print(json.dumps({"version": label, **result}, indent=1), flush=True)
    print(
        json.dumps(
            {
                "load": os.getloadavg(),
                "replay_cpu_ms": dict(totals),
                "medians": {k: statistics.median(v) for k, v in totals.items()},
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
