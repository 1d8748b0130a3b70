"""A process-local ChunkStore for memory:// and for single-process consumers.

Not durable across processes: an adapter that uses it with a real broker keeps chunk
deliveries unacknowledged until their set is complete (see chunking.Reassembler), so a crash
gets them redelivered instead of lost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fedbus.chunk_store import ChunkSetInfo, ChunkStore, ExpiredSet, StoredChunk


@dataclass
class _Set:
    info: ChunkSetInfo
    first_seen: float
    chunks: dict[int, bytes] = field(default_factory=dict)


class InMemoryChunkStore(ChunkStore):
    def __init__(self, *, durable: bool = False) -> None:
        # memory:// passes durable=True: its broker and this store share one process, so a
        # stored chunk lives exactly as long as the queue it came from.
        self.durable = durable
        self._lock = threading.Lock()
        self._sets: dict[tuple[str, str], _Set] = {}
        self._finished: dict[tuple[str, str], float] = {}

    def put(self, info: ChunkSetInfo, index: int, body: bytes, *, now: float) -> int:
        key = (info.topic, info.message_id)
        with self._lock:
            if key in self._finished:
                return -1
            entry = self._sets.setdefault(key, _Set(info=info, first_seen=now))
            entry.chunks.setdefault(index, body)
            return len(entry.chunks)

    def load(self, topic: str, message_id: str) -> list[StoredChunk]:
        with self._lock:
            entry = self._sets.get((topic, message_id))
            if entry is None:
                return []
            return [StoredChunk(i, b) for i, b in sorted(entry.chunks.items())]

    def finish(self, topic: str, message_id: str, *, now: float) -> None:
        with self._lock:
            self._sets.pop((topic, message_id), None)
            self._finished[(topic, message_id)] = now

    def expired(self, older_than: float, *, limit: int = 100) -> list[ExpiredSet]:
        with self._lock:
            found = [
                ExpiredSet(info=s.info, stored=len(s.chunks), first_seen=s.first_seen)
                for s in self._sets.values()
                if s.first_seen < older_than
            ]
        return found[:limit]

    def purge_finished(self, older_than: float) -> int:
        with self._lock:
            old = [k for k, t in self._finished.items() if t < older_than]
            for k in old:
                del self._finished[k]
            return len(old)
