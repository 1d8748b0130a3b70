"""A worker-like envelope consumer in batch mode that dies after its first group's commit.

argv: bus URL, database URL, topic. demo.ping envelopes are written to table batch_rows; the
group's rows and done markers commit in one transaction, then it prints "committed <rows>" and
hangs before the bus can ack the group: the test SIGKILLs it there.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import sqlalchemy as sa
from fedbus import connect
from fedbus.runtime import EnvelopeConsumer
from fedbus.sql_inbox import SqlInbox

table = sa.Table(
    "batch_rows",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
)


class CommitThenHang(SqlInbox):
    def process_batch(self, items: Any) -> Any:
        ran = super().process_batch(items)
        print("committed", sum(ran), flush=True)
        time.sleep(600)
        return ran


def write_row(envelope: Any, payload: Any, tx: Any) -> None:
    tx.session.execute(sa.insert(table), {"message_id": envelope.message_id, "n": payload.n})


# batch_wait: the whole queue (prefetch 64) arrives before the group is cut.
EnvelopeConsumer(
    connect(sys.argv[1]),
    sys.argv[3],
    {"demo.ping": write_row},
    CommitThenHang(sys.argv[2]),
    batch_size=64,
    batch_wait=2.0,
    prefetch=64,
).start()
time.sleep(600)
