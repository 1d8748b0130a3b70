"""Where an empty pipeline's time goes: the bench's noop chain on the local two-party stack with
every process exporting its spans (OTLP/HTTP) to a receiver in this process, then one job's
trace laid out as a timeline.

    python bench/jobs/trace_empty.py                  # 20 components, warm-up + 3 traced runs
    python bench/jobs/trace_empty.py --components 5 --show 2

One job is one trace (the REST submit is its root). For the last run it prints, per party,
the median over components of each hop from one component's task span to the next one's
(task -> task.status success confirmed -> scheduler handler -> task.run confirmed -> worker
handler -> claim -> next task), matched by span parentage; --show N also lists every span
that descends from noop_1..noop_N, in start order. Spans are only exported when a process
flushes its batch, so the stack is stopped before the analysis. Exporting spans costs CPU:
the traced job is slower than the bench's untraced one.

Results go to bench/jobs/trace_results.json (the hop table) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from run import GUEST, HOST, Stack, chain_pipeline, uptime

HERE = Path(__file__).resolve().parent
# The receiver is the one tests/e2e/test_cross_party_trace.py uses (from the repo root).
sys.path.insert(0, str(HERE.parents[1]))
from tests.otlp_receiver import OtlpReceiver as Receiver  # noqa: E402
from tests.otlp_receiver import ReceivedSpan as Span  # noqa: E402

SERVICES = ("GATEWAY", "SCHEDULER", "WORKER")


def label(s: Span) -> str:
    who = "G" if s.party == GUEST else "H"
    comp = s.attrs.get("fedmq.component", "")
    return f"{who}.{s.service[:5]:<5} {s.name}" + (f" [{comp}]" if comp else "")


HOPS = (
    "task: component runs, then the final UPDATE",
    "publish task.status success (broker confirm)",
    "confirmed -> scheduler handler starts (delivery, queueing)",
    "scheduler handler until it publishes task.run",
    "publish task.run (broker confirm)",
    "confirmed -> worker handler starts",
    "worker handler (record task.run, commit)",
    "worker commit -> next task starts (wake, claim)",
)
CLAIM = "  of which the claim (UPDATE, running report, commit)"
TOTAL = "= one component, task start to the next task's start"


def critical_path(trace: list[Span], length: int) -> dict[str, list[tuple[str, float, int]]]:
    """Per party, the median duration of each hop from one component's task span to the next
    one's: task -> task.status success -> scheduler -> task.run -> worker -> claim -> task.
    Spans are matched by parent ids (the trace context rides in every envelope)."""
    children: dict[str, list[Span]] = {}
    for s in trace:
        children.setdefault(s.parent, []).append(s)

    def child(span: Span, name: str, last: bool = False) -> Span | None:
        found = sorted(
            (c for c in children.get(span.span_id, []) if c.name == name), key=lambda c: c.start_ns
        )
        return (found[-1] if last else found[0]) if found else None

    out: dict[str, list[tuple[str, float, int]]] = {}
    for party in (GUEST, HOST):
        samples: dict[str, list[float]] = {}

        def at(name: str, component: str, party: str = party) -> Span | None:
            for s in trace:
                if (
                    s.party == party
                    and s.name == name
                    and s.attrs.get("fedmq.component") == component
                ):
                    return s
            return None

        for i in range(length - 1):
            task = at("task noop", f"noop_{i}")
            nxt = at("task noop", f"noop_{i + 1}")
            if task is None or nxt is None:
                continue
            done = child(task, "publish task.status", last=True)
            handled = done and child(done, "handle task.status")
            run = handled and child(handled, "publish task.run")
            recorded = run and child(run, "handle task.run")
            if not (done and handled and run and recorded):
                continue
            points = [
                task.start_ns,
                done.start_ns,
                done.end_ns,
                handled.start_ns,
                run.start_ns,
                run.end_ns,
                recorded.start_ns,
                recorded.end_ns,
                nxt.start_ns,
            ]
            for hop, (a, b) in zip(HOPS, itertools.pairwise(points), strict=True):
                samples.setdefault(hop, []).append((b - a) / 1e6)
            # Older workers made no claim span (their running report was in no trace).
            claim = at("task claim", f"noop_{i + 1}")
            if claim is not None:
                samples.setdefault(CLAIM, []).append((claim.end_ns - claim.start_ns) / 1e6)
            samples.setdefault(TOTAL, []).append((nxt.start_ns - task.start_ns) / 1e6)
        out[party] = [(hop, statistics.median(v), len(v)) for hop, v in samples.items() if v]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--components", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--show", type=int, default=1, help="components printed span by span")
    ap.add_argument("--out", type=Path, default=HERE / "trace_results.json")
    args = ap.parse_args()

    receiver = Receiver()
    endpoint = f"http://127.0.0.1:{receiver.port}/{{party}}/v1/traces"
    for service in SERVICES:
        os.environ[f"FEDMQ_{service}_OTLP_ENDPOINT"] = endpoint
    root = Path(tempfile.mkdtemp(prefix="fedmq-bench-trace-"))
    os.chdir(root)
    stack = Stack(root)
    text = chain_pipeline(args.components)
    jobs: list[tuple[str, float]] = []
    before = uptime()
    try:
        guest, _host = stack.up()
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            job = guest.submit(text, job_id=f"trace-noop-{uuid.uuid4().hex[:8]}")
            done = guest.wait(job.job_id, timeout=120, poll=0.02)
            took = time.perf_counter() - started
            assert done.state == "success", done
            jobs.append((job.job_id, took))
            print(f"{job.job_id}: {took:.3f} s", flush=True)
    finally:
        stack.down()  # stopping flushes every process's span batch
    time.sleep(2)
    with receiver.lock:
        spans = list(receiver.spans)
    after = uptime()

    job_id = jobs[-1][0]
    trace_ids = {s.trace_id for s in spans if s.attrs.get("fedmq.job_id") == job_id}
    trace = [s for s in spans if s.trace_id in trace_ids]
    print(f"\njob {job_id}: {len(trace)} spans in {len(trace_ids)} trace(s)", file=sys.stderr)
    t0 = min(s.start_ns for s in trace)

    for i in range(1, 1 + args.show):
        comp = f"noop_{i}"
        mine = [s for s in trace if s.attrs.get("fedmq.component") == comp]
        # Plus the spans nested under them that carry no component (commits, claims, ...).
        ids = {s.span_id for s in mine}
        grew = True
        while grew:
            extra = [s for s in trace if s.parent in ids and s.span_id not in ids]
            grew = bool(extra)
            ids |= {s.span_id for s in extra}
            mine += extra
        base = min(s.start_ns for s in mine)
        print(f"\n--- {comp}: ms since its first span ---")
        for s in sorted(mine, key=lambda s: (s.start_ns, s.end_ns)):
            print(
                f"{(s.start_ns - base) / 1e6:8.1f} {(s.end_ns - base) / 1e6:8.1f} "
                f"{(s.end_ns - s.start_ns) / 1e6:6.1f}  {label(s)}"
            )

    hops = critical_path(trace, args.components)
    print("\n--- one component at one party, hop by hop (median ms over components) ---")
    for party, rows in hops.items():
        print(f"party {party}:")
        for name, ms, n in rows:
            print(f"  {ms:7.1f}  {name}  (n={n})")
    total = (max(s.end_ns for s in trace) - t0) / 1e9
    result: dict[str, Any] = {
        "jobs": [{"job_id": j, "submit_to_success_s": round(t, 3)} for j, t in jobs],
        "trace_span_s": round(total, 3),
        "uptime_before": before,
        "uptime_after": after,
        "hops_median_ms": {
            party: [{"hop": name, "ms": round(ms, 1), "n": n} for name, ms, n in rows]
            for party, rows in hops.items()
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
