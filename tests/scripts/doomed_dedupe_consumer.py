"""A deduplicating consumer that dies between its inbox commit and the ack.

argv: bus URL, database URL, topic. The handler writes the message's effect and the inbox's
done marker in one transaction (table dedupe_effects), prints "committed <message id>", and
hangs: the test SIGKILLs it there, so the broker redelivers a message already processed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import sqlalchemy as sa
from fedbus import Delivery, connect
from fedbus.inbox import deduplicating
from fedbus.sql_inbox import SqlInbox

table = sa.Table(
    "dedupe_effects",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(255), nullable=False),
)


def effect(delivery: Delivery, tx: Any) -> None:
    tx.session.execute(sa.insert(table), {"message_id": delivery.message_id})


dedupe = deduplicating(effect, SqlInbox(sys.argv[2]))


def handler(delivery: Delivery) -> None:
    dedupe(delivery)
    print("committed", delivery.message_id, flush=True)
    time.sleep(600)


connect(sys.argv[1]).subscribe(sys.argv[3], handler)
time.sleep(600)
