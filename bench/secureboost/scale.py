"""hetero_secureboost at scale: a synthetic table generated here (rows x features, split
between the guest and one host), one or more trees, 2048-bit key, 32 bins; time and memory
per tree, with XGBoost and the plaintext reference (math.fit) on the joined table as the
baselines of the same run.

    python bench/secureboost/scale.py --rows 1000000 --guest-features 50 --host-features 50
    python bench/secureboost/scale.py --rows 100000                       # what fits

Both parties run in this process (fedflow.standalone.LocalWorld: a broker and a SQLite file
each, every message signed and relayed), the tables handed to the component directly (no CSV,
no reader, no psi: the rows are aligned by construction). Features are standard normal, with
5% missing values in the host's; the label is a Bernoulli draw of the sigmoid of a sparse
linear mix of both parties' features. Reported: seconds per tree (the guest's train_seconds /
trees), the process's CPU seconds and peak resident memory (both parties), the guest's
encryption and the host's histogram seconds, the load average before and after.
Results: bench/secureboost/scale_results.json (one entry per run, appended).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import xgboost as xgb
from fedcrypto.paillier import native_available
from fedflow.artifacts import ModelArtifact
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.context import RuntimeOptions
from fedflow.metrics import MetricsReader
from fedflow.standalone import LocalWorld
from fedflow.tables import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.flow.running import start_task  # noqa: E402

GUEST, HOST = "9999", "10000"


def synthetic(rows: int, kg: int, kh: int, seed: int) -> tuple[Table, Table]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, kg + kh), dtype=np.float32).astype(np.float64)
    weights = np.zeros(kg + kh)
    informative = rng.choice(kg + kh, size=max(2, (kg + kh) // 10), replace=False)
    weights[informative] = rng.normal(0, 1, informative.size)
    logit = x @ weights / np.sqrt(informative.size) * 2.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    host_x = x[:, kg:]
    host_x[rng.random(host_x.shape) < 0.05] = np.nan
    ids = np.array([f"r{i}" for i in range(rows)])
    guest = Table(ids, x[:, :kg], [f"g{j}" for j in range(kg)], y, "y")
    host = Table(ids, host_x, [f"h{j}" for j in range(kh)], None, None)
    return guest, host


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = {
        "num_trees": args.trees,
        "max_depth": args.depth,
        "max_bin": 32,
        "learning_rate": 0.3,
        "key_bits": args.key_bits,
        "insecure_short_keys": args.key_bits < 2048,
    }
    began = time.perf_counter()
    guest, host = synthetic(args.rows, args.guest_features, args.host_features, args.seed)
    generate_s = time.perf_counter() - began
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    parties = {"guest": [GUEST], "host": [HOST]}
    load_before = os.getloadavg()
    cpu_before = time.process_time()
    with tempfile.TemporaryDirectory() as workdir:
        options = RuntimeOptions(threads=2, prefetch_threads=2)
        with LocalWorld([GUEST, HOST], Path(workdir), options) as world:
            for party, role, table in ((GUEST, "guest", guest), (HOST, "host", host)):
                world.parties[party].runtime.artifacts.put(
                    "job", "src", party, role, "data", table, 0
                )
            started = time.perf_counter()
            running = [
                start_task(
                    world,
                    world.parties[party].task(
                        "job",
                        "boost_0",
                        "hetero_secureboost",
                        role,
                        parties,
                        params=settings,
                        inputs={"data": "src.data"},
                    ),
                    recv_timeout=3600,
                    join_timeout=7200,
                )
                for party, role in ((GUEST, "guest"), (HOST, "host"))
            ]
            for task in running:
                task.join()
            wall = time.perf_counter() - started
            errors = [str(e) for task in running for e in task.error]
            if errors:
                raise RuntimeError(f"the job failed: {errors}")
            model = world.parties[GUEST].runtime.artifacts.get_artifact(
                "job", GUEST, "guest", "boost_0.model"
            )
            metrics = {
                (m.party_id, m.name): m.value
                for party in (GUEST, HOST)
                for m in MetricsReader(world.parties[party].engine).metrics("job", party_id=party)
                if m.step == -1
            }
    cpu = time.process_time() - cpu_before
    load_after = os.getloadavg()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert isinstance(model, ModelArtifact)
    train = float(metrics[(GUEST, "train_seconds")])
    out: dict[str, Any] = {
        "rows": args.rows,
        "guest_features": args.guest_features,
        "host_features": args.host_features,
        "trees": args.trees,
        "depth": args.depth,
        "key_bits": args.key_bits,
        # False: fedcrypto's C extension is missing (a git worktree has no built .so) and
        # every product ran on gmpy2, several times slower
        "native_kernels": native_available(),
        "generate_seconds": round(generate_s, 1),
        "seconds_per_tree": round(train / args.trees, 1),
        "task_wall_seconds": round(wall, 1),
        "cpu_seconds_both_parties": round(cpu, 1),
        "cpu_seconds_per_tree": round(cpu / args.trees, 1),
        "peak_rss_gib_both_parties": round(peak, 2),
        "rss_gib_after_data": round(rss_data, 2),
        "guest_encrypt_seconds": round(float(metrics[(GUEST, "encrypt_seconds")]), 1),
        "host_histogram_seconds": round(float(metrics[(HOST, "histogram_seconds")]), 1),
        "host_compress_seconds": round(float(metrics[(HOST, "compress_seconds")]), 1),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
    }
    # Baselines, same data, same run: the plaintext reference and XGBoost (1 thread)
    params = HeteroSecureBoostParams.model_validate(settings)
    assert guest.labels is not None
    blocks = [guest.features, host.features]
    began = time.perf_counter()
    reference = sbmath.fit(blocks, guest.labels, params)
    out["reference_seconds_per_tree"] = round((time.perf_counter() - began) / args.trees, 2)
    np.testing.assert_array_equal(
        model.arrays["trees/weight"], np.stack([t.weight for t in reference.trees])
    )
    out["model_equals_reference"] = True
    joined = np.hstack(blocks)
    began = time.perf_counter()
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "max_depth": args.depth,
            "eta": 0.3,
            "max_bin": 32,
            "base_score": 0.5,
            "nthread": 1,
        },
        xgb.DMatrix(joined, label=guest.labels),
        args.trees,
    )
    out["xgboost_1_thread_seconds_per_tree"] = round((time.perf_counter() - began) / args.trees, 2)
    labels = guest.labels == 1.0
    out["auc"] = round(
        binary_metrics(labels, reference.predict(blocks), threshold=0.5, curve_points=2).auc, 4
    )
    out["xgboost_auc"] = round(
        binary_metrics(
            labels, booster.predict(xgb.DMatrix(joined)), threshold=0.5, curve_points=2
        ).auc,
        4,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--guest-features", type=int, default=50)
    parser.add_argument("--host-features", type=int, default=50)
    parser.add_argument("--trees", type=int, default=1)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "scale_results.json")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = run(args)
    print(json.dumps(result, indent=2))
    previous = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*previous, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
