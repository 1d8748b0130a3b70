"""CPU per message of the audit's record-making (fedaudit.auditor.make_record): the hashes of
one signed inbound ciphertext message, this tree's fedaudit against a baseline's, alternated.

    .venv/bin/python bench/audit/hash_once.py --baseline-src DIR [--rows 6000] [--rounds 3]

DIR is a directory holding an older `fedaudit` package (e.g. `git archive REV
services/audit/src | tar -x -C /tmp/base`, then DIR=/tmp/base/services/audit/src). Each
measurement is a fresh process (PYTHONPATH=DIR first for the baseline) that times
`make_record` over `--messages` deliveries of one message of `--rows` 2048-bit ciphertexts
(6,000 rows: the default_credit job's 3 MB residual and host_scores messages), signed as the
receiving party's gateway publishes it, in process CPU time. It prints each measurement in
order (A B A B ...), the medians and their ratio. The records of both versions are compared:
the bench refuses to report if they differ in any field but the time they were made.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LIMBS = 64  # 2048-bit ciphertexts mod n^2: 4096 bits = 64 limbs of 64 bits


def measure(messages: int, rows: int) -> dict[str, Any]:
    import numpy as np
    from fedaudit import auditor
    from fedschemas import FederationData, PartyRef, decode_payload, encode_envelope, new_envelope
    from fedschemas.payloads import task_scope_id

    guest, host = PartyRef(party_id="9999", role="guest"), PartyRef(party_id="10000", role="host")
    limbs = np.random.default_rng(0).integers(0, 2**63, size=(rows, LIMBS), dtype=np.uint64)
    envelope = new_envelope(
        FederationData(kind="ciphertext_vector", array=limbs, meta={"exponent": 0}),
        job_id="bench",
        component="hetero_lr_0",
        task_id=task_scope_id("bench", "hetero_lr_0", guest.party_id, "guest"),
        attempt=0,
        source=guest,
        destination=host,
        tag="residual",
        iteration=0,
        seq=0,
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
    ).replace(signer_key_id="gateway-9999", signature=b"\x01" * 64)
    body = encode_envelope(envelope)
    payload = decode_payload(envelope)
    at = datetime(2026, 12, 7, 12, tzinfo=UTC)
    record = auditor.make_record("svc.worker", body, envelope, payload, host.party_id, at)
    started = time.process_time()
    for _ in range(messages):
        auditor.make_record("svc.worker", body, envelope, payload, host.party_id, at)
    took = time.process_time() - started
    return {
        "fedaudit": str(Path(auditor.__file__).parent),
        "payload_bytes": len(envelope.payload),
        "cpu_ms_per_message": round(1000 * took / messages, 3),
        "record": record,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", required=False, default="")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.messages, args.rows)))
        return 0
    if not args.baseline_src:
        parser.error("--baseline-src DIR is required")
    runs: dict[str, list[float]] = {"baseline": [], "current": []}
    records: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for label, src in (("baseline", args.baseline_src), ("current", "")):
            path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH", "")]))
            out = subprocess.run(
                [
                    *(sys.executable, __file__, "--measure"),
                    *("--messages", str(args.messages), "--rows", str(args.rows)),
                ],
                env={**os.environ, "PYTHONPATH": path},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out)
            if label == "baseline" and not result["fedaudit"].startswith(args.baseline_src):
                raise RuntimeError(f"the baseline ran {result['fedaudit']}")
            runs[label].append(result["cpu_ms_per_message"])
            records[label] = result["record"]
            print(label, result["cpu_ms_per_message"], "CPU-ms/message", file=sys.stderr)
    if records["baseline"] != records["current"]:
        raise RuntimeError("the two versions made different records")
    base, new = statistics.median(runs["baseline"]), statistics.median(runs["current"])
    summary = {
        "rows": args.rows,
        "payload_bytes": result["payload_bytes"],
        "messages": args.messages,
        "baseline_cpu_ms_per_message": runs["baseline"],
        "current_cpu_ms_per_message": runs["current"],
        "median_ratio_baseline_over_current": round(base / new, 2),
        "load": os.getloadavg()[0],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
