"""A message delivered again (after a crash between commit and ack) is recorded once, whether it
comes alone or in a group with new ones (store.recorded_among on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fedaudit import handlers
from fedaudit.main import Audit
from fedaudit.models import records
from fedaudit.settings import AuditSettings
from fedbus import connect
from fedcrypto.signing import SigningKey

from tests.audit.traffic import GUEST, KEY_BITS, Traffic


@pytest.fixture
def audit(pg_url: str, unique_name: str) -> Iterator[Audit]:
    settings = AuditSettings(
        party_id=GUEST,
        database_url=pg_url,
        signing_key=SigningKey.generate().to_bytes().hex(),
        min_key_bits=KEY_BITS,
        http_port=-1,
        log_json=False,
    )
    bus = connect(f"memory://{unique_name}")
    audit = Audit(settings, bus=bus)
    handlers.load(audit.ctx)
    yield audit
    audit.engine.dispose()
    bus.close()


def test_a_redelivered_message_is_recorded_once_alone_or_in_a_group(audit: Audit) -> None:
    traffic = Traffic()
    first, second, third = (traffic.delivery(e) for e in traffic.honest(iterations=1)[:3])
    handlers.handle_batch(audit.ctx, [first])

    handlers.handle_batch(audit.ctx, [first])
    handlers.handle_batch(audit.ctx, [second, first, third, second])

    with audit.engine.connect() as conn:
        ids = conn.execute(sa.select(records.c.message_id).order_by(records.c.seq)).scalars()
        recorded = list(ids)
    assert recorded == [first.message_id, second.message_id, third.message_id]
    assert audit.ctx.head.seq == 3
