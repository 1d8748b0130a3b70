"""The host's online feature source: one of its tables loaded into Redis (the design brief's
feature cache), and the Redis counters of the rate limits.

Layout (prefix = the service's redis_prefix; a *generation* is `<table>@<sha256[:16]>`, one
upload of the table):
- `<prefix>f:<generation>:<id>`: the row's features, float64 little-endian, in the table's
  column order (NaN = missing);
- `<prefix>f:<generation>:@columns`: the table's column names (JSON);
- `<prefix>f:<generation>:@source`: the table's name and the catalogue's sha256 of its data;
- `<prefix>f:@current`: the generation lookups read. Loading writes the new generation's keys
  first and moves `@current` last, so a reload never shows a half-loaded table; the previous
  generation's keys are deleted `RETIRE_AFTER_S` later (a replica's cached pointer, at most a
  second old, still finds them meanwhile).

A re-uploaded table is picked up by `FeatureRefresher`: it compares the catalogue's sha256 of
the loaded table with the one it was loaded from, and loads the new upload as a new generation.

Only the host's serving service reads these keys; its answers hold partial scores, never the
features.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis
import structlog
from fedflow.tables import Table, TableInfo

from fedserving.scoring import Floats

log = structlog.get_logger("fedserving")

LOAD_BATCH = 5000
RETIRE_AFTER_S = 5.0
"""How long a replaced generation's keys stay readable (replicas cache @current for 1 s)."""


class FeaturesMissing(LookupError):
    """Ids the feature source has no row for (-> 404 naming the party and the ids)."""

    def __init__(self, ids: list[str]) -> None:
        more = f" and {len(ids) - 1} more" if len(ids) > 1 else ""
        super().__init__(f"no features for id {ids[0]!r}{more}")
        self.ids = ids


class NoFeatureSource(LookupError):
    """No table is loaded (-> 503: the host is not ready to serve)."""


class FeatureSource(Protocol):
    """Where a host's serving service reads its online features: `rows(ids, names)` gives the
    features `names` of `ids` (rows in the order of ids; NaN = missing), raising
    FeaturesMissing for ids it has no row for, NoFeatureSource when it cannot answer, KeyError
    for a feature it does not hold. FeatureStore (a table in Redis) and
    fedserving.http_features.HttpFeatureSource (the host's own HTTP service) are the two."""

    def rows(self, ids: Sequence[str], names: Sequence[str]) -> Floats: ...


@dataclass(frozen=True)
class Loaded:
    table: str
    """The generation's key namespace (`<table>@<sha>`; a bare table name if loaded before
    generations existed)."""
    columns: tuple[str, ...]


def generation_of(name: str, sha256: str) -> str:
    return f"{name}@{sha256[:16]}" if sha256 else name


def thread_client(client: redis.Redis[bytes], local: threading.local) -> redis.Redis[bytes]:
    """This thread's own client on `client`'s connection pool, holding one connection for its
    life (made on first use). A pooled client takes a connection from the pool and gives it
    back around every command (a lock, and a poll of the socket to check it is idle: ~60 µs
    of CPU per command, a quarter of a one-id MGET's, issue #15); lookups run on the service's
    consumer threads (`threads` per topic), so each keeps one connection instead. A dropped
    connection is found by the next command (the caller tries once more, connecting again);
    `client.close()` (the pool's disconnect) closes them all."""
    found: redis.Redis[bytes] | None = getattr(local, "client", None)
    if found is None:
        found = local.client = redis.Redis(
            connection_pool=client.connection_pool, single_connection_client=True
        )
    return found


