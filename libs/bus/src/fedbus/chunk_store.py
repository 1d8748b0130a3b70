"""Where a receiver keeps the chunks of a large message until the set is complete.

A chunk is acknowledged to the broker once it is stored here, so a durable store is the only
record of it; the consumer that stores the last missing chunk reassembles the message. The
store also remembers recently finished sets so that a late duplicate chunk of a set that was
already handled is recognised instead of starting a new set that could never complete.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChunkSetInfo:
    """What every chunk of one set repeats in its headers: the manifest."""

    topic: str
    message_id: str
    count: int
    total_bytes: int
    sha256: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """The original message's own headers (chunk headers removed)."""
    reply_to: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class StoredChunk:
    index: int
    body: bytes


@dataclass(frozen=True)
class ExpiredSet:
    """A set still incomplete after the reassembly timeout."""

    info: ChunkSetInfo
    stored: int
    first_seen: float


class ChunkStore(abc.ABC):
    """Chunk storage shared by every consumer of a topic that may see chunks of one set."""

    durable: bool = False
    """True when a stored chunk survives the consumer process (so it may be acked once stored)."""

    @abc.abstractmethod
    def put(self, info: ChunkSetInfo, index: int, body: bytes, *, now: float) -> int:
        """Store chunk `index` (idempotent: a duplicate changes nothing), commit, then return how
        many distinct chunks of the set are stored. Returns -1 when the set was already finished.

        Insert-commit-count ordering is what makes racing consumers safe: of two consumers that
        store the last two chunks concurrently, at least one counts the full set."""

    @abc.abstractmethod
    def load(self, topic: str, message_id: str) -> list[StoredChunk]:
        """The stored chunks of a set, ordered by index."""

    @abc.abstractmethod
    def finish(self, topic: str, message_id: str, *, now: float) -> None:
        """Delete the set's chunks and remember it as finished (for late duplicates)."""

    @abc.abstractmethod
    def expired(self, older_than: float, *, limit: int = 100) -> list[ExpiredSet]:
        """Unfinished sets whose first chunk arrived before `older_than` (epoch seconds)."""

    @abc.abstractmethod
    def purge_finished(self, older_than: float) -> int:
        """Forget finished-set markers older than `older_than`; returns how many went."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections; the default holds none."""
