"""Post-hoc audit: the rules run again over a job's recorded log, and a report per job.

The replay uses only what the log keeps (envelope fields and facts), so it repeats every rule
but the ciphertext and non-finite checks, which needed the payload's values; their live results
are in the records. The report lists what crossed (per type, direction and peer, with bytes),
the findings recorded live, the findings of the replay, whether the whole chain verifies, and
the peers' signed statements of the job's traffic with whether each agreed with this log.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy.engine import Connection

from fedaudit import store
from fedaudit.auditor import Auditor
from fedaudit.rules.state import AuditPolicy, Observation
from fedaudit.verify import parse_export, verify_export


def job_report(
    conn: Connection, policy: AuditPolicy, job_id: str, public_key: str
) -> dict[str, Any]:
    auditor = Auditor(policy)
    records = list(store.iter_records(conn, job_id=job_id))
    crossing: Counter[tuple[str, str, str]] = Counter()
    size: Counter[tuple[str, str, str]] = Counter()
    live: list[dict[str, Any]] = []
    replayed: list[dict[str, Any]] = []
    for record in records:
        peer = (
            record["destination_party"] if record["direction"] == "out" else record["source_party"]
        )
        key = (str(record["type"]), str(record["direction"]), str(peer))
        crossing[key] += 1
        size[key] += int(record["size"])
        live += [
            {**f, "seq": record["seq"], "message_id": record["message_id"]}
            for f in record["findings"]
        ]
        found = auditor.observe(Observation(record))
        replayed += [
            {**f.to_dict(), "seq": record["seq"], "message_id": record["message_id"]} for f in found
        ]
    problems = verify_export(parse_export(store.export_lines(conn, policy.party_id, public_key)))
    return {
        "job_id": job_id,
        "party_id": policy.party_id,
        "records": len(records),
        "first_seq": records[0]["seq"] if records else None,
        "last_seq": records[-1]["seq"] if records else None,
        "traffic": [
            {"type": t, "direction": d, "peer": p, "messages": n, "bytes": size[(t, d, p)]}
            for (t, d, p), n in sorted(crossing.items())
        ],
        "findings_live": live,
        "findings_post_hoc": replayed,
        "chain_ok": not problems,
        "chain_problems": [str(p) for p in problems],
        # The peers' signed statements of the job's traffic, and whether each agreed with
        # this log (fedaudit.peers; a statement still being compared shows agrees=True).
        "peer_statements": store.peer_statements(conn, job_id),
    }
