"""/api/v1/board: the read models the board's pages draw, as JSON (docs/board.md).

The board (fedgateway.board) renders exactly these functions' answers, so every chart, the DAG,
the crossed-messages table and the site view are also available here to any API client: the
board and the API stay one contract. Each answer is built from the party's own read models --
the scheduler's (`svc.scheduler.rpc`), the audit's (`svc.audit.rpc`) and the running gateway's
own view (links, round trips, certificates) -- never from a database.

    GET /api/v1/board/jobs/{job_id}/dag       components, their inputs and states per party
    GET /api/v1/board/jobs/{job_id}/charts    every chart of the job: series (loss per epoch)
                                              and curves (ROC, KS, PR, gain, lift...)
    GET /api/v1/board/jobs/{job_id}/crossed   messages and bytes per tag, direction and peer
    GET /api/v1/board/site                    peers, link state, round trip, certificate expiry
    GET /api/v1/board/jobs/{job_id}/binning/{component}   bins, counts, WOE, IV (board_models)
    GET /api/v1/board/jobs/{job_id}/trees/{component}     SecureBoost trees, importance
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fedcontrol import SchedulerClient
from pydantic import BaseModel, ConfigDict, Field

from fedgateway.api import board_models
from fedgateway.api.audit import ask_audit, refuse_unknown_query
from fedgateway.api.deps import (
    ROUTER_REFUSALS,
    ApiContext,
    ApiDep,
    JobIdPath,
    SchedulerDep,
    answering,
    refusals,
    require_token,
)

EVENTS_PAGE = 10_000
"""Audit records asked for per request (the audit's own maximum)."""
MAX_EVENTS = 200_000
"""A job's crossed table reads at most this many records (20 pages); `truncated` says so."""
CROSSING = frozenset({"in", "out"})
"""Audit record directions that crossed a site boundary (the rest are "local")."""
STATES_BY_PRIORITY = ("failed", "canceled", "running", "waiting", "success")
"""A component's state over its parties' tasks: the first of these that any task is in."""


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DagTaskPublic(_Out):
    party_id: str
    state: str
    progress: float | None
    reason: str | None
    started_at: str | None
    ended_at: str | None


class DagNodePublic(_Out):
    name: str
    type: str
    inputs: dict[str, str] = Field(description='slot -> "upstream.output"')
    params: dict[str, dict[str, Any]]
    state: str = Field(
        description="over its parties' tasks: failed, canceled, running, "
        "waiting or success (every task succeeded); none before any task exists"
    )
    layer: int = Field(description="longest path from a source (0): the DAG's column")
    tasks: list[DagTaskPublic]


class DagPublic(_Out):
    job_id: str
    state: str
    attempt: int
    nodes: list[DagNodePublic]
    edges: list[tuple[str, str]] = Field(description="(upstream, downstream) pairs")


class ChartPublic(_Out):
    id: str = Field(description="component.party.name: stable, unique in the job")
    component: str
    party_id: str
    name: str
    kind: str = Field(description="series (a metric per step) or curve (x, y)")
    x_label: str
    y_label: str
    x: list[float | None]
    y: list[float | None]


class ChartsPublic(_Out):
    job_id: str
    data: list[ChartPublic]
    count: int


class CrossedRowPublic(_Out):
    tag: str
    direction: str = Field(description="out (this party sent) or in (it received)")
    peer: str
    type: str
    component: str
    messages: int
    bytes: int


class CrossedPublic(_Out):
    job_id: str
    party_id: str
    data: list[CrossedRowPublic]
    count: int
    records: int = Field(description="audit records read")
    local_records: int = Field(
        description="of which stayed inside this party (direction local): not in the table"
    )
    truncated: bool


class CertificatePublic(_Out):
    subject: str
    not_after: str | None
    days_left: float | None


class PeerPublic(_Out):
    party_id: str
    address: str | None
    connected: bool
    rtt_mean_ms: float | None = Field(description="mean round trip of the link's PINGs")
    rtt_samples: int
    certificates: list[CertificatePublic]


class SitePublic(_Out):
    party_id: str
    status: str
    own_certificate: CertificatePublic | None
    ca_certificate: CertificatePublic | None
    peers: list[PeerPublic]


router = APIRouter(
    prefix="/board",
    tags=["board"],
    dependencies=[Depends(require_token)],
    responses=ROUTER_REFUSALS,
)


# --- the read models -------------------------------------------------------------------------


def _layers(nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Longest path from a source, per component (nodes come in run order: upstream first)."""
    layer: dict[str, int] = {}
    for node in nodes:
        ups = [ref.split(".", 1)[0] for ref in node["inputs"].values()]
        layer[node["name"]] = 1 + max((layer.get(u, 0) for u in ups), default=-1)
    return layer


def _state_of(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return "none"
    states = {t["state"] for t in tasks}
    if states == {"success"}:
        return "success"
    return next(s for s in STATES_BY_PRIORITY if s in states)


def dag_from(job: dict[str, Any], tasks: list[dict[str, Any]]) -> DagPublic:
    """The job's pipeline with each component's state (its latest attempt's tasks)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for task in tasks:
        key = (task["component"], task["party_id"])
        if key not in latest or task["attempt"] >= latest[key]["attempt"]:
            latest[key] = task
    components = job.get("components") or [
        # A scheduler without the pipeline in its answer: the components its tasks name.
        {"name": c, "type": t, "inputs": {}, "params": {}}
        for c, t in dict.fromkeys((t["component"], t["component_type"]) for t in tasks)
    ]
    layers = _layers(components)
    nodes = []
    for comp in components:
        own = sorted(
            (t for (c, _), t in latest.items() if c == comp["name"]), key=lambda t: t["party_id"]
        )
        nodes.append(
            DagNodePublic(
                name=comp["name"],
                type=comp["type"],
                inputs=comp["inputs"],
                params=comp["params"],
                state=_state_of(own),
                layer=layers[comp["name"]],
                tasks=[
                    DagTaskPublic(
                        party_id=t["party_id"],
                        state=t["state"],
                        progress=t.get("progress"),
                        reason=t.get("reason"),
                        started_at=t.get("started_at"),
                        ended_at=t.get("ended_at"),
                    )
                    for t in own
                ],
            )
        )
    edges = {
        (ref.split(".", 1)[0], comp["name"])
        for comp in components
        for ref in comp["inputs"].values()
    }
    return DagPublic(
        job_id=job["job_id"],
        state=job["state"],
        attempt=job["attempt"],
        nodes=nodes,
        edges=sorted(edges),
    )


def job_dag(scheduler: SchedulerClient, job_id: str) -> DagPublic:
    with answering():
        job = scheduler.status(job_id)
        tasks = scheduler.list_tasks(job_id)
    return dag_from(job, tasks)


def charts_from(job_id: str, metrics: dict[str, Any]) -> ChartsPublic:
    """Every chart of the job at this party: each metric logged per step (loss per epoch...)
    as a series, and each curve the components wrote (roc, ks, pr, gain, lift...)."""
    series: dict[tuple[str, str, str], list[tuple[int, float | None]]] = defaultdict(list)
    for m in metrics["data"]:
        if m["step"] >= 0:
            series[(m["component"], m["party_id"], m["name"])].append((m["step"], m["value"]))
    charts = [
        ChartPublic(
            id=f"{component}.{party}.{name}",
            component=component,
            party_id=party,
            name=name,
            kind="series",
            x_label="step",
            y_label=name,
            x=[float(step) for step, _ in sorted(points)],
            y=[value for _, value in sorted(points)],
        )
        for (component, party, name), points in sorted(series.items())
    ]
    charts += [
        ChartPublic(
            id=f"{c['component']}.{c['party_id']}.{c['name']}",
            component=c["component"],
            party_id=c["party_id"],
            name=c["name"],
            kind="curve",
            x_label=c["x_label"],
            y_label=c["y_label"],
            x=c["x"],
            y=c["y"],
        )
        for c in metrics.get("curves", [])
    ]
    return ChartsPublic(job_id=job_id, data=charts, count=len(charts))


def job_charts(scheduler: SchedulerClient, job_id: str) -> ChartsPublic:
    with answering():
        metrics = scheduler.metrics(job_id)
    return charts_from(job_id, metrics)


def job_crossed(api: ApiContext, job_id: str) -> CrossedPublic:
    """What crossed between this party and its peers for the job, per tag and direction, from
    this party's audit log (every message its gateway relayed, both ways; the records of
    messages that stayed inside the party are only counted)."""
    rows: dict[tuple[str, str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    after, read, local, truncated = 0, 0, 0, False
    while True:
        page = ask_audit(
            api, {"op": "events", "job_id": job_id, "after": after, "limit": EVENTS_PAGE}
        )
        for record in page:
            if record["direction"] not in CROSSING:
                local += 1
                continue
            out = record["direction"] == "out"
            peer = record["destination_party"] if out else record["source_party"]
            key = (
                str(record["tag"]),
                str(record["direction"]),
                str(peer),
                str(record["type"]),
                str(record["component"]),
            )
            rows[key][0] += 1
            rows[key][1] += int(record["size"])
        read += len(page)
        if len(page) < EVENTS_PAGE:
            break
        if read >= MAX_EVENTS:
            truncated = True
            break
        after = int(page[-1]["seq"])
    data = [
        CrossedRowPublic(
            tag=tag,
            direction=direction,
            peer=peer,
            type=kind,
            component=component,
            messages=n,
            bytes=size,
        )
        for (tag, direction, peer, kind, component), (n, size) in sorted(rows.items())
    ]
    return CrossedPublic(
        job_id=job_id,
        party_id=api.party_id,
        data=data,
        count=len(data),
        records=read,
        local_records=local,
        truncated=truncated,
    )


def _certificate(subject: str, not_after: dt.datetime | None) -> CertificatePublic:
    if not_after is None:
        return CertificatePublic(subject=subject, not_after=None, days_left=None)
    if not_after.tzinfo is None:
        not_after = not_after.replace(tzinfo=dt.UTC)
    left = (not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    return CertificatePublic(
        subject=subject, not_after=not_after.isoformat(), days_left=round(left, 2)
    )


def _own_certificate(gateway: Any) -> CertificatePublic | None:
    settings = getattr(gateway, "settings", None)
    party_dir = getattr(settings, "identity_dir", None)
    if party_dir is None:
        return None
    from fedgateway.pki import TLS_CERT, load_certificate

    path = party_dir / TLS_CERT
    if not path.exists():
        return None
    cert = load_certificate(path)
    return _certificate("this party's TLS and signing certificate", cert.not_valid_after_utc)


def _rtt(gateway: Any, peer: str) -> tuple[float | None, int]:
    registry = getattr(getattr(gateway, "metrics", None), "registry", None)
    if registry is None:
        return None, 0
    labels = {"peer": peer}
    total = registry.get_sample_value("fedmq_gateway_link_rtt_seconds_sum", labels)
    count = registry.get_sample_value("fedmq_gateway_link_rtt_seconds_count", labels)
    if not count:
        return None, 0
    return round(1000 * float(total or 0.0) / count, 3), int(count)


def site_view(gateway: Any) -> SitePublic:
    """This party's gateway as its operator sees it: its peers (address, link up, mean round
    trip of the link's PINGs, their certificates' expiry as learned over the link), its own
    certificate's and the federation CA's expiry."""
    health = gateway.health()
    ca = getattr(gateway, "ca_cert", None)
    keyring = getattr(gateway, "keyring", None)
    peers = []
    for party_id, peer in sorted(health.get("peers", {}).items()):
        mean, samples = _rtt(gateway, party_id)
        certs = []
        if keyring is not None and hasattr(keyring, "certificates"):
            certs = [
                _certificate(f"party {party_id} key {k.key_id}", k.not_after)
                for k in keyring.certificates(party_id)
            ]
        peers.append(
            PeerPublic(
                party_id=party_id,
                address=peer.get("address"),
                connected=bool(peer.get("connected")),
                rtt_mean_ms=mean,
                rtt_samples=samples,
                certificates=certs,
            )
        )
    return SitePublic(
        party_id=str(health.get("party_id", "")),
        status=str(health.get("status", "")),
        own_certificate=_own_certificate(gateway),
        ca_certificate=_certificate("federation CA", ca.not_valid_after_utc)
        if ca is not None
        else None,
        peers=peers,
    )


def gateway_of(request: Request) -> Any:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no gateway behind this app")
    return gateway


# --- routes ----------------------------------------------------------------------------------

UNKNOWN_QUERY_REFUSED = [Depends(refuse_unknown_query)]
"""A misspelt query parameter is 422, as at the audit's routes (which these read), not ignored;
only on routes that have parameters, where the OpenAPI document lists the 422."""


@router.get(
    "/jobs/{job_id}/dag",
    response_model=DagPublic,
    dependencies=UNKNOWN_QUERY_REFUSED,
    responses=refusals(404, s404="no job"),
)
def dag(scheduler: SchedulerDep, job_id: JobIdPath) -> DagPublic:
    """The pipeline as a DAG: components in run order with their layer, inputs, params and
    state (per party and overall), and the edges."""
    return job_dag(scheduler, job_id)


@router.get(
    "/jobs/{job_id}/charts",
    response_model=ChartsPublic,
    dependencies=UNKNOWN_QUERY_REFUSED,
    responses=refusals(404, s404="no job"),
)
def charts(scheduler: SchedulerDep, job_id: JobIdPath) -> ChartsPublic:
    """The data of every chart the board draws for the job: series per step and curves."""
    return job_charts(scheduler, job_id)


@router.get(
    "/jobs/{job_id}/crossed",
    response_model=CrossedPublic,
    dependencies=UNKNOWN_QUERY_REFUSED,
    responses=refusals(400),
)
def crossed(api: ApiDep, job_id: JobIdPath) -> CrossedPublic:
    """Messages and bytes that crossed between this party and its peers for the job, per tag,
    direction (out/in), peer, message type and component, from this party's audit log."""
    return job_crossed(api, job_id)


@router.get("/site", response_model=SitePublic)
def site(request: Request) -> SitePublic:
    """Peers, link state, the links' mean round trip and certificate expiry dates."""
    return site_view(gateway_of(request))


# The model panels' read models (binning tables, SecureBoost trees) live in their own module.
router.include_router(board_models.router)
