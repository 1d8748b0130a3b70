"""Job runtime benchmark (issue #5): PSI end to end and an empty 20-component pipeline on the
local two-party stack, each against its in-process baseline, in one run.

    python bench/jobs/run.py                        # PSI at 100,000 and 1,000,000 ids per side
    python bench/jobs/run.py --ids 100000           # PSI at 100,000 only
    python bench/jobs/run.py --ids 0                # the empty pipeline only

The stack is what `fedmq local up` starts (tests/e2e/test_two_parties.py does the same): per
party a gateway, a scheduler and a worker as separate processes, a RabbitMQ vhost, a
PostgreSQL database and a Redis prefix, all removed again at the end (local.down(purge=True)).
Everything goes through the parties' REST APIs with the SDK, as a user would.

1. Empty pipeline: a chain of 20 `noop` components (noop_i takes noop_{i-1}.done as its
   `after` input, so they run one after another at both parties; nothing crosses the link).
   Measured: submit-to-success, from just before `Client.submit` at the guest until its job
   query says success (polled every 20 ms), and the scheduler's own created_at -> ended_at.
   Baseline: the same pipeline in standalone mode (fedflow.standalone.run_pipeline: both
   parties in this process, in-memory bus, SQLite). The first run of each is a warm-up.
2. PSI: each party's table is `id` + one feature; the guest holds ids 0..n-1, the host
   n/2..3n/2-1 (50% overlap). End to end = both uploads (CSV through the REST API), the grant,
   then submit of reader -> psi at the guest until success; the intersection size both parties
   report is checked against n/2. Baseline: bare fedcrypto.psi.PsiParty for both sides in this
   process, one thread, on the same ids. A job that has not ended after --psi-timeout seconds
   is stopped and recorded as not completed, with the tasks' states at that moment.

The machine's load average (`uptime`) is recorded before and after; results go to
bench/jobs/results.json (rewritten after every section, so an interrupted run keeps what it
measured).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fedcrypto.psi import PsiParty
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline

from fedmq import local
from fedmq.sdk import Client

HERE = Path(__file__).resolve().parent
GUEST, HOST = "9999", "10000"
AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN = os.environ.get(
    "FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


KNOWN_ISSUES: list[str] = []


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def chain_pipeline(length: int) -> str:
    lines = [
        f"name: noop-chain-{length}",
        "parties:",
        f'  guest: "{GUEST}"',
        f'  host: ["{HOST}"]',
        "components:",
    ]
    for i in range(length):
        lines += [f"  - name: noop_{i}", "    type: noop"]
        if i:
            lines.append(f"    inputs: {{after: noop_{i - 1}.done}}")
    return "\n".join(lines) + "\n"


def psi_pipeline(guest_table: str, host_table: str) -> str:
    return f"""name: psi-bench
