"""InMemoryInbox: done markers in a dict, for tests and single-process runs. Not durable.

Concurrent calls for the same id are serialised by a per-id lock (the loser sees the marker and
returns False); calls for different ids run in parallel. If the effect raises, no marker is set.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from fedbus.inbox import Effect, Inbox, InboxTransaction


class InMemoryInbox(Inbox):
    def __init__(self) -> None:
        self._done: dict[str, datetime] = {}
        self._guard = threading.Lock()
        # id -> (lock, number of callers holding or waiting for it); removed at zero.
        self._inflight: dict[str, tuple[threading.Lock, int]] = {}

    def process(self, message_id: str, effect: Effect) -> bool:
        with self._guard:
            if message_id in self._done:
                return False
            lock, users = self._inflight.get(message_id, (threading.Lock(), 0))
            self._inflight[message_id] = (lock, users + 1)
        try:
            with lock:
                if message_id in self._done:  # a concurrent duplicate finished first
                    return False
                effect(InboxTransaction(message_id=message_id, session=None))
                with self._guard:
                    self._done[message_id] = datetime.now(UTC)
                return True
        finally:
            with self._guard:
                lock, users = self._inflight[message_id]
                if users == 1:
                    del self._inflight[message_id]
                else:
                    self._inflight[message_id] = (lock, users - 1)

    def is_done(self, message_id: str) -> bool:
        with self._guard:
            return message_id in self._done
