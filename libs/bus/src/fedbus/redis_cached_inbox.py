"""RedisCachedInbox: a Redis cache of done markers in front of a SqlInbox.

The SQL marker is the record; Redis only saves the database round trip for duplicates. A Redis
key `<prefix><message_id>` is set (with a TTL) only AFTER the SQL transaction committed, or after
SQL reported the id as already done, so a key's presence always implies a committed marker.
Losing Redis (it keeps nothing on disk here) or a key expiring only sends the check back to SQL.
If Redis is unreachable, the inbox carries on with SQL alone and tries Redis again a few seconds
later. `process_batch` asks Redis about the whole batch in one MGET, hands the rest to
`SqlInbox.process_batch` (one transaction), and sets the keys in one pipeline after the commit.

The prefix must name the database the markers live in (e.g. "fedmq:9999:worker:inbox:"): two
inboxes sharing a prefix but not a database would drop each other's messages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis
import structlog

from fedbus.inbox import BatchItem, Effect, Inbox
from fedbus.sql_inbox import SqlInbox

log = structlog.get_logger(__name__)

DEFAULT_TTL_S = 24 * 3600.0
RETRY_AFTER_ERROR_S = 5.0


class RedisCachedInbox(Inbox):
    def __init__(
        self,
        sql_inbox: SqlInbox,
        redis_url: str,
        prefix: str = "fedmq:inbox:",
        ttl: float = DEFAULT_TTL_S,
        *,
        socket_timeout: float = 0.5,
    ) -> None:
        self.sql = sql_inbox
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl * 1000))
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._skip_until = 0.0

    def _key(self, message_id: str) -> str:
        return self._prefix + message_id

    def _usable(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, exc: redis.RedisError, operation: str) -> None:
        # Why not raise: Redis is a cache; SQL alone is correct, only slower.
        self._skip_until = time.monotonic() + RETRY_AFTER_ERROR_S
        log.warning("inbox_cache_unavailable", operation=operation, error=type(exc).__name__)

    def cached_done(self, message_id: str) -> bool:
        """Whether Redis holds a done key for `message_id` (False when Redis is down)."""
        if not self._usable():
            return False
        try:
            return bool(self._redis.exists(self._key(message_id)))
        except redis.RedisError as exc:
            self._failed(exc, "exists")
            return False

    def _remember(self, message_id: str) -> None:
        if not self._usable():
            return
        try:
            self._redis.set(self._key(message_id), b"1", px=self._ttl_ms)
        except redis.RedisError as exc:
            self._failed(exc, "set")

    def process(self, message_id: str, effect: Effect) -> bool:
        if self.cached_done(message_id):
            return False
        ran = self.sql.process(message_id, effect)
        # Reached only when SQL committed the marker now or found it committed before.
        self._remember(message_id)
        return ran

    def process_batch(self, items: Sequence[BatchItem]) -> list[bool]:
        cached = self._cached_many([message_id for message_id, _ in items])
        todo = [i for i, (message_id, _) in enumerate(items) if message_id not in cached]
        ran = [False] * len(items)
        if todo:
            for index, result in zip(
                todo, self.sql.process_batch([items[i] for i in todo]), strict=True
            ):
                ran[index] = result
            # Reached only when SQL committed these markers now or found them committed.
            self._remember_many({items[i][0] for i in todo})
        return ran

    def _cached_many(self, message_ids: list[str]) -> set[str]:
        if not self._usable() or not message_ids:
            return set()
        try:
            values = self._redis.mget([self._key(m) for m in message_ids])
        except redis.RedisError as exc:
            self._failed(exc, "mget")
            return set()
        return {m for m, value in zip(message_ids, values, strict=True) if value is not None}

    def _remember_many(self, message_ids: set[str]) -> None:
        if not self._usable():
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for message_id in message_ids:
                    pipe.set(self._key(message_id), b"1", px=self._ttl_ms)
                pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc, "set")

    def is_done(self, message_id: str) -> bool:
        return self.cached_done(message_id) or self.sql.is_done(message_id)

    def close(self) -> None:
        self._redis.close()
        self.sql.close()