parties:
  guest: "{GUEST}"
  host: ["{HOST}"]
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {guest_table}}}
      host: {{table: {host_table}}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
"""


def party_ids(n: int) -> tuple[list[str], list[str]]:
    """The guest's and the host's ids: n each, n // 2 shared, as short base-36 numbers."""
    guest = [np.base_repr(i, 36) for i in range(n)]
    host = [np.base_repr(i, 36) for i in range(n // 2, n // 2 + n)]
    return guest, host


def write_csv(path: Path, ids: list[str], seed: int) -> int:
    # Compact (a one-digit feature, base-36 ids): the bench measures PSI, not CSV parsing.
    # (Uploads larger than one bus frame once got no answer; they now travel in parts.)
    values = np.random.default_rng(seed).integers(0, 10, size=len(ids))
    body = "\n".join(f"{key},{v}" for key, v in zip(ids, values.tolist(), strict=True))
    path.write_text("id,x0\n" + body + "\n")
    return path.stat().st_size


def bare_psi(guest_ids: list[str], host_ids: list[str]) -> dict[str, Any]:
    """Both sides of one ECDH-PSI run in this process, one thread."""
    start = time.perf_counter()
    guest, host = PsiParty(), PsiParty()
    guest_blinded = guest.blind(guest_ids)
    host_blinded = host.blind(host_ids)
    guest_double = host.reblind(guest_blinded)
    host_double = guest.reblind(host_blinded)
    at_guest = guest.intersect(guest_double, host_double)
    at_host = host.intersect(host_double, guest_double)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "intersection_size": len(at_guest),
        "same_at_both": sorted(at_guest) == sorted(at_host),
        "ids_per_s_per_side": round(len(guest_ids) / seconds),
    }


class Stack:
    """Both parties' services under a scratch directory, with an API token of our own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = f"bench-{uuid.uuid4().hex}"
        self.state: local.LocalState | None = None
        self.guest: Client | None = None
        self.host: Client | None = None

    def up(self) -> tuple[Client, Client]:
        os.environ["FEDMQ_GATEWAY_API_TOKENS"] = f'["{self.token}"]'
        self.state = local.up(
            [GUEST, HOST],
            self.root / "local",
            prefix=f"fedmqb{uuid.uuid4().hex[:8]}",
            federation="bench",
            amqp_url=AMQP.rsplit("/", 1)[0],
            redis_url=REDIS.rsplit("/", 1)[0],
            pg_admin_url=PG_ADMIN,
        )
        for party in (GUEST, HOST):
            local.wait_healthy(self.state, party, timeout=120)
        ports = {p: self.state.parties[p].http_port for p in (GUEST, HOST)}
        self.guest = Client(f"http://127.0.0.1:{ports[GUEST]}", self.token, timeout=600)
        self.host = Client(f"http://127.0.0.1:{ports[HOST]}", self.token, timeout=600)
        return self.guest, self.host

    def down(self) -> None:
        for client in (self.guest, self.host):
            if client is not None:
                client.close()
        if (self.root / "local" / local.STATE_FILE).exists():
            local.down(self.root / "local", purge=True)


def where_the_time_goes(guest: Client, job_id: str, length: int) -> dict[str, float]:
    """Per party, the chain's time split into inside tasks (running -> success, as the
    scheduler recorded them) and between tasks (one's success -> the next one's start)."""
    out: dict[str, float] = {}
    tasks = guest.tasks(job_id)
    for party in sorted({t.party_id for t in tasks}):
        by_name = {t.component: t for t in tasks if t.party_id == party}
        chain = [by_name.get(f"noop_{i}") for i in range(length)]
        spans = [(t.started_at, t.ended_at) for t in chain if t is not None]
        if len(spans) != length or any(a is None or b is None for a, b in spans):
            continue
        inside = sum((b - a).total_seconds() for a, b in spans if a and b)
        between = sum(
            (nxt[0] - prev[1]).total_seconds()
            for prev, nxt in itertools.pairwise(spans)
            if prev[1] and nxt[0]
        )
        out[f"in_tasks_s_{party}"] = round(inside, 3)
        out[f"between_tasks_s_{party}"] = round(between, 3)
    return out


def empty_pipeline(guest: Client, length: int, repeats: int, workdir: Path) -> dict[str, Any]:
    text = chain_pipeline(length)
    pipeline = Pipeline.from_yaml(text)
    stack_runs: list[dict[str, float]] = []
    for _ in range(repeats + 1):  # the first is a warm-up
        started = time.perf_counter()
        job = guest.submit(text, job_id=f"bench-noop-{uuid.uuid4().hex[:8]}")
        done = guest.wait(job.job_id, timeout=120, poll=0.02)
        took = time.perf_counter() - started
        if done.state != "success":
            raise RuntimeError(f"empty pipeline ended {done.state}: {done.reason}")
        assert done.tasks_succeeded == done.tasks_total == 2 * length, done
        assert done.ended_at is not None
        server = (done.ended_at - done.created_at).total_seconds()
        stack_runs.append(
            {
                "submit_to_success_s": round(took, 3),
                "scheduler_s": round(server, 3),
                **where_the_time_goes(guest, job.job_id, length),
            }
        )
    standalone_runs: list[float] = []
    for i in range(repeats + 1):
        result = run_pipeline(pipeline, {}, workdir / f"standalone-{i}")
        assert all(t.state == "success" for t in result.tasks) and len(result.tasks) == 2 * length
        standalone_runs.append(round(result.seconds, 3))
    measured = [r["submit_to_success_s"] for r in stack_runs[1:]]
    return {
        "components": length,
        "tasks": 2 * length,
        "repeats": repeats,
        "target_s": 2.0,
        "stack_runs": stack_runs,
        "stack_median_s": round(statistics.median(measured), 3),
        "stack_best_s": min(measured),
        "stack_meets_target": statistics.median(measured) <= 2.0,
        "standalone_runs_s": standalone_runs,
        "standalone_median_s": round(statistics.median(standalone_runs[1:]), 3),
    }


def psi_end_to_end(
    guest: Client, host: Client, n: int, data_dir: Path, timeout: float
) -> tuple[dict[str, Any], list[str], list[str]]:
    guest_ids, host_ids = party_ids(n)
    guest_csv, host_csv = data_dir / f"guest_{n}.csv", data_dir / f"host_{n}.csv"
    csv_bytes = write_csv(guest_csv, guest_ids, 1) + write_csv(host_csv, host_ids, 2)
    guest_table, host_table = f"bench_guest_{n}", f"bench_host_{n}"
    out: dict[str, Any] = {"ids_per_side": n, "expected_intersection": n // 2}
    out["csv_mib_both"] = round(csv_bytes / 2**20, 1)

    started = time.perf_counter()
    guest.upload_table(guest_table, guest_csv, replace=True)
    host.upload_table(host_table, host_csv, replace=True)
    host.grant(host_table, GUEST, ["psi"])
    uploaded = time.perf_counter()
    job = guest.submit(
        psi_pipeline(guest_table, host_table), job_id=f"bench-psi-{n}-{uuid.uuid4().hex[:6]}"
    )
    try:
        done = guest.wait(job.job_id, timeout=timeout, poll=0.5)
    except TimeoutError:
        tasks = guest.tasks(job.job_id) + host.tasks(job.job_id)
        guest.stop(job.job_id, reason="benchmark timeout")
        out.update(
            completed=False,
            upload_and_grant_s=round(uploaded - started, 3),
            note=f"not finished within {timeout:.0f} s after submission; job stopped",
            tasks_at_timeout=[
                {"party": t.party_id, "component": t.component, "state": t.state} for t in tasks
            ],
        )
        return out, guest_ids, host_ids
    finished = time.perf_counter()
    if done.state != "success":
        raise RuntimeError(f"PSI job ended {done.state}: {done.reason}")
    size_guest = guest.metrics(job.job_id).value("psi_0", "intersection_size", GUEST)
    size_host = host.metrics(job.job_id).value("psi_0", "intersection_size", HOST)
    assert size_guest == size_host == n // 2, (size_guest, size_host)
    psi_task_s = {
        t.party_id: round((t.ended_at - t.started_at).total_seconds(), 3)
        for t in guest.tasks(job.job_id) + host.tasks(job.job_id)
        if t.component == "psi_0" and t.started_at is not None and t.ended_at is not None
    }
    out.update(
        completed=True,
        upload_and_grant_s=round(uploaded - started, 3),
        submit_to_success_s=round(finished - uploaded, 3),
        end_to_end_s=round(finished - started, 3),
        intersection_size=int(size_guest or 0),
        ids_per_s_per_side=round(n / (finished - started)),
        psi_task_s_by_party=psi_task_s,
    )
    return out, guest_ids, host_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ids", default="100000,1000000", help="PSI sizes per side, comma-separated")
    ap.add_argument("--components", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="timed empty-pipeline runs")
    ap.add_argument("--psi-timeout", type=float, default=360.0, help="seconds per PSI job")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.ids.split(",") if int(s) > 0]

    result: dict[str, Any] = {
        "benchmark": "job runtime: PSI end to end and an empty pipeline on the local stack",
        "stack": "fedmq local: 2 parties x (gateway, scheduler, worker) on RabbitMQ, "
        "PostgreSQL, Redis",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "uptime_before": uptime(),
        "known_issues": KNOWN_ISSUES,
    }

    def save() -> None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    root = Path(tempfile.mkdtemp(prefix="fedmq-bench-jobs-"))
    saved_cwd, saved_env = Path.cwd(), dict(os.environ)
    stack = Stack(root)
    try:
        os.chdir(root)  # the services' table files land under their cwd
        began = time.perf_counter()
        guest, host = stack.up()
        result["stack_up_s"] = round(time.perf_counter() - began, 1)
        print(f"stack up in {result['stack_up_s']} s", flush=True)

        result["empty_pipeline"] = empty_pipeline(guest, args.components, args.repeats, root)
        save()
        e = result["empty_pipeline"]
        print(
            f"empty {args.components}-component pipeline: stack median "
            f"{e['stack_median_s']} s, standalone median {e['standalone_median_s']} s",
            flush=True,
        )

        result["psi"] = []
        for n in sizes:
            run, guest_ids, host_ids = psi_end_to_end(guest, host, n, root, args.psi_timeout)
            print(f"psi {n}: end to end {run}", flush=True)
            result["psi"].append(run)
            save()
            run["baseline_bare_psi"] = bare_psi(guest_ids, host_ids)
            assert run["baseline_bare_psi"]["intersection_size"] == n // 2
            print(f"psi {n}: bare {run['baseline_bare_psi']}", flush=True)
            save()
    finally:
        try:
            stack.down()
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            shutil.rmtree(root, ignore_errors=True)
            result["uptime_after"] = uptime()
            save()

    print_table(result)


def print_table(result: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    e = result.get("empty_pipeline")
    if e:
        rows.append(
            (
                f"empty pipeline, {e['components']} noops (target <= 2 s)",
                f"{e['stack_median_s']:.3f} s (best {e['stack_best_s']:.3f})",
                f"{e['standalone_median_s']:.3f} s standalone",
            )
        )
    for run in result.get("psi", []):
        bare = run.get("baseline_bare_psi", {})
        base = f"{bare['seconds']:.1f} s bare PsiParty" if bare else "-"
        if run["completed"]:
            ours = (
                f"{run['end_to_end_s']:.1f} s (upload {run['upload_and_grant_s']:.1f} + job "
                f"{run['submit_to_success_s']:.1f})"
            )
        else:
            ours = "not completed: " + run["note"]
        rows.append((f"PSI {run['ids_per_side']:,} ids per side, end to end", ours, base))
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'measure':<{width}}  {'local two-party stack':<40}  baseline")
    for name, ours, base in rows:
        print(f"{name:<{width}}  {ours:<40}  {base}")
    print(f"uptime before: {result['uptime_before']}\nuptime after:  {result['uptime_after']}")


if __name__ == "__main__":
    main()
