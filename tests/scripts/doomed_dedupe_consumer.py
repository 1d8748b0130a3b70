"""A deduplicating consumer that dies between its inbox commit and the ack.

argv: bus URL, database URL, topic, effects table, and "batch" for the batched consumer.
Each message's effect (a row of its id in the effects table) and the inbox's done marker
commit in one transaction; then the consumer prints "committed <message id>" (one message) or
"committed <group size>" (batch: the whole queue arrives as one group, prefetch 64 and
batch_wait 2 s) and hangs: the test SIGKILLs it there, so the broker redelivers what was
already processed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fedbus import Delivery, connect
from fedbus.inbox import deduplicating, deduplicating_batch
from fedbus.sql_inbox import SqlInbox

bus_url, database_url, topic, table_name = sys.argv[1:5]
batched = sys.argv[5:] == ["batch"]

table = sa.Table(
    table_name,
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(255), nullable=False),
)


def effect(delivery: Delivery, tx: Any) -> None:
    tx.session.execute(sa.insert(table), {"message_id": delivery.message_id})


inbox = SqlInbox(database_url)
dedupe = deduplicating(effect, inbox)
batch = deduplicating_batch(effect, inbox)


def commit_then_hang(delivery: Delivery) -> None:
    dedupe(delivery)
    print("committed", delivery.message_id, flush=True)
    time.sleep(600)


def commit_group_then_hang(deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
    failed = batch(deliveries)
    print("committed", len(deliveries), flush=True)
    time.sleep(600)
    return failed


if batched:
    connect(bus_url).subscribe_batched(
        topic, dedupe, commit_group_then_hang, batch_size=64, batch_wait=2.0, prefetch=64
    )
else:
    connect(bus_url).subscribe(topic, commit_then_hang)
time.sleep(600)
