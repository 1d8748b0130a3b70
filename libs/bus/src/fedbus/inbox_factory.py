"""`make_inbox`: the inbox a service's settings ask for.

- "memory://"           -> InMemoryInbox (tests, nothing durable)
- any SQLAlchemy URL    -> SqlInbox (sqlite:///.fedmq/worker.db, postgresql://...)
- an Engine             -> SqlInbox on it (so a service's own tables share the database)
- plus `redis_url`      -> RedisCachedInbox in front of the SqlInbox
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.inbox import Inbox, InboxError
from fedbus.sql_inbox import SqlInbox


def make_inbox(
    database: str | Engine,
    *,
    redis_url: str | None = None,
    redis_prefix: str = "fedmq:inbox:",
    redis_ttl: float | None = None,
) -> Inbox:
    """`redis_ttl`: how long a done marker stays in Redis (None: RedisCachedInbox's default)."""
    if isinstance(database, str) and database.startswith("memory://"):
        if redis_url:
            raise InboxError("a Redis cache needs a durable SQL inbox behind it, not memory://")
        return InMemoryInbox()
    sql = SqlInbox(database)
    if redis_url:
        # Imported only here: the redis client is about a tenth of a worker's start-up CPU
        # (its import pulls redis.asyncio), and a service without a cache never needs it.
        from fedbus.redis_cached_inbox import DEFAULT_TTL_S, RedisCachedInbox

        ttl = DEFAULT_TTL_S if redis_ttl is None else redis_ttl
        return RedisCachedInbox(sql, redis_url, prefix=redis_prefix, ttl=ttl)
    return sql