class FeatureStore:
    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._cache: tuple[float, Loaded | None] = (0.0, None)
        self._local = threading.local()
        # (loaded table, a model's feature names) -> the model's columns in the table's rows
        self._columns: dict[tuple[Loaded, tuple[str, ...]], list[int]] = {}

    def _key(self, table: str, row_id: str) -> str:
        return f"{self.prefix}f:{table}:{row_id}"

    def load(self, name: str, table: Table, sha256: str = "") -> int:
        """Put every row of `table` (the catalogue's table `name`, whose data has `sha256`) in
        a new generation and make it the current source; the previous generation's keys are
        deleted RETIRE_AFTER_S later."""
        generation = generation_of(name, sha256)
        features = np.ascontiguousarray(table.features, dtype="<f8")
        ids = [str(i) for i in table.ids.tolist()]
        for start in range(0, len(ids), LOAD_BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for i in range(start, min(start + LOAD_BATCH, len(ids))):
                pipe.set(self._key(generation, ids[i]), features[i].tobytes())
            pipe.execute()
        self.redis.set(self._key(generation, "@columns"), json.dumps(list(table.feature_names)))
        self.redis.set(
            self._key(generation, "@source"), json.dumps({"table": name, "sha256": sha256})
        )
        previous = self.redis.getset(f"{self.prefix}f:@current", generation)
        self._cache = (0.0, None)
        old = previous.decode() if isinstance(previous, bytes) else previous
        if old and old != generation:
            timer = threading.Timer(RETIRE_AFTER_S, self._retire, args=(old,))
            timer.daemon = True
            timer.start()
        return len(ids)

    def _retire(self, generation: str) -> None:
        """Delete a replaced generation's keys (unless it became current again meanwhile)."""
        current = self.redis.get(f"{self.prefix}f:@current")
        if current is not None and current.decode() == generation:
            return
        deleted = 0
        try:
            batch: list[bytes] = []
            for key in self.redis.scan_iter(match=self._key(generation, "*"), count=1000):
                batch.append(key)
                if len(batch) >= LOAD_BATCH:
                    deleted += int(self.redis.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(self.redis.unlink(*batch))
        except redis.RedisError as exc:
            log.warning("features_retire_failed", generation=generation, error=str(exc))
            return
        log.info("features_retired", generation=generation, keys=deleted)

    def source(self) -> tuple[str, str] | None:
        """The current generation's (table name, sha256 of its data); None when none is loaded
        or it was loaded before sources were recorded."""
        current = self.redis.get(f"{self.prefix}f:@current")
        if current is None:
            return None
        raw = self.redis.get(self._key(current.decode(), "@source"))
        if raw is None:
            return None
        found = json.loads(raw)
        return str(found["table"]), str(found["sha256"])

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
        columns = self._columns.get((loaded, tuple(names)))
        if columns is None:
            position = {name: i for i, name in enumerate(loaded.columns)}
            lacking = [name for name in names if name not in position]
            if lacking:
                raise KeyError(
                    f"the loaded feature table {loaded.table} has no column {lacking[0]!r}"
                )
            columns = [position[name] for name in names]
            if len(self._columns) > 64:  # tables reloaded, models published: start over
                self._columns.clear()
            self._columns[(loaded, tuple(names))] = columns
        keys = [self._key(loaded.table, i) for i in ids]
        reader = thread_client(self.redis, self._local)
        try:
            raw = reader.mget(keys)
        except redis.ConnectionError:
            # The server dropped this thread's connection (a restart, a timeout, a kill): the
            # pooled client's idle check would have found it before the command; here the
            # command finds it, and the lookup goes again on a new client.
            reader.close()  # its connection back to the pool, whose idle check reconnects it
            self._local.client = None
            raw = thread_client(self.redis, self._local).mget(keys)
        missing = [row_id for row_id, value in zip(ids, raw, strict=True) if value is None]
        if missing:
            raise FeaturesMissing(missing)
        width = len(loaded.columns)
        matrix = np.frombuffer(b"".join(raw), dtype="<f8").reshape(len(ids), width)  # type: ignore[arg-type]
        return matrix[:, columns]


class FeatureRefresher:
    """Reloads the current feature table when it was uploaded again (its catalogue sha256
    changed): every `interval_s`, one catalogue read and two Redis reads when nothing changed.
    Several replicas may notice the same upload; a Redis lock lets one of them load it."""

    def __init__(
        self,
        features: FeatureStore,
        info: Callable[[str], TableInfo | None],
        read: Callable[[str], Table],
        *,
        interval_s: float = 5.0,
    ) -> None:
        self.features = features
        self.info = info
        self.read = read
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="serving-features", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def refresh(self) -> str | None:
        """Reload the current table if its upload changed; the new generation, or None."""
        source = self.features.source()
        if source is None:
            return None
        name, loaded_sha = source
        info = self.info(name)
        if info is None or info.sha256 == loaded_sha:
            return None  # deleted from the catalogue: keep serving what is loaded
        lock = f"{self.features.prefix}f:@reloading"
        if not self.features.redis.set(lock, b"1", nx=True, ex=120):
            return None  # another replica loads it
        try:
            # The catalogue row first, then the data: a re-upload in between leaves the data
            # newer than the recorded sha, and the next pass loads it again (never the reverse).
            table = self.read(name)
            rows = self.features.load(name, table, info.sha256)
        finally:
            self.features.redis.delete(lock)
        generation = generation_of(name, info.sha256)
        log.info("features_reloaded", table=name, generation=generation, rows=rows)
        return generation

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception as exc:  # Redis, the database or the tables folder away a moment
                log.warning("features_refresh_failed", error=f"{type(exc).__name__}: {exc}")


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
