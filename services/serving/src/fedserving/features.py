"""The host's online feature source: one of its tables loaded into Redis (the design brief's
feature cache), and the Redis counters of the rate limits.

Layout (prefix = the service's redis_prefix):
- `<prefix>f:<table>:<id>`: the row's features, float64 little-endian, in the table's column
  order (NaN = missing);
- `<prefix>f:<table>:@columns`: the table's column names (JSON);
- `<prefix>f:@current`: the table lookups read. Loading writes the new table's keys first and
  moves `@current` last, so a reload never shows a half-loaded table.

Only the host's serving service reads these keys; its answers hold partial scores, never the
features.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis
from fedflow.tables import Table

from fedserving.scoring import Floats

LOAD_BATCH = 5000


class FeaturesMissing(LookupError):
    """Ids the feature source has no row for (-> 404 naming the party and the ids)."""

    def __init__(self, ids: list[str]) -> None:
        more = f" and {len(ids) - 1} more" if len(ids) > 1 else ""
        super().__init__(f"no features for id {ids[0]!r}{more}")
        self.ids = ids


class NoFeatureSource(LookupError):
    """No table is loaded (-> 503: the host is not ready to serve)."""


@dataclass(frozen=True)
class Loaded:
    table: str
    columns: tuple[str, ...]


class FeatureStore:
    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._cache: tuple[float, Loaded | None] = (0.0, None)

    def _key(self, table: str, row_id: str) -> str:
        return f"{self.prefix}f:{table}:{row_id}"

    def load(self, name: str, table: Table) -> int:
        """Put every row of `table` under `name` and make it the current source."""
        features = np.ascontiguousarray(table.features, dtype="<f8")
        ids = [str(i) for i in table.ids.tolist()]
        for start in range(0, len(ids), LOAD_BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for i in range(start, min(start + LOAD_BATCH, len(ids))):
                pipe.set(self._key(name, ids[i]), features[i].tobytes())
            pipe.execute()
        self.redis.set(self._key(name, "@columns"), json.dumps(list(table.feature_names)))
        self.redis.set(f"{self.prefix}f:@current", name)
        self._cache = (0.0, None)
        return len(ids)

    def current(self, max_age_s: float = 1.0) -> Loaded:
        at, loaded = self._cache
        if loaded is not None and time.monotonic() - at < max_age_s:
            return loaded
        name = self.redis.get(f"{self.prefix}f:@current")
        if name is None:
            raise NoFeatureSource("no feature table is loaded (fedmq serving features load)")
        table = name.decode() if isinstance(name, bytes) else str(name)
        columns = self.redis.get(self._key(table, "@columns"))
        if columns is None:
            raise NoFeatureSource(f"feature table {table} has no column list")
        loaded = Loaded(table, tuple(json.loads(columns)))
        self._cache = (time.monotonic(), loaded)
        return loaded

    def rows(self, ids: Sequence[str], names: Sequence[str]) -> Floats:
        """The features `names` of `ids` (rows in the order of ids); FeaturesMissing lists the
        ids without a row, KeyError names a feature the loaded table lacks."""
        loaded = self.current()
        position = {name: i for i, name in enumerate(loaded.columns)}
        lacking = [name for name in names if name not in position]
        if lacking:
            raise KeyError(f"the loaded feature table {loaded.table} has no column {lacking[0]!r}")
        raw = self.redis.mget([self._key(loaded.table, i) for i in ids])
        missing = [row_id for row_id, value in zip(ids, raw, strict=True) if value is None]
        if missing:
            raise FeaturesMissing(missing)
        width = len(loaded.columns)
        matrix = np.frombuffer(b"".join(raw), dtype="<f8").reshape(len(ids), width)  # type: ignore[arg-type]
        return matrix[:, [position[name] for name in names]]


LEASE_SHARE = 50
"""A limiter takes a key's rows from Redis in leases of limit/LEASE_SHARE rows (at least the
request's own), so most requests count locally without a Redis round trip."""


@dataclass
class _Lease:
    window: int
    left: int


class RateLimiter:
    """Fixed one-second windows in Redis, shared by the service's replicas: `allow(key, n)`
    adds n to the key's count in this second and says whether it stays within the limit. A
    refused request gives its n back, so it does not eat the caller's next requests' share.

    Each process reserves rows in leases (`LEASE_SHARE`): a lease's rows count against the
    limit in Redis when taken, and the process spends them locally in the same second. The
    rows granted in a second never pass the limit, over all replicas; a replica's unspent lease
    rows are lost to the others for the rest of that second (at most limit/LEASE_SHARE each)."""

    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, n: int, limit: int) -> bool:
        window = int(time.time())
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and lease.window == window and lease.left >= n:
                lease.left -= n
                return True
        want = max(n, limit // LEASE_SHARE)
        name = f"{self.prefix}rl:{key}:{window}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(name, want)
        pipe.expire(name, 3)
        count, _ = pipe.execute()
        over = max(0, int(count) - limit)
        got = want - over
        if got < n:
            # not enough left in this second: give back all of it
            self.redis.decrby(name, want)
            return False
        if over:
            self.redis.decrby(name, over)
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and lease.window == window:
                lease.left += got - n
            else:
                self._leases[key] = _Lease(window, got - n)
        return True
