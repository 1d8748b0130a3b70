"""hetero_secureboost on the local two-party stack (what `fedmq local up` starts: per party a
gateway, a scheduler, a worker and the audit service as separate processes on RabbitMQ,
PostgreSQL and Redis), against the standalone run of the same pipeline in the same run.

    python bench/secureboost/local_stack.py                 # depth 3, 2 trees, 2048 bits
    python bench/secureboost/local_stack.py --depth 5 --trees 1

Both parties upload their half of default_credit (30,000 rows, 13 + 10 features) through the
REST API, the host grants its table to the guest's jobs, and the guest submits reader ->
hetero_secureboost -> hetero_secureboost_predict -> evaluation (the rows are aligned already,
as in run.py). Reported: seconds per tree (the guest's train_seconds / trees, as run.py
reports it), submit-to-success, the AUC, and the CPU seconds the two worker processes used
during the job (from /proc); the baseline is run.py's standalone run of the same settings,
measured right after in this process (both parties in one process, in-memory bus). The load
average is recorded before and after. Results: bench/secureboost/local_stack_results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]

from run import DATA, pipeline_spec, run_depth  # noqa: E402  (bench/secureboost/run.py)

from fedmq import local  # noqa: E402
from tests.local_stack import GUEST, HOST, two_parties  # noqa: E402

AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG = os.environ.get("FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
COMPONENTS = ["reader", "hetero_secureboost", "hetero_secureboost_predict", "evaluation"]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pipeline_yaml(settings: dict[str, Any]) -> str:
    """run.py's pipeline as the YAML a user submits (JSON is YAML)."""
    return json.dumps(pipeline_spec(settings), indent=1) + "\n"


def on_stack(settings: dict[str, Any]) -> dict[str, Any]:
    token = f"bench-{uuid.uuid4().hex}"
    with two_parties(
        amqp_url=AMQP,
        redis_url=REDIS,
        pg_admin_url=PG,
        token=token,
        label="sboost",
        wait_for_workers=True,
    ) as stack:
        stack.guest.upload_table(
            "default_credit_hetero_guest",
            DATA / "default_credit_hetero_guest.csv",
            label_column="y",
            replace=True,
        )
        stack.host.upload_table(
            "default_credit_hetero_host", DATA / "default_credit_hetero_host.csv", replace=True
        )
        stack.host.grant("default_credit_hetero_host", GUEST, COMPONENTS)
        workers = {p: local.read_pid(stack.state, p, "worker") for p in (GUEST, HOST)}
        cpu_before = {p: _cpu_seconds(pid) for p, pid in workers.items() if pid}
        load_before = os.getloadavg()
        started = time.perf_counter()
        job = stack.guest.submit(
            _pipeline_yaml(settings), job_id=f"bench-sb-{uuid.uuid4().hex[:6]}"
        )
        done = stack.guest.wait(job.job_id, timeout=1800, poll=0.5)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()
        cpu = {p: round(_cpu_seconds(pid) - cpu_before[p], 1) for p, pid in workers.items() if pid}
        if done.state != "success":
            raise RuntimeError(f"the job ended {done.state}: {done.reason}")
        metrics = stack.guest.metrics(job.job_id)
        host_metrics = stack.host.metrics(job.job_id)
        train = metrics.value("boost_0", "train_seconds", GUEST)
        return {
            "seconds_per_tree": round(float(train or 0) / settings["num_trees"], 2),
            "setup_seconds": round(float(metrics.value("boost_0", "setup_seconds", GUEST) or 0), 2),
            "submit_to_success_seconds": round(wall, 1),
            "worker_cpu_seconds": cpu,
            "auc": round(float(metrics.value("eval_0", "auc") or 0), 6),
            "guest_encrypt_seconds": metrics.value("boost_0", "encrypt_seconds", GUEST),
            "guest_decrypt_seconds": metrics.value("boost_0", "decrypt_seconds", GUEST),
            "host_histogram_seconds": host_metrics.value("boost_0", "histogram_seconds", HOST),
            "host_compress_seconds": host_metrics.value("boost_0", "compress_seconds", HOST),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in load_after],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--trees", type=int, default=2)
    parser.add_argument("--bins", type=int, default=32)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=HERE / "local_stack_results.json")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings: dict[str, Any] = {
        "num_trees": args.trees,
        "max_depth": args.depth,
        "max_bin": args.bins,
        "learning_rate": 0.3,
        "key_bits": args.key_bits,
        "insecure_short_keys": args.key_bits < 2048,
    }
    stack = on_stack(settings)
    standalone_args = argparse.Namespace(
        trees=args.trees, bins=args.bins, key_bits=args.key_bits, threads=2, prefetch_threads=2
    )
    baseline = run_depth(args.depth, standalone_args)
    report = {
        "settings": settings,
        "local_stack": stack,
        "standalone_same_run": baseline,
        "auc_equal": stack["auc"] == baseline["auc"],
    }
    print(json.dumps(report, indent=2))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
