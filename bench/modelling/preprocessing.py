"""Modelling toolbox benchmark, part 2 (issue #17): hetero_feature_binning and hetero_pearson
on the repository's default-of-credit-card tables (guest: label + 13 columns, host: 10),
standalone (both parties in one process), real 2048-bit keys by default.

    python bench/modelling/preprocessing.py                  # 30,000 rows binned, 5,000 correlated
    python bench/modelling/preprocessing.py --rows 5000 --pearson-rows 1000 --key-bits 1024

Measured, each against a baseline computed in the same run:
1. hetero_feature_binning (quantile, 10 bins) on all rows: the binning task's seconds at the
   guest and at the host, the bytes that crossed; baseline: the same WOE/IV computed in
   plaintext with numpy on the joined table (seconds), and the largest |IV difference| between
   the two (the protocol is exact: it should be ~1e-15).
2. hetero_pearson on the first --pearson-rows rows: task seconds and bytes; baseline:
   numpy.corrcoef on the joined table (seconds) and the largest |difference|.
The load average is recorded before and after (the machine is shared). Results are appended
to bench/modelling/preprocessing_results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore, ModelArtifact
from fedflow.components.hetero_feature_binning import math as bmath
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneResult, run_pipeline

GUEST, HOST = "9999", "10000"
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
OUT = Path(__file__).with_name("preprocessing_results.json")


def read(name: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray | None]:
    with (DATA / f"{name}.csv").open() as src:
        rows = list(csv.reader(src))
    head, body = rows[0], rows[1:]
    ids = [r[0] for r in body]
    labelled = head[1] == "y"
    start = 2 if labelled else 1
    x = np.array([[float(v) for v in r[start:]] for r in body], dtype=np.float64)
    y = np.array([float(r[1]) for r in body]) if labelled else None
    return ids, head[start:], x, y


def write(
    path: Path, ids: list[str], names: list[str], x: np.ndarray, y: np.ndarray | None
) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", *(["y"] if y is not None else []), *names])
        for i, key in enumerate(ids):
            label = [f"{y[i]:g}"] if y is not None else []
            writer.writerow([key, *label, *(repr(float(v)) for v in x[i])])


def pipeline(component: str, params: dict[str, Any]) -> Pipeline:
    return Pipeline.from_dict(
        {
            "name": f"bench-{component}",
            "parties": {"guest": GUEST, "host": [HOST]},
            "components": [
                {"name": "reader_0", "type": "reader", "params": {"common": {"table": "t"}}},
                {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
                {
                    "name": "c_0",
                    "type": component,
                    "inputs": {"data": "psi_0.data"},
                    "params": {"common": params},
                },
            ],
        }
    )


def task_seconds(result: StandaloneResult) -> dict[str, float]:
    return {t.role: round(t.seconds, 2) for t in result.tasks if t.component == "c_0"}


def component_bytes(result: StandaloneResult) -> int:
    return sum(c.bytes for c in result.crossings if getattr(c, "component", "c_0") == "c_0")


def run(rows: int, pearson_rows: int, key_bits: int) -> dict[str, Any]:
    short = {"key_bits": key_bits, "insecure_short_keys": key_bits < 2048}
    gids, gnames, gx, y = read("default_credit_hetero_guest")
    hids, hnames, hx, _ = read("default_credit_hetero_host")
    assert y is not None and gids == hids
    gx, hx, y, ids = gx[:rows], hx[:rows], y[:rows], gids[:rows]
    out: dict[str, Any] = {"rows": rows, "key_bits": key_bits, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for party, x, lab in ((GUEST, gx, y), (HOST, hx, None)):
            (base / party).mkdir()
            names = gnames if party == GUEST else hnames
            write(base / party / "t.csv", ids, names, x, lab)
        started = time.perf_counter()
        result = run_pipeline(
            pipeline("hetero_feature_binning", {"bin_num": 10, **short}),
            {GUEST: base / GUEST, HOST: base / HOST},
            base / "w1",
        )
        job_seconds = time.perf_counter() - started
        order = np.argsort(np.array(ids, dtype=np.str_), kind="stable")  # psi sorts by id
        started = time.perf_counter()
        plain = []
        for j in range(hx.shape[1]):
            col = hx[order, j]
            slots = bmath.bin_index(col, bmath.split_points(col, "quantile", 10), 10)
            plain.append(
                bmath.woe_iv(
                    bmath.slot_sums(slots, y[order], 10),
                    bmath.slot_sums(slots, 1 - y[order], 10),
                    0.5,
                ).iv
            )
        plain_seconds = time.perf_counter() - started
        federated = [result.metric("c_0", f"iv.host_{HOST}_{j}", GUEST) for j in range(hx.shape[1])]
        out["binning"] = {
            "task_seconds": task_seconds(result),
            "job_seconds_with_reader_psi": round(job_seconds, 2),
            "bytes_crossed_by_binning": sum(
                c.bytes
                for c in result.crossings
                if c.tag in ("encrypted_labels", "bin_events", "bin_counts", "public_key")
            ),
            "plaintext_seconds": round(plain_seconds, 4),
            "max_abs_iv_difference": float(np.max(np.abs(np.array(federated) - plain))),
            "host_iv": [round(v, 6) for v in federated],
        }

        p_rows = min(pearson_rows, rows)
        for party, x, lab in ((GUEST, gx[:p_rows], y[:p_rows]), (HOST, hx[:p_rows], None)):
            names = gnames if party == GUEST else hnames
            write(base / party / "t.csv", ids[:p_rows], names, x, lab)
        result = run_pipeline(
            pipeline("hetero_pearson", short), {GUEST: base / GUEST, HOST: base / HOST}, base / "w2"
        )
        order = np.argsort(np.array(ids[:p_rows], dtype=np.str_), kind="stable")
        started = time.perf_counter()
        joined = np.hstack([gx[:p_rows][order], hx[:p_rows][order]])
        expected = np.corrcoef(joined, rowvar=False)[: gx.shape[1], gx.shape[1] :]
        plain_seconds = time.perf_counter() - started
        engine = make_engine(result._engines[GUEST])  # output() reads tables only
        model = ArtifactStore(engine).get_artifact(result.job_id, GUEST, "guest", "c_0.model")
        engine.dispose()
        assert isinstance(model, ModelArtifact)
        got = np.asarray(model.arrays[f"cross_{HOST}"])
        out["pearson"] = {
            "rows": p_rows,
            "task_seconds": task_seconds(result),
            "plaintext_seconds": round(plain_seconds, 4),
            "max_abs_difference": float(np.max(np.abs(got - expected))),
        }
    out["load_after"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--pearson-rows", type=int, default=5_000)
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    found = run(args.rows, args.pearson_rows, args.key_bits)
    print(json.dumps(found, indent=2))
    history = json.loads(OUT.read_text()) if OUT.exists() else []
    history.append(found)
    OUT.write_text(json.dumps(history, indent=2) + "\n")


if __name__ == "__main__":
    main()
