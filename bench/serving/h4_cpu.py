"""bench/serving/h4_cpu.py: the serving services' CPU per one-row request, before and after
(issue #15, session 10, helper H4).

The two-party stack of bench/serving/run.py (gateways, schedulers, workers on RabbitMQ,
PostgreSQL, Redis; a one-epoch hetero_lr job on the breast data, service `risk`), but only the
two serving services change between modes: "before" runs both parties' serving services on a
snapshot of the source tree whose services/serving and libs/common are those of `--baseline`,
"after" on a snapshot of this tree, both taken at start (so a commit made elsewhere meanwhile
changes neither). The gateways run this tree's code all through.

Per round, for each mode in turn (A B A B ...), both serving services are started on the mode's
code, warmed, and one client sends `--requests` one-row requests one after the other; each
process's CPU (user + system, /proc) is read around them: CPU ms per request per process. The
CPU clock, not wall time, is what this compares: the machine is shared, and a request's wall
time there is mostly waiting for a core.

`--profile DIR` also runs each serving process with FEDMQ_PROFILE_OUT=DIR/<mode>-<round>
(fedcommon.profiling: cProfile on every thread's own CPU clock) and prints the top functions.

    .venv/bin/python -m bench.serving.h4_cpu [--rounds 2] [--requests 1000]
        [--baseline bc40769] [--modes before,after] [--profile DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.serving.run import PIPELINE, ROOT, closed_loop, cpu_seconds, guest_rows, source_dirs
from fedmq import local
from tests.local_stack import GUEST, HOST, two_parties, upload_breast
from tests.serving.stack import SERVING_RPC_ENV, ServingProcess

BASELINE = "bc40769"
"""This session's start (before helper H4's changes)."""
BASELINE_DIRS = ("services/serving/src", "libs/common/src")


def snapshot(into: Path, ref: str | None) -> str:
    """A PYTHONPATH of a copy of this tree's sources, with BASELINE_DIRS at `ref` if given."""
    for src in source_dirs(ROOT):
        shutil.copytree(
            src, into / src.relative_to(ROOT), ignore=shutil.ignore_patterns("__pycache__")
        )
    if ref is not None:
        for folder in BASELINE_DIRS:
            shutil.rmtree(into / folder)
            archive = subprocess.run(
                ["git", "archive", "--format=tar", ref, folder],
                cwd=ROOT,
                check=True,
                capture_output=True,
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(into, filter="data")
    return os.pathsep.join(str(p) for p in source_dirs(into))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--modes", default="before,after")
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    modes = args.modes.split(",")
    amqp = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    redis_url = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    pg = os.environ.get(
        "FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    token = "bench-h4"
    # At load 15-40 a gateway takes more than the launcher's 30 s to import and start.
    local._wait_started.__defaults__ = (180.0,)
    scratch = Path(tempfile.mkdtemp(prefix="bench-h4-"))
    paths = {
        mode: snapshot(scratch / mode, args.baseline if mode == "before" else None)
        for mode in modes
    }
    results: list[dict[str, Any]] = []
    with two_parties(
        amqp_url=amqp,
        redis_url=redis_url,
        pg_admin_url=pg,
        token=token,
        label="h4cpu",
        env=SERVING_RPC_ENV,
    ) as stack:
        # A 5 s host deadline: at load 15-40 (and under the profiler) a call can take more than
        # the default 0.5 s, and a 503 would measure a different path.
        guest = ServingProcess(
            stack.state, GUEST, stack.root, rate_limit_rows_per_s="1000000", host_timeout_s="5"
        )
        host = ServingProcess(stack.state, HOST, stack.root, accept_models_from='["*"]')
        for process in (guest, host):
            process.env["PYTHONPATH"] = paths[modes[-1]]
            process.start()
        try:
            upload_breast(stack)
            stack.host.grant("breast_hetero_host", GUEST, ["psi", "hetero_lr"])
            job = stack.guest.submit(PIPELINE, job_id="serving-h4")
            assert stack.guest.wait(job.job_id, timeout=900).state == "success"
            api = f"{stack.guest.base_url}/api/v1/serving"
            headers = {"Authorization": f"Bearer {token}"}
            httpx.post(
                f"{stack.host.base_url}/api/v1/serving/features",
                headers=headers,
                json={"table": "breast_hetero_host"},
                timeout=60,
            ).raise_for_status()
            httpx.post(
                f"{api}/models",
                headers=headers,
                timeout=60,
                json={"job_id": job.job_id, "name": "credit", "guest_only": False},
            ).raise_for_status()
            httpx.post(
                f"{api}/services",
                headers=headers,
                timeout=60,
                json={"service_id": "risk", "name": "credit", "version": 1},
            ).raise_for_status()
            rows = guest_rows()
            url = f"{api}/risk/predict"

            def pids() -> dict[str, int]:
                found = {"client": os.getpid()}
                for party, side in ((GUEST, "guest"), (HOST, "host")):
                    pid = local.read_pid(stack.state, party, "gateway")
                    if pid is not None:
                        found[f"{side} gateway"] = pid
                for side, process in (("guest", guest), ("host", host)):
                    assert process.proc is not None
                    found[f"{side} serving"] = process.proc.pid
                return found

            def cpu() -> dict[str, float]:
                return {name: cpu_seconds(pid) for name, pid in pids().items()}

            for round_ in range(args.rounds):
                order = modes if round_ % 2 == 0 else modes[::-1]
                for mode in order:
                    out = None
                    for process in (guest, host):
                        process.stop()
                        process.env["PYTHONPATH"] = paths[mode]
                        if args.profile:
                            out = str(Path(args.profile).resolve() / f"{mode}-{round_}")
                            process.env["FEDMQ_PROFILE_OUT"] = out
                        process.start()
                    closed_loop(url, headers, rows, 50)  # connections, caches
                    before = cpu()
                    found = closed_loop(url, headers, rows, args.requests)
                    after = cpu()
                    per = {k: (after[k] - before[k]) * 1000 / args.requests for k in after}
                    found["cpu_ms_per_request"] = {
                        **{k: round(v, 3) for k, v in per.items()},
                        "serving both": round(per["guest serving"] + per["host serving"], 3),
                        "all": round(sum(per.values()), 3),
                    }
                    found["mode"], found["round"] = mode, round_
                    found["load"] = os.getloadavg()[0]
                    print(json.dumps(found), flush=True)
                    results.append(found)
                    if out is not None:
                        for process in (guest, host):
                            process.stop()  # writes its profile
                        print("profiles in", out, flush=True)
        finally:
            guest.stop()
            host.stop()
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results, indent=1))
    # time per process, per mode, side by side
    for mode in modes:
        mine = [r["cpu_ms_per_request"] for r in results if r["mode"] == mode]
        print(mode, json.dumps(mine))


if __name__ == "__main__":
    main()
