"""What the serving service does with each request: the registry's lifecycle, the guest's
prediction and the host's partial scores.

Two entry points, both JSON in, JSON out (`{"ok": true, "data": ...}` or `{"ok": false,
"status": <HTTP status>, "error": "..."}`):

- `Serving.local(request)`: the party's own callers (the gateway's REST API, `fedmq serving`)
  on the party-local topic `svc.serving.rpc`: publish, list, show, accept, delete models; bind,
  canary, switch, rollback, unbind services; predict; load the feature table.
- `Serving.remote(caller_party, body)`: another party's serving service, through both gateways
  (request/reply with a deadline, docs/gateway.md): `propose` (a guest publishes a model whose
  host part is here), `state` (is it accepted), `partial` (this host's partial scores for ids).

Nothing here touches the bus: calls to other parties go through the `call` function given
(fedbus.remote.RemoteCaller.call in the service), so tests can wire parties in one process.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
from fedbus.remote import RemoteCallError, RemoteRefused, RemoteTimeout
from fedcrypto.signing import SigningKey
from fedflow.artifacts import ArtifactMissing, ArtifactStore, ModelArtifact
from fedflow.components.hetero_lr.session import INTERCEPT
from fedflow.tables import Table, TableError, TableStore
from fedschemas import topics
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from fedserving import homo_nn, scoring, secureboost
from fedserving.coalesce import HostCalls
from fedserving.exports import ExportRefused, export_model, import_model
from fedserving.features import (
    FeaturesMissing,
    FeatureSource,
    FeatureStore,
    NoFeatureSource,
    RateLimiter,
)
from fedserving.metrics import ServingMetrics
from fedserving.registry import (
    DRAINING,
    PARTIAL,
    PENDING,
    READY,
    Binding,
    ModelVersion,
    Registry,
    RegistryError,
    now,
)

log = structlog.get_logger("fedserving")

SERVICE_TOPIC = topics.SERVING
"""Where other parties' calls arrive (the gateway's rpc_services must expose it to them)."""
RPC_TOPIC = topics.SERVING_RPC
"""Party-local request/reply of the REST API and the CLI (never relayed)."""
PROPOSE_TIMEOUT_S = 15.0
ALGORITHM = "hetero_lr"

RemoteCall = Callable[[str, str, bytes, float], bytes]
"""(party, service topic, body, timeout) -> reply body; raises fedbus.remote errors."""
JobParties = Callable[[str], dict[str, list[str]]]
"""job id -> {party: roles} (the party's scheduler)."""


class Refused(Exception):
    """A request answered with an HTTP status and a message."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def bucket(service_id: str, key: str) -> float:
    """A request key's place in 0..100 for the canary split: the same key always lands in the
    same place (sticky), and keys spread evenly."""
    digest = hashlib.sha256(f"{service_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def route(binding: Binding, key: str) -> int:
    """The model version that serves `key` under `binding`."""
    canary = binding.canary_version
    if canary is not None and bucket(binding.service_id, key) < binding.canary_percent:
        return canary
    return binding.version


def model_weights(table: Table, component: str) -> tuple[tuple[str, ...], np.ndarray]:
    """A hetero_lr model output's feature names and weights (one row per feature name)."""
    if list(table.feature_names) != ["weight"]:
        raise Refused(
            422, f"{component}.model is not a hetero_lr model (columns {list(table.feature_names)})"
        )
    names = tuple(str(name) for name in table.ids.tolist())
    return names, np.asarray(table.features[:, 0], dtype=np.float64)


def model_part(
    found: Table | ModelArtifact, component: str, role: str
) -> tuple[str, tuple[str, ...], np.ndarray, bytes | None]:
    """A job's model output as this party's part: (algorithm, feature names, hetero_lr
    weights, a tree model's artifact bytes); 422 for a model this service cannot serve."""
    if isinstance(found, ModelArtifact):
        if not secureboost.is_secureboost(found):
            raise Refused(
                422, f"{component}.model is a {found.document.get('component')} model, not served"
            )
        try:
            names = secureboost.check_part(found, role)
        except secureboost.BoostError as exc:
            raise Refused(422, f"{component}.model: {exc}") from None
        return secureboost.ALGORITHM, names, np.zeros(0), found.to_bytes()
    names, weights = model_weights(found, component)
    if homo_nn.is_torch(names):
        raise Refused(
            422,
            f"{component}.model is a PyTorch homo_nn model: not served (it would run its module)",
        )
    features = homo_nn.layout(names)
    if features is not None:  # the built-in homo_nn network: the whole model, at one party
        if role != "guest":
            raise Refused(422, f"{component}.model is a homo_nn model: it has no host part")
        return homo_nn.ALGORITHM, (*features, INTERCEPT), weights, None
    if (role == "guest") != (INTERCEPT in names):
        raise Refused(422, f"{component}.model is not the {role}'s part of a hetero_lr model")
    return ALGORITHM, names, weights, None


@dataclass(frozen=True)
class _Request:
    """One predict request's rows (ids and the guest's features), caller and deadline."""

    ids: list[str]
    features: list[Mapping[str, Any]]
    caller: str
    timeout: float


@dataclass
class Inflight:
    """Requests being served per service id (what an unbind waits for)."""

    counts: dict[str, int]
    lock: threading.Condition

    @classmethod
    def new(cls) -> Inflight:
        return cls(defaultdict(int), threading.Condition())

    @contextmanager
    def held(self, service_id: str) -> Iterator[None]:
        with self.lock:
            self.counts[service_id] += 1
        try:
            yield
        finally:
            with self.lock:
                self.counts[service_id] -= 1
                self.lock.notify_all()

    def wait_idle(self, service_id: str, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.counts[service_id] <= 0, timeout)


class Serving:
    def __init__(
        self,
        party_id: str,
        registry: Registry,
        *,
        features: FeatureStore,
        limiter: RateLimiter,
        call: RemoteCall,
        artifacts: ArtifactStore,
        tables: TableStore | None,
        job_parties: JobParties,
        metrics: ServingMetrics,
        accept_models_from: tuple[str, ...] = (),
        host_timeout_s: float = 0.5,
        rate_limit_rows_per_s: int = 5000,
        host_rate_limit_rows_per_s: int = 200_000,
        max_batch_rows: int = 10_000,
        binding_refresh_s: float = 1.0,
        pool_threads: int = 16,
        host_call_concurrency: int = 2,
        signing_key: SigningKey | None = None,
        import_trusted_keys: tuple[str, ...] = (),
        lookup: FeatureSource | None = None,
    ) -> None:
        """`lookup`: where a host reads its online features (default: `features`, the table
        loaded into Redis; the HTTP feature-lookup adapter when configured)."""
        self.party_id = party_id
        self.registry = registry
        self.features = features
        self.lookup: FeatureSource = lookup if lookup is not None else features
        self.limiter = limiter
        self.call = call
        self.artifacts = artifacts
        self.tables = tables
        self.job_parties = job_parties
        self.metrics = metrics
        self.accept_models_from = accept_models_from
        self.host_timeout_s = host_timeout_s
        self.rate_limit = rate_limit_rows_per_s
        self.host_rate_limit = host_rate_limit_rows_per_s
        self.max_batch_rows = max_batch_rows
        self.refresh_s = binding_refresh_s
        self.key = signing_key or SigningKey.generate()
        self.trusted = {k.strip().lower() for k in import_trusted_keys}
        self.trusted.add(self.key.verify_key().to_bytes().hex())
        self.inflight = Inflight.new()
        self._bindings: dict[str, tuple[float, Binding | None]] = {}
        self._models: dict[tuple[str, str, int], tuple[float, ModelVersion]] = {}
        self._generation: dict[Any, int] = defaultdict(int)
        self._cache_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(pool_threads, thread_name_prefix="serving-hosts")
        # Concurrent requests' calls to a host share one call (fedserving.coalesce).
        self.host_calls = HostCalls(
            lambda host, body, timeout: self.call(host, SERVICE_TOPIC, body, timeout),
            concurrency=host_call_concurrency,
            max_rows=max_batch_rows,
            on_call=lambda host, rows: self.metrics.host_calls.labels(host).inc(),
        )
        self._refresher = ThreadPoolExecutor(1, thread_name_prefix="serving-refresh")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._refresher.shutdown(wait=False, cancel_futures=True)

    # -- entry points ---------------------------------------------------------------------

    def local(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        handler = self._LOCAL_OPS.get(str(op))
        if handler is None:
            return _refusal(400, f"unknown op {op!r}; known: {sorted(self._LOCAL_OPS)}")
        return self._answer(lambda: handler(self, dict(request.get("args") or {})))

    def remote(self, caller_party: str, body: bytes) -> bytes:
        def run() -> Any:
            request = json.loads(body)
            op = request.get("op")
            if op == "partial":
                started = time.perf_counter()
                try:
                    return self._partial(caller_party, request)
                finally:
                    self.metrics.partial_seconds.labels(caller_party).observe(
                        time.perf_counter() - started
                    )
            if op == "propose":
                return self._propose_here(caller_party, request)
            if op == "state":
                model = self.registry.model(
                    str(request["name"]), int(request["version"]), caller_party
                )
                # Two publishes of one name can race for a version: the one this party
                # accepted may be another job's than the guest kept. Not ready for that one.
                job = request.get("job_id")
                if job is not None and job != model.job_id:
                    return {
                        "state": f"refused: party {self.party_id} holds version "
                        f"{model.version} of {model.name} from job {model.job_id}, not {job}"
                    }
                return {"state": model.state}
            raise Refused(400, f"unknown remote op {op!r}")

        return json.dumps(self._answer(run)).encode()

    @staticmethod
    def _answer(run: Callable[[], Any]) -> dict[str, Any]:
        try:
            return {"ok": True, "data": run()}
        except Refused as exc:
            return _refusal(exc.status, exc.message, **exc.extra)
        except RegistryError as exc:
            return _refusal(exc.status, exc.message)
        except (KeyError, TypeError, ValueError) as exc:
            return _refusal(400, f"bad request: {type(exc).__name__}: {exc}")
        except ProgrammingError as exc:
            # The workers' tables (job outputs, the table catalogue) are not in the party's
            # database yet: nothing was trained or uploaded here.
            log.warning("serving_tables_missing", error=str(exc.orig))
            return _refusal(404, "no job outputs or tables at this party yet")
        except IntegrityError:
            # Two replicas (or requests) made the same row at once, past each one's check
            # (bind of one service id, publish of one version): the loser is a conflict.
            return _refusal(409, "a change made at the same moment conflicts: look and retry")
        except SQLAlchemyError as exc:
            log.warning("serving_database_error", error=type(exc).__name__)
            return _refusal(503, f"the party's database did not answer ({type(exc).__name__})")
        except Exception:
            # Answered, never redelivered: a request that breaks the service would otherwise
            # be retried until the bus dead-letters it, and its caller wait for nothing.
            log.exception("serving_request_failed")
            return _refusal(500, "internal error in the serving service")

    # -- models ---------------------------------------------------------------------------

    def _publish(self, args: dict[str, Any]) -> dict[str, Any]:
        job_id, name = str(args["job_id"]), str(args["name"])
        component = str(args.get("component") or "hetero_lr_0")
        guest_only = bool(args.get("guest_only", False))
        try:
            found = self.artifacts.get_artifact(
                job_id, self.party_id, "guest", f"{component}.model"
            )
        except ArtifactMissing as exc:
            raise Refused(404, str(exc)) from None
        algorithm, names, weights, artifact = model_part(found, component, "guest")
        if artifact is not None and guest_only:
            raise Refused(422, "a hetero_secureboost model needs its hosts' splits: no guest_only")
        if algorithm == homo_nn.ALGORITHM and not guest_only:
            raise Refused(422, "a homo_nn model is served at one party: publish it guest_only")
        hosts: list[str] = []
        if not guest_only:
            parties = self.job_parties(job_id)
            hosts = sorted(p for p, roles in parties.items() if "host" in roles)
        version = self.registry.next_version(name)
        states = {host: self._propose(host, name, version, job_id, component) for host in hosts}
        state = READY if all(s == READY for s in states.values()) else PARTIAL
        model = ModelVersion(
            owner_party=self.party_id,
            name=name,
            version=version,
            algorithm=algorithm,
            role="guest",
            job_id=job_id,
            component=component,
            state=state,
            feature_names=names,
            weights=weights,
            artifact=artifact,
            hosts=states,
            created_at=now(),
        )
        self.registry.add_model(model, guest_only=guest_only)
        log.info("model_published", name=name, version=version, job_id=job_id, hosts=states)
        return model.view()

    def _propose(self, host: str, name: str, version: int, job_id: str, component: str) -> str:
        body = {
            "op": "propose",
            "name": name,
            "version": version,
            "job_id": job_id,
            "component": component,
        }
        try:
            answer = json.loads(
                self.call(host, SERVICE_TOPIC, json.dumps(body).encode(), PROPOSE_TIMEOUT_S)
            )
        except RemoteCallError as exc:
            return f"unreachable: {exc}"
        if not answer.get("ok"):
            return f"refused: {answer.get('error')}"
        return str(answer["data"]["state"])

    def _propose_here(self, guest: str, request: dict[str, Any]) -> dict[str, Any]:
        job_id, component = str(request["job_id"]), str(request["component"])
        try:
            found = self.artifacts.get_artifact(job_id, self.party_id, "host", f"{component}.model")
        except ArtifactMissing:
            raise Refused(
                404, f"party {self.party_id} holds no host part of {component} in job {job_id}"
            ) from None
        algorithm, names, weights, artifact = model_part(found, component, "host")
        accepted = "*" in self.accept_models_from or guest in self.accept_models_from
        model = ModelVersion(
            owner_party=guest,
            name=str(request["name"]),
            version=int(request["version"]),
            algorithm=algorithm,
            role="host",
            job_id=job_id,
            component=component,
            state=READY if accepted else PENDING,
            feature_names=names,
            weights=weights,
            artifact=artifact,
            created_at=now(),
        )
        self.registry.add_model(model, action="propose", proposed_by=guest)
        return {"state": model.state, "features": len(names)}

    def _refresh_hosts(self, model: ModelVersion) -> ModelVersion:
        """Ask each host that had not accepted yet whether it has now."""
        if model.state != PARTIAL:
            return model
        states = dict(model.hosts)
        for host, state in model.hosts.items():
            if state == READY:
                continue
            try:
                answer = json.loads(
                    self.call(
                        host,
                        SERVICE_TOPIC,
                        json.dumps(
                            {
                                "op": "state",
                                "name": model.name,
                                "version": model.version,
                                "job_id": model.job_id,
                            }
                        ).encode(),
                        PROPOSE_TIMEOUT_S,
                    )
                )
            except RemoteCallError:
                continue
            if answer.get("ok"):
                states[host] = str(answer["data"]["state"])
        if states != model.hosts:
            state = READY if all(s == READY for s in states.values()) else PARTIAL
            self.registry.set_model_state(
                model.name, model.version, state, hosts=states, action="hosts_accepted"
            )
            self._forget_models()
            return self.registry.model(model.name, model.version)
        return model

    def _list_models(self, args: dict[str, Any]) -> dict[str, Any]:
        found = [m.view() for m in self.registry.models(args.get("name"))]
        return {"data": found, "count": len(found)}

    def _show(self, args: dict[str, Any]) -> dict[str, Any]:
        owner = args.get("owner_party")
        model = self.registry.model(str(args["name"]), int(args["version"]), owner)
        if model.owner_party == self.party_id:
            model = self._refresh_hosts(model)
        return model.view()

    def _accept(self, args: dict[str, Any]) -> dict[str, Any]:
        owner = str(args["owner_party"])
        self.registry.set_model_state(
            str(args["name"]), int(args["version"]), READY, owner_party=owner
        )
        self._forget_models()
        return self.registry.model(str(args["name"]), int(args["version"]), owner).view()

    def _delete(self, args: dict[str, Any]) -> dict[str, Any]:
        owner = args.get("owner_party")
        self.registry.delete_model(str(args["name"]), int(args["version"]), owner)
        self._forget_models()
        return {"deleted": True}

    def _export(self, args: dict[str, Any]) -> dict[str, Any]:
        model = self.registry.model(
            str(args["name"]), int(args["version"]), args.get("owner_party")
        )
        return export_model(model, self.party_id, self.key)

    def _import(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            model = import_model(args["document"], self.trusted)
        except ExportRefused as exc:
            raise Refused(422, str(exc)) from None
        self.registry.add_model(model, action="import", signed_by=args["document"]["public_key"])
        return model.view()

    # -- services -------------------------------------------------------------------------

    def _cached(
        self, cache: dict[Any, tuple[float, Any]], key: Any, load: Callable[[], Any]
    ) -> Any:
        """The cached value of `key`, read with `load` when unknown. A value older than
        refresh_s is still answered (a request never waits for the database once the value is
        known) while one background read replaces it; a value this process changed itself
        (bind, switch, accept, delete) is replaced at once. refresh_s = 0: read every time."""
        tag = (id(cache), key)
        with self._cache_lock:
            cached = cache.get(key)
            if cached is not None and self.refresh_s > 0:
                at, value = cached
                if time.monotonic() - at >= self.refresh_s:
                    # this thread refreshes; the others keep answering the known value
                    cache[key] = (time.monotonic(), value)
                    self._refresher.submit(self._refresh, cache, key, load, self._generation[tag])
                return value
            generation = self._generation[tag]
        value = load()
        with self._cache_lock:
            if self._generation[tag] == generation:
                cache[key] = (time.monotonic(), value)
        return value

    def _refresh(
        self,
        cache: dict[Any, tuple[float, Any]],
        key: Any,
        load: Callable[[], Any],
        generation: int,
    ) -> None:
        tag = (id(cache), key)
        try:
            value = load()
        except RegistryError:
            # gone (deleted elsewhere): the next request reads, and answers the error
            with self._cache_lock:
                if self._generation[tag] == generation:
                    cache.pop(key, None)
            return
        except Exception as exc:
            log.warning("serving_refresh_failed", key=str(key), error=type(exc).__name__)
            return
        with self._cache_lock:
            if self._generation[tag] == generation:
                cache[key] = (time.monotonic(), value)

    def _binding(self, service_id: str) -> Binding | None:
        found: Binding | None = self._cached(
            self._bindings, service_id, lambda: self.registry.binding(service_id)
        )
        return found

    def _set_binding(self, binding: Binding | None, service_id: str) -> None:
        with self._cache_lock:
            self._generation[(id(self._bindings), service_id)] += 1
            self._bindings[service_id] = (time.monotonic(), binding)

    def _forget_models(self) -> None:
        with self._cache_lock:
            for key in self._models:
                self._generation[(id(self._models), key)] += 1
            self._models.clear()

    def _model(self, owner: str, name: str, version: int) -> ModelVersion:
        model: ModelVersion = self._cached(
            self._models, (owner, name, version), lambda: self.registry.model(name, version, owner)
        )
        return model

    def _bind(self, args: dict[str, Any]) -> dict[str, Any]:
        service_id = str(args["service_id"])
        binding = self.registry.bind(
            service_id,
            str(args["name"]),
            int(args["version"]),
            str(args.get("fallback") or "refuse"),
        )
        self._set_binding(binding, service_id)
        return self._service_view(binding)

    def _canary(self, args: dict[str, Any]) -> dict[str, Any]:
        service_id = str(args["service_id"])
        version = args.get("version")
        binding = self.registry.canary(
            service_id, None if version is None else int(version), float(args.get("percent", 0))
        )
        self._set_binding(binding, service_id)
        return self._service_view(binding)

    def _switch(self, args: dict[str, Any]) -> dict[str, Any]:
        service_id = str(args["service_id"])
        binding = self.registry.switch(service_id, int(args["version"]))
        self._set_binding(binding, service_id)
        return self._service_view(binding)

    def _rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        service_id = str(args["service_id"])
        binding = self.registry.rollback(service_id)
        self._set_binding(binding, service_id)
        return self._service_view(binding)

    def _unbind(self, args: dict[str, Any]) -> dict[str, Any]:
        """Stop taking requests for the service, wait for the ones in flight, then remove it."""
        service_id = str(args["service_id"])
        timeout = float(args.get("drain_timeout_s", 30.0))
        binding = self.registry.set_draining(service_id)
        self._set_binding(binding, service_id)
        started = time.monotonic()
        drained = self.inflight.wait_idle(service_id, timeout)
        self.registry.remove(
            service_id, drained=drained, drain_seconds=round(time.monotonic() - started, 3)
        )
        self._set_binding(None, service_id)
        return {"service_id": service_id, "unbound": True, "drained": drained}

    def _service_view(self, binding: Binding) -> dict[str, Any]:
        model = self._model(self.party_id, binding.model_name, binding.version)
        return {
            **binding.view(),
            "feature_names": scoring.guest_features(model.feature_names),
            "hosts": sorted(model.hosts),
            "in_flight": self.inflight.counts.get(binding.service_id, 0),
        }

    def _services(self, args: dict[str, Any]) -> dict[str, Any]:
        found = [self._service_view(b) for b in self.registry.bindings()]
        return {"data": found, "count": len(found)}

    def _service(self, args: dict[str, Any]) -> dict[str, Any]:
        service_id = str(args["service_id"])
        binding = self.registry.binding(service_id)
        if binding is None:
            raise Refused(404, f"no service {service_id} at party {self.party_id}")
        return self._service_view(binding)

    def _events(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self.registry.events(args.get("service_id"), int(args.get("limit", 1000)))
        return {"data": found, "count": len(found)}

    # -- features (host) ------------------------------------------------------------------

    def _load_features(self, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args["table"])
        if self.lookup is not self.features:
            raise Refused(
                409,
                f"party {self.party_id} reads its online features from its feature service "
                "(feature_source = http), not from a loaded table",
            )
        if self.tables is None:
            raise Refused(503, "this serving service has no table store configured")
        try:
            info = self.tables.get(name)
            table = self.tables.read(name)
        except TableError as exc:
            raise Refused(404, str(exc)) from None
        rows = self.features.load(name, table, info.sha256 if info is not None else "")
        log.info("features_loaded", table=name, rows=rows)
        return {"table": name, "rows": rows, "columns": list(table.feature_names)}

    # -- prediction (guest) ---------------------------------------------------------------

    def _predict(self, args: dict[str, Any]) -> dict[str, Any]:
        """One request (a batch of rows, or one row): its answer, or its refusal raised."""
        binding = self._live_binding(str(args["service_id"]))
        with self.inflight.held(binding.service_id):
            [answer] = self._score_many(binding, [self._request_of(args)])
        if isinstance(answer, Refused):
            raise answer
        return answer

    def _predict_many(self, args: dict[str, Any]) -> dict[str, Any]:
        """Concurrent requests of one service that the gateway sent as one message
        (fedgateway.api.serving_batch): `{"answers": [...]}`, one answer or refusal per
        request in their order, as `predict` would have given each. Their rows are scored
        together: one host call for all of them where the host's answer concerns them all."""
        requests = args["requests"]
        if not isinstance(requests, list) or not requests:
            raise Refused(422, "requests must be a non-empty list")
        binding = self._live_binding(str(args["service_id"]))
        parsed = [
            self._request_of(r) if isinstance(r, dict) else Refused(422, "a request is an object")
            for r in requests
        ]
        with self.inflight.held(binding.service_id):
            answers = self._score_many(binding, parsed)
        return {
            "answers": [
                _refusal(a.status, a.message, **a.extra)
                if isinstance(a, Refused)
                else {"ok": True, "data": a}
                for a in answers
            ]
        }

    def _live_binding(self, service_id: str) -> Binding:
        binding = self._binding(service_id)
        if binding is None:
            raise Refused(404, f"no service {service_id} at party {self.party_id}")
        if binding.state == DRAINING:
            raise Refused(404, f"service {service_id} is being unbound")
        return binding

    def _request_of(self, args: Mapping[str, Any]) -> _Request | Refused:
        """A predict request's rows, caller and deadline, or why it is refused (422)."""
        rows = args.get("rows")
        if not isinstance(rows, list) or not rows:
            return Refused(422, "rows must be a non-empty list")
        if len(rows) > self.max_batch_rows:
            return Refused(422, f"at most {self.max_batch_rows} rows per request, got {len(rows)}")
        ids: list[str] = []
        features: list[Mapping[str, Any]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("id"), str | int):
                return Refused(422, f"row {i}: needs an id and features")
            if not isinstance(row.get("features"), dict):
                return Refused(422, f"row {i}: features must be an object of name: number")
            ids.append(str(row["id"]))
            features.append(row["features"])
        try:
            timeout = min(float(args.get("timeout_s") or self.host_timeout_s), 30.0)
        except (TypeError, ValueError):
            return Refused(422, "timeout_s must be a number")
        return _Request(ids, features, str(args.get("caller") or "anonymous"), timeout)

    def _score_many(
        self, binding: Binding, requests: list[_Request | Refused]
    ) -> list[dict[str, Any] | Refused]:
        """Each request's answer or refusal. The rows of all requests that share a model
        version and a deadline are scored as one (one call per host); when that fails, each
        request of the group is scored alone, so that a refusal (a feature that does not fit,
        an id a host lacks) is only the request's that caused it."""
        started = time.perf_counter()
        out: list[dict[str, Any] | Refused | None] = []
        for request in requests:
            if isinstance(request, _Request) and not self.limiter.allow(
                f"caller:{request.caller}", len(request.ids), self.rate_limit
            ):
                self.metrics.rate_limited.labels("caller").inc()
                # Counted as every request is, once per version its rows would have gone to
                for version in {route(binding, key) for key in request.ids}:
                    self.metrics.requests.labels(
                        binding.service_id, str(version), self.party_id, "rate_limited"
                    ).inc()
                request = Refused(
                    429, f"rate limit: at most {self.rate_limit} rows per second per caller"
                )
            out.append(request if isinstance(request, Refused) else None)
        # (version, deadline) -> [(request index, positions of its rows in that version)]
        groups: dict[tuple[int, float], list[tuple[int, list[int]]]] = defaultdict(list)
        for k, request in enumerate(requests):
            if out[k] is not None or not isinstance(request, _Request):
                continue
            by_version: dict[int, list[int]] = defaultdict(list)
            for i, key in enumerate(request.ids):
                by_version[route(binding, key)].append(i)
            for version, positions in by_version.items():
                groups[(version, request.timeout)].append((k, positions))
        scored: dict[int, tuple[np.ndarray, np.ndarray, bool]] = {}
        for (version, timeout), members in groups.items():
            labels = (binding.service_id, str(version))
            parts = [r for k, _ in members if isinstance(r := requests[k], _Request)]
            outcome = self._score_group(binding, version, members, parts, timeout)
            for (k, positions), result in zip(members, outcome, strict=True):
                if out[k] is not None:
                    continue  # refused in another version's group
                if isinstance(result, Refused):
                    self.metrics.requests.labels(
                        *labels, self.party_id, _outcome(result.status)
                    ).inc()
                    out[k] = result
                    continue
                request = requests[k]
                assert isinstance(request, _Request)
                score, version_of, fallback = scored.setdefault(
                    k,
                    (
                        np.empty(len(request.ids), dtype=np.float64),
                        np.empty(len(request.ids), dtype=np.int64),
                        False,
                    ),
                )
                score[positions] = result[0]
                version_of[positions] = version
                scored[k] = (score, version_of, fallback or result[1])
                self.metrics.requests.labels(
                    *labels, self.party_id, "fallback" if result[1] else "ok"
                ).inc()
                self.metrics.rows.labels(*labels).inc(len(positions))
                self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - started)
        answers: list[dict[str, Any] | Refused] = []
        for k, request in enumerate(requests):
            done = out[k]
            if done is not None:
                answers.append(done)
                continue
            assert isinstance(request, _Request)
            score, version_of, fallback = scored[k]
            answers.append(
                {
                    "service_id": binding.service_id,
                    "model": binding.model_name,
                    "fallback": fallback,
                    "results": [
                        {"id": row_id, "score": float(s), "version": int(v)}
                        for row_id, s, v in zip(
                            request.ids, score.tolist(), version_of.tolist(), strict=True
                        )
                    ],
                }
            )
        return answers

    def _score_group(
        self,
        binding: Binding,
        version: int,
        members: list[tuple[int, list[int]]],
        requests: list[_Request],
        timeout: float,
    ) -> list[tuple[np.ndarray, bool] | Refused]:
        """Scores (and whether the guest-only fallback gave them) of each member's rows in
        `version`, scored together. A refusal that names its cause (features that do not fit:
        422; ids a host lacks: 404) goes to the members that caused it and the others are
        scored again together; any other (a silent host, a rate limit) is every member's."""
        ids = [requests[m].ids[i] for m, (_, positions) in enumerate(members) for i in positions]
        rows = [
            requests[m].features[i] for m, (_, positions) in enumerate(members) for i in positions
        ]
        try:
            z, fallback = self._version_scores(binding, version, ids, rows, timeout)
        except Refused as exc:
            if len(members) == 1:
                return [exc]
            found: list[tuple[np.ndarray, bool] | Refused | None] = [
                self._culprit(exc, binding, version, requests[m], positions)
                for m, (_, positions) in enumerate(members)
            ]
            innocent = [m for m, f in enumerate(found) if f is None]
            if len(innocent) == len(members):
                return [exc] * len(members)
            if innocent:
                again = self._score_group(
                    binding,
                    version,
                    [members[m] for m in innocent],
                    [requests[m] for m in innocent],
                    timeout,
                )
                for m, result in zip(innocent, again, strict=True):
                    found[m] = result
            return [f for f in found if f is not None]
        shares: list[tuple[np.ndarray, bool] | Refused] = []
        at = 0
        for _, positions in members:
            shares.append((z[at : at + len(positions)], fallback))
            at += len(positions)
        return shares

    def _culprit(
        self,
        exc: Refused,
        binding: Binding,
        version: int,
        request: _Request,
        positions: list[int],
    ) -> Refused | None:
        """`request`'s own refusal when it caused `exc` (a refusal of several requests' rows
        scored together), else None."""
        if exc.status == 404 and exc.extra.get("ids"):
            lacking = {str(i) for i in exc.extra["ids"]}
            mine = [request.ids[i] for i in positions if request.ids[i] in lacking]
            if not mine:
                return None
            more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
            head = exc.message.split(" has no features for id ")[0]
            return Refused(
                404,
                f"{head} has no features for id {mine[0]!r}{more}",
                **{**exc.extra, "ids": mine[:100]},
            )
        if exc.status == 422:
            model = self._model(self.party_id, binding.model_name, version)
            try:
                scoring.guest_matrix([request.features[i] for i in positions], model.feature_names)
            except scoring.FeatureError as bad:
                return Refused(422, str(bad))
            return None
        return exc

    def _version_scores(
        self,
        binding: Binding,
        version: int,
        ids: list[str],
        rows: list[Mapping[str, Any]],
        timeout: float,
    ) -> tuple[np.ndarray, bool]:
        """The rows' scores under `version` (probabilities for binary models), and whether the
        guest-only fallback gave them; Refused when they cannot be scored."""
        try:
            model = self._model(self.party_id, binding.model_name, version)
        except RegistryError as exc:
            raise Refused(exc.status, exc.message) from None
        if model.artifact is not None:  # a tree model's scorer gives scores
            return self._boost(binding, model, ids, rows, timeout)
        if model.algorithm == homo_nn.ALGORITHM:  # the whole network is here: no host
            try:
                x = scoring.guest_matrix(rows, model.feature_names)
            except scoring.FeatureError as exc:
                raise Refused(422, str(exc)) from None
            return homo_nn.scores(x, model.weights), False
        z, fallback = self._linear(binding, model, ids, rows, timeout)
        return scoring.scores(z), fallback

    def _linear(
        self,
        binding: Binding,
        model: ModelVersion,
        ids: list[str],
        rows: list[Mapping[str, Any]],
        timeout: float,
    ) -> tuple[np.ndarray, bool]:
        try:
            x = scoring.guest_matrix(rows, model.feature_names)
        except scoring.FeatureError as exc:
            raise Refused(422, str(exc)) from None
        z = scoring.guest_linear(x, model.weights)
        hosts = sorted(model.hosts)
        if not hosts:
            return z, False
        labels = (binding.service_id, str(model.version))
        if len(hosts) == 1:
            answers = [self._host_scores(hosts[0], model, ids, timeout, labels)]
        else:
            answers = list(
                self._pool.map(
                    lambda host: self._host_scores(host, model, ids, timeout, labels), hosts
                )
            )
        silent = [a for a in answers if isinstance(a, Refused)]
        if silent:
            first = silent[0]
            if first.status == 503 and binding.fallback == "guest_only":
                return z, True
            raise first
        for partial in answers:
            assert not isinstance(partial, Refused)
            z = z + partial
        return z, False

    def _host_scores(
        self,
        host: str,
        model: ModelVersion,
        ids: list[str],
        timeout: float,
        labels: tuple[str, str],
    ) -> np.ndarray | Refused:
        started = time.perf_counter()
        try:
            answer = self.host_calls.partial(host, model.name, model.version, ids, timeout)
        except RemoteTimeout as exc:
            self.metrics.requests.labels(*labels, host, "timeout").inc()
            return Refused(
                503,
                f"host party {host} did not answer within {timeout:.3f} s ({exc.kind})",
                party=host,
            )
        except RemoteRefused as exc:
            self.metrics.requests.labels(*labels, host, "refused").inc()
            return Refused(503, f"host party {host} refused the call: {exc}", party=host)
        except RemoteCallError as exc:
            self.metrics.requests.labels(*labels, host, "failed").inc()
            return Refused(503, f"host party {host} failed: {exc}", party=host)
        finally:
            self.metrics.host_call_seconds.labels(host).observe(time.perf_counter() - started)
        if not answer.get("ok"):
            status = int(answer.get("status", 502))
            self.metrics.requests.labels(*labels, host, _outcome(status)).inc()
            extra = {k: answer[k] for k in ("ids",) if k in answer}
            return Refused(status, f"host party {host}: {answer.get('error')}", party=host, **extra)
        self.metrics.requests.labels(*labels, host, "ok").inc()
        return np.asarray(answer["data"]["scores"], dtype=np.float64)

    def _boost(
        self,
        binding: Binding,
        model: ModelVersion,
        ids: list[str],
        rows: list[Mapping[str, Any]],
        timeout: float,
    ) -> tuple[np.ndarray, bool]:
        """A hetero_secureboost version's scores: each host's split directions for the ids, the
        trees walked here (fedserving.secureboost). No guest-only fallback: the trees need
        every host's nodes."""
        assert model.artifact is not None
        try:
            x = scoring.guest_matrix(rows, model.feature_names)
        except scoring.FeatureError as exc:
            raise Refused(422, str(exc)) from None
        body = json.dumps(
            {"op": "partial", "name": model.name, "version": model.version, "ids": ids}
        ).encode()
        labels = (binding.service_id, str(model.version))
        hosts = secureboost.guest_hosts(model.artifact)
        answers = list(
            self._pool.map(lambda host: self._host_answer(host, body, timeout, labels), hosts)
        )
        directions: dict[str, dict[str, Any]] = {}
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, Refused):
                raise answer
            directions[host] = answer
        try:
            found = secureboost.guest_scores(model.artifact, x, directions)
        except (secureboost.BoostError, KeyError, ValueError) as exc:
            raise Refused(502, f"a host's split directions do not fit the model: {exc}") from None
        return found, False

    def _host_answer(
        self, host: str, body: bytes, timeout: float, labels: tuple[str, str]
    ) -> dict[str, Any] | Refused:
        """One host's answer's data (a tree model's directions), or the refusal to give."""
        started = time.perf_counter()
        try:
            reply = self.call(host, SERVICE_TOPIC, body, timeout)
        except RemoteTimeout as exc:
            self.metrics.requests.labels(*labels, host, "timeout").inc()
            return Refused(
                503,
                f"host party {host} did not answer within {timeout:.3f} s ({exc.kind})",
                party=host,
            )
        except RemoteCallError as exc:
            self.metrics.requests.labels(*labels, host, "failed").inc()
            return Refused(503, f"host party {host} failed: {exc}", party=host)
        finally:
            self.metrics.host_call_seconds.labels(host).observe(time.perf_counter() - started)
        answer = json.loads(reply)
        if not answer.get("ok"):
            status = int(answer.get("status", 502))
            self.metrics.requests.labels(*labels, host, _outcome(status)).inc()
            extra = {k: answer[k] for k in ("ids",) if k in answer}
            return Refused(status, f"host party {host}: {answer.get('error')}", party=host, **extra)
        self.metrics.requests.labels(*labels, host, "ok").inc()
        data: dict[str, Any] = answer["data"]
        return data

    # -- partial scores (host) ------------------------------------------------------------

    def _partial(self, guest: str, request: dict[str, Any]) -> dict[str, Any]:
        name, version = str(request["name"]), int(request["version"])
        ids = [str(i) for i in request["ids"]]
        if not 0 < len(ids) <= self.max_batch_rows:
            raise Refused(422, f"between 1 and {self.max_batch_rows} ids per request")
        label = f"{name}:{version}"
        try:
            model = self._model(guest, name, version)
        except RegistryError as exc:
            self.metrics.partial_requests.labels(guest, label, "unknown_model").inc()
            raise Refused(409, exc.message) from None
        if model.state != READY:
            self.metrics.partial_requests.labels(guest, label, "not_accepted").inc()
            raise Refused(
                409, f"model {name} version {version} is {model.state} at party {self.party_id}"
            )
        if not self.limiter.allow(f"party:{guest}", len(ids), self.host_rate_limit):
            self.metrics.rate_limited.labels("party").inc()
            self.metrics.partial_requests.labels(guest, label, "rate_limited").inc()
            raise Refused(
                429,
                f"rate limit of party {self.party_id}: at most "
                f"{self.host_rate_limit} rows per second per guest",
            )
        try:
            x = self.lookup.rows(ids, model.feature_names)
        except FeaturesMissing as exc:
            self.metrics.partial_requests.labels(guest, label, "not_found").inc()
            raise Refused(
                404,
                f"party {self.party_id} has no features for id {exc.ids[0]!r}"
                + (f" (and {len(exc.ids) - 1} more)" if len(exc.ids) > 1 else ""),
                ids=exc.ids[:100],
            ) from None
        except (NoFeatureSource, KeyError) as exc:
            self.metrics.partial_requests.labels(guest, label, "no_features").inc()
            raise Refused(503, f"party {self.party_id}: {exc}") from None
        answer: dict[str, Any]
        if model.artifact is not None:  # a tree model: which way each of its nodes sends a row
            answer = secureboost.pack_directions(secureboost.host_directions(model.artifact, x))
        else:
            answer = {"scores": scoring.host_linear(x, model.weights).tolist()}
        self.metrics.partial_requests.labels(guest, label, "ok").inc()
        self.metrics.partial_rows.labels(guest).inc(len(ids))
        return answer

    _LOCAL_OPS: dict[str, Callable[[Serving, dict[str, Any]], Any]] = {
        "model_publish": _publish,
        "model_list": _list_models,
        "model_show": _show,
        "model_accept": _accept,
        "model_delete": _delete,
        "model_export": _export,
        "model_import": _import,
        "service_bind": _bind,
        "service_canary": _canary,
        "service_switch": _switch,
        "service_rollback": _rollback,
        "service_unbind": _unbind,
        "service_list": _services,
        "service_show": _service,
        "events": _events,
        "features_load": _load_features,
        "predict": _predict,
        "predict_many": _predict_many,
    }


def _outcome(status: int) -> str:
    return {
        404: "not_found",
        409: "conflict",
        422: "bad_features",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, "error")


def _refusal(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": message, **extra}
