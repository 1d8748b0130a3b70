"""What the row-alignment check (fedflow.kit.alignment, issue #17) costs a vertical model.

    python bench/modelling/alignment.py                  # 442 and 10000 rows, 3 pairs each
    python bench/modelling/alignment.py --rows 442 --pairs 5

Standalone (both parties in this process, fedflow.standalone.LocalWorld), hetero_linr, one
epoch, 1024-bit keys, a guest with 4 features and the label and a host with 6 (synthetic,
standard normal). Measured, alternating the two codes in the same run (A B A B ...):
  A: the model as shipped: check_alignment before the key exchange;
  B: the same with check_alignment replaced by a no-op at both parties (the baseline);
and, inside A, the guest's wall time in check_alignment (the round trip plus its hashing) and
the bytes of the three alignment messages (the relay's count). Also the hashing alone:
id_digest over 10^4, 10^5 and 10^6 ids. The load average is recorded before and after (the
machine is shared). Results go to bench/modelling/alignment_results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from fedflow.components.hetero_linr import guest as linr_guest
from fedflow.components.hetero_linr import host as linr_host
from fedflow.kit import alignment
from fedflow.standalone import LocalWorld
from fedflow.tables import Table

GUEST, HOST = "9999", "10000"
OUT = Path(__file__).with_name("alignment_results.json")
TAGS = ("alignment_salt", "alignment_digest", "alignment_verdict")


def tables(rows: int) -> tuple[Table, Table]:
    rng = np.random.default_rng(0)
    ids = np.array([f"id{i:08d}" for i in range(rows)], dtype=np.str_)
    xg, xh = rng.standard_normal((rows, 4)), rng.standard_normal((rows, 6))
    y = xg.sum(axis=1) + xh.sum(axis=1) + rng.standard_normal(rows)
    return (
        Table(ids, xg, [f"g{i}" for i in range(4)], y, "y"),
        Table(ids, xh, [f"h{i}" for i in range(6)], None),
    )


@contextmanager
def without_check() -> Iterator[None]:
    """The baseline: check_alignment a no-op where hetero_linr calls it."""
    saved = linr_guest.check_alignment, linr_host.check_alignment

    def skip(ctx: Any) -> None:
        del ctx

    linr_guest.check_alignment = linr_host.check_alignment = skip  # type: ignore[assignment]
    try:
        yield
    finally:
        linr_guest.check_alignment, linr_host.check_alignment = saved  # type: ignore[assignment]


GUEST_CHECK: list[float] = []


@contextmanager
def timed_check() -> Iterator[None]:
    """check_alignment as shipped, the guest's wall time in it recorded."""
    saved = linr_guest.check_alignment

    def timed(ctx: Any) -> None:
        start = time.perf_counter()
        alignment.check_alignment(ctx)
        GUEST_CHECK.append(time.perf_counter() - start)

    linr_guest.check_alignment = timed  # type: ignore[assignment]
    try:
        yield
    finally:
        linr_guest.check_alignment = saved  # type: ignore[assignment]


def run_once(workdir: Path, guest: Table, host: Table) -> tuple[float, int]:
    """One hetero_linr run at both parties: wall seconds, bytes of the alignment messages."""
    params = {
        "epochs": 1,
        "batch_size": 512,
        "learning_rate": 0.1,
        "key_bits": 1024,
        "insecure_short_keys": True,
    }
    layout = {"guest": [GUEST], "host": [HOST]}
    errors: list[BaseException] = []
    with LocalWorld([GUEST, HOST], workdir) as world:
        threads = []
        for party, role, table in ((GUEST, "guest", guest), (HOST, "host", host)):
            world.parties[party].runtime.artifacts.put("j", "src", party, role, "d", table, 0)
            spec = world.parties[party].task(
                "j", "linr_0", "hetero_linr", role, layout, params=params, inputs={"data": "src.d"}
            )

            def target(spec: Any = spec, party: str = party) -> None:
                try:
                    world.parties[party].runtime.run_task(spec, recv_timeout=600)
                except BaseException as exc:
                    errors.append(exc)

            threads.append(threading.Thread(target=target))
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        crossed = sum(c.bytes for c in world.crossings.snapshot() if c.tag in TAGS)
    if errors:
        raise errors[0]
    return seconds, crossed


def digest_seconds(count: int) -> float:
    ids = np.array([f"id{i:08d}" for i in range(count)], dtype=np.str_)
    start = time.perf_counter()
    alignment.id_digest(os.urandom(32), ids)
    return time.perf_counter() - start


def alternate(rows: int, pairs: int) -> dict[str, Any]:
    guest, host = tables(rows)
    with_check: list[float] = []
    baseline: list[float] = []
    crossed = 0
    GUEST_CHECK.clear()
    codes: list[tuple[list[float], Callable[[], Any]]] = [
        (with_check, timed_check),
        (baseline, without_check),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(pairs):
            for index, (times, code) in enumerate(codes):
                with code():
                    seconds, sent = run_once(Path(tmp) / f"{pair}-{index}", guest, host)
                times.append(seconds)
                crossed = max(crossed, sent)
                print(f"rows {rows} pair {pair} {'A' if index == 0 else 'B'}: {seconds:.3f} s")
    return {
        "rows": rows,
        "with_check_s": with_check,
        "baseline_s": baseline,
        "median_with_check_s": statistics.median(with_check),
        "median_baseline_s": statistics.median(baseline),
        "guest_check_s": list(GUEST_CHECK),
        "alignment_bytes": crossed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[442, 10_000])
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    before = os.getloadavg()
    results = [alternate(rows, args.pairs) for rows in args.rows]
    hashing = {str(n): digest_seconds(n) for n in (10_000, 100_000, 1_000_000)}
    after = os.getloadavg()
    report = {"load_before": before, "load_after": after, "runs": results, "id_digest_s": hashing}
    OUT.write_text(json.dumps(report, indent=2))
    for r in results:
        print(
            f"rows {r['rows']}: median {r['median_with_check_s']:.3f} s with the check, "
            f"{r['median_baseline_s']:.3f} s without; guest in the check "
            f"{statistics.median(r['guest_check_s']) * 1000:.1f} ms (median); "
            f"{r['alignment_bytes']} bytes"
        )
    print(f"id_digest: {hashing}; load {before} -> {after}")


if __name__ == "__main__":
    main()
