"""bench/serving/h4_handlers.py: the serving handlers' own CPU per one-row request, in one
process (issue #15, session 10, helper H4).

Both parties' `Serving` objects wired by a function instead of the bus and the gateways
(tests/serving/test_serving_units' wiring: SQLite registries, the real Redis for features and
rate limits), a model of the breast data's shape (10 guest features, 20 host features), binding
cache as in production (refresh 1 s). One thread sends `--requests` one-row predictions one
after the other; the CPU is that thread's (`time.thread_time`), so the machine's load does not
count. `--profile` prints the top functions (cProfile on the same clock).

    .venv/bin/python -m bench.serving.h4_handlers [--requests 3000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
from fedflow.artifacts import ArtifactStore
from fedflow.components.hetero_lr.session import INTERCEPT, model_table
from fedflow.db import create_flow_tables
from fedflow.tables import Table
from fedserving.features import FeatureStore, RateLimiter
from fedserving.handlers import Serving
from fedserving.metrics import ServingMetrics
from fedserving.registry import Registry, open_engine

from tests.serving.test_serving_units import GUEST, HOST, JOB, Wire

GUEST_FEATURES = [f"x{i}" for i in range(10)]
HOST_FEATURES = [f"h{i}" for i in range(20)]
ROWS = 500


def party(wire: Wire, party_id: str, tmp: Path, client: redis.Redis[bytes]) -> Serving:
    engine = open_engine(f"sqlite:///{tmp / f'{party_id}.db'}")
    create_flow_tables(engine)
    store = ArtifactStore(engine)
    rng = np.random.default_rng(7)
    if party_id == GUEST:
        table = model_table([*GUEST_FEATURES, INTERCEPT], rng.normal(size=11))
        store.put(JOB, "hetero_lr_0", GUEST, "guest", "model", table, 0)
    else:
        table = model_table(HOST_FEATURES, rng.normal(size=20))
        store.put(JOB, "hetero_lr_0", HOST, "host", "model", table, 0)
    prefix = f"fedmq-bench-{uuid.uuid4().hex[:8]}:{party_id}:"
    serving = Serving(
        party_id,
        Registry(engine, party_id),
        features=FeatureStore(client, prefix),
        limiter=RateLimiter(client, prefix),
        call=wire.caller(party_id),
        artifacts=store,
        tables=None,
        job_parties=lambda job: {GUEST: ["guest"], HOST: ["host"]},
        metrics=ServingMetrics(),
        accept_models_from=("*",),
        rate_limit_rows_per_s=1_000_000,
    )
    wire.parties[party_id] = serving
    return serving


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    tmp = Path(tempfile.mkdtemp(prefix="bench-h4h-"))
    wire = Wire()
    guest = party(wire, GUEST, tmp, client)
    host = party(wire, HOST, tmp, client)
    rng = np.random.default_rng(3)
    ids = [f"id{i}" for i in range(ROWS)]
    host.features.load(
        "online",
        Table(
            ids=np.array(ids, dtype=np.str_),
            features=rng.normal(size=(ROWS, len(HOST_FEATURES))),
            feature_names=HOST_FEATURES,
            labels=None,
        ),
    )
    for op, fields in (
        ("model_publish", {"job_id": JOB, "name": "credit"}),
        ("service_bind", {"service_id": "risk", "name": "credit", "version": 1}),
    ):
        answer = guest.local({"op": op, "args": fields})
        assert answer["ok"], answer
    requests: list[bytes] = [
        json.dumps(
            {
                "op": "predict",
                "args": {
                    "service_id": "risk",
                    "rows": [
                        {
                            "id": ids[i % ROWS],
                            "features": dict(
                                zip(GUEST_FEATURES, rng.normal(size=10).tolist(), strict=True)
                            ),
                        }
                    ],
                    "caller": "bench",
                },
            }
        ).encode()
        for i in range(args.requests)
    ]

    def run(n: int) -> None:
        for body in requests[:n]:
            answer: dict[str, Any] = guest.local(json.loads(body))
            assert answer["ok"], answer
            json.dumps(answer)

    run(200)  # warm: caches, connections
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    started = time.thread_time()
    if profile is not None:
        profile.enable()
    run(args.requests)
    if profile is not None:
        profile.disable()
    took = time.thread_time() - started
    print(
        json.dumps(
            {"requests": args.requests, "cpu_ms_per_request": round(took * 1000 / args.requests, 4)}
        )
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(35)
    client.close()


if __name__ == "__main__":
    main()
