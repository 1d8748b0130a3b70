"""A batched deduplicating consumer that dies between its group commit and the acks.

argv: bus URL, database URL, topic. The whole queue arrives as one group (prefetch 64,
batch_wait 2 s); its effects (table batch_effects) and done markers commit in one transaction,
then it prints "committed <group size>" and hangs until the test SIGKILLs it.
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

table = sa.Table(
    "batch_effects",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(255), nullable=False),
)


def effect(delivery: Delivery, tx: Any) -> None:
    tx.session.execute(sa.insert(table), {"message_id": delivery.message_id})


inbox = SqlInbox(sys.argv[2])
batch = deduplicating_batch(effect, inbox)


def commit_then_hang(deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
    failed = batch(deliveries)
    print("committed", len(deliveries), flush=True)
    time.sleep(600)
    return failed


# batch_wait: the whole queue (prefetch 64) arrives before the group is cut.
connect(sys.argv[1]).subscribe_batched(
    sys.argv[3],
    deduplicating(effect, inbox),
    commit_then_hang,
    batch_size=64,
    batch_wait=2.0,
    prefetch=64,
)
time.sleep(600)
