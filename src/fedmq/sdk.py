"""Python SDK for a party's REST API (the gateway's /api/v1), for notebooks and scripts; the
`fedmq data` and `fedmq job` commands are built on it.

    from fedmq.sdk import Client

    guest = Client("http://127.0.0.1:17401", token="...")
    guest.upload_table("breast_hetero_guest", "examples/data/breast_hetero_guest.csv",
                       label_column="y")
    job = guest.submit("examples/pipelines/psi_eval.yaml")
    job = guest.wait(job.job_id)                 # polls until the job ends
    guest.metrics(job.job_id).value("eval_0", "auc")

Every call is one HTTP request with `Authorization: Bearer <token>`. A refusal raises `ApiError`
with the status and the server's reason (400 malformed, 401 token, 404 unknown, 409 conflict,
413 too large, 503 scheduler not answering); the results are pydantic models that ignore fields
they do not know, so a newer server does not break an older SDK.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self, TypeVar, cast

import httpx
from pydantic import BaseModel, ConfigDict

API_PREFIX = "/api/v1"
FINAL_STATES = frozenset({"success", "failed", "canceled"})

JobState = Literal["waiting", "running", "success", "failed", "canceled"]


class ApiError(Exception):
    """The API refused a request: `status` (HTTP) and `detail` (the server's reason)."""

    def __init__(self, status: int, detail: str, method: str = "", path: str = "") -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.method = method
        self.path = path


class JobFailed(Exception):
    """`wait(..., raise_on_failure=True)`: the job ended failed or canceled."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.job_id} {job.state}: {job.reason or 'no reason given'}")
        self.job = job


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Table(_Model):
    name: str
    rows: int
    features: int
    feature_names: list[str]
    id_column: str
    label_column: str | None
    missing_values: int
    missing_by_column: dict[str, int]
    label_values: list[float] | None = None
    """The distinct label values recorded at upload (None: no label column, too many values,
    or a table stored before profiles were recorded)."""
    label_classes: list[str] | None = None
    """A text label column's class names, class k's at index k (None: numeric labels)."""
    sha256: str
    uploaded_at: datetime
    reads: int


class Grant(_Model):
    table: str
    grantee: str
    component_types: list[str]
    params: dict[str, dict[str, Any]] | None = None
    """{component type: {may_set, bounds}} its pipelines may set; None: the policy alone."""
    granted_at: datetime


class JobParty(_Model):
    party_id: str
    roles: list[str]
    state: str
    last_seen: datetime | None
    reason: str | None


class Job(_Model):
    job_id: str
    state: JobState
    attempt: int
    initiator: str
    is_initiator: bool
    reason: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    tasks_total: int
    tasks_succeeded: int
    parties: list[JobParty]

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES


class Task(_Model):
    job_id: str
    component: str
    component_type: str
    attempt: int
    party_id: str
    state: JobState
    reason: str | None
    progress: float | None
    outputs: dict[str, str] | None
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime


class Metric(_Model):
    component: str
    party_id: str
    name: str
    step: int
    value: float | None


class Curve(_Model):
    component: str
    party_id: str
    name: str
    x_label: str
    y_label: str
    x: list[float | None]
    y: list[float | None]


class Metrics(_Model):
    data: list[Metric]
    count: int
    curves: list[Curve]

    def value(self, component: str, name: str, party_id: str | None = None) -> float | None:
        """A single-value metric (step -1); KeyError if there is none."""
        for m in self.data:
            same = m.component == component and m.name == name and m.step == -1
            if same and (party_id is None or m.party_id == party_id):
                return m.value
        raise KeyError(f"no metric {name!r} of {component}")

    def values(self, component: str | None = None) -> dict[str, float | None]:
        """{"component.name": value} of the single-value metrics."""
        return {
            f"{m.component}.{m.name}": m.value
            for m in self.data
            if m.step == -1 and (component is None or m.component == component)
        }


class LogEntry(_Model):
    time: datetime | None
    level: str
    event: str
    job_id: str
    component: str | None
    party_id: str | None
    attempt: int | None
    state: str | None
    message: str


M = TypeVar("M", bound=_Model)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors: [{loc, msg, ...}]
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'request'}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    return str(detail)


class _ProgressReader(io.RawIOBase):
    """A file read for an upload, reporting the bytes read so far (what has been sent)."""

    def __init__(self, handle: IO[bytes], size: int, report: Callable[[int, int], None]) -> None:
        self._handle = handle
        self._size = size
        self._report = report
        self._done = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._done += len(data)
        self._report(self._done, self._size)
        return data

    def fileno(self) -> int:  # the size of the body comes from the file itself
        return self._handle.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._handle.seek(offset, whence)
        self._done = position
        return position

    def tell(self) -> int:
        return self._handle.tell()


class Client:
    """A party's REST API. `base_url` is the gateway's HTTP address (e.g.
    http://127.0.0.1:8081); `http` replaces the HTTP client (tests: a FastAPI TestClient)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"}
        self.base_url = base_url

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = API_PREFIX + path
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.base_url}: {exc}", method, url) from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response), method, url)
        return response.json()

    def _list(self, model: type[M], path: str, **params: Any) -> list[M]:
        query = {k: v for k, v in params.items() if v is not None}
        body = self._request("GET", path, params=query)
        return [model.model_validate(row) for row in body["data"]]

    # --- tables --------------------------------------------------------------------------------

    def upload_table(
        self,
        name: str,
        csv: str | Path | bytes | IO[bytes],
        *,
        id_column: str = "id",
        label_column: str | None = None,
        replace: bool = False,
        filename: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Table:
        """Upload a CSV (a path, bytes or a binary file) as table `name` at this party.

        A path is streamed from the file (never read whole into memory); `on_progress(bytes
        sent, file size)` is called as it goes. The answer comes once the party has parsed
        and stored the table."""
        form: dict[str, str] = {"name": name, "id_column": id_column, "replace": str(replace)}
        if label_column is not None:
            form["label_column"] = label_column
        if not isinstance(csv, str | Path):
            files = {"file": (filename or f"{name}.csv", csv, "text/csv")}
            return Table.model_validate(self._request("POST", "/tables", data=form, files=files))
        path = Path(csv)
        with path.open("rb") as handle:
            content: IO[bytes] = handle
            if on_progress is not None:
                reader = _ProgressReader(handle, path.stat().st_size, on_progress)
                content = cast(IO[bytes], reader)  # a binary file, as httpx reads one
            files = {"file": (filename or path.name, content, "text/csv")}
            return Table.model_validate(self._request("POST", "/tables", data=form, files=files))

    def tables(self) -> list[Table]:
        return self._list(Table, "/tables")

    def table(self, name: str) -> Table:
        return Table.model_validate(self._request("GET", f"/tables/{name}"))

    # --- grants --------------------------------------------------------------------------------

    def grant(
        self,
        table: str,
        grantee: str,
        component_types: list[str],
        params: dict[str, Any] | None = None,
    ) -> Grant:
        """Let jobs initiated by `grantee` read `table` into these component types (or ["*"]);
        `params` ({type: {may_set, bounds}}): the only params those jobs may set here."""
        body: dict[str, Any] = {
            "table": table,
            "grantee": grantee,
            "component_types": component_types,
        }
        if params is not None:
            body["params"] = params
        return Grant.model_validate(self._request("POST", "/grants", json=body))

    def grants(self, table: str | None = None, grantee: str | None = None) -> list[Grant]:
        return self._list(Grant, "/grants", table=table, grantee=grantee)

    def peers(self) -> dict[str, Any]:
        """The parties this site's gateway links to: {party id: {address, connected}}."""
        return dict(self._request("GET", "/peers")["data"])

    # --- jobs ----------------------------------------------------------------------------------

    def submit(self, pipeline: str | Path, job_id: str | None = None) -> Job:
        """Submit a pipeline: a path to its YAML file, or the YAML text itself."""
        text = pipeline.read_text() if isinstance(pipeline, Path) else pipeline
        if isinstance(pipeline, str) and "\n" not in pipeline:
            try:
                text = Path(pipeline).read_text()
            except OSError as exc:  # one line that is no file: not a pipeline either
                raise ApiError(0, f"cannot read pipeline file {pipeline!r}: {exc}") from exc
        params = {"job_id": job_id} if job_id else {}
        body = self._request(
            "POST",
            "/jobs",
            content=text.encode(),
            params=params,
            headers={"Content-Type": "application/yaml"},
        )
        return Job.model_validate(body)

    def job(self, job_id: str) -> Job:
        return Job.model_validate(self._request("GET", f"/jobs/{job_id}"))

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        """Jobs this party knows of, newest first (`state`: one of JobState)."""
        return self._list(Job, "/jobs", state=state, limit=limit)

    def stop(self, job_id: str, reason: str | None = None) -> Job:
        body = {"reason": reason} if reason else {}
        return Job.model_validate(self._request("POST", f"/jobs/{job_id}/stop", json=body))

    def rerun(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", f"/jobs/{job_id}/rerun"))

    def tasks(self, job_id: str, attempt: int | None = None) -> list[Task]:
        return self._list(Task, f"/jobs/{job_id}/tasks", attempt=attempt)

    def metrics(
        self, job_id: str, component: str | None = None, party_id: str | None = None
    ) -> Metrics:
        query = {k: v for k, v in {"component": component, "party_id": party_id}.items() if v}
        return Metrics.model_validate(self._request("GET", f"/jobs/{job_id}/metrics", params=query))

    def logs(self, job_id: str) -> list[LogEntry]:
        return self._list(LogEntry, f"/jobs/{job_id}/logs")

    def outputs(self, job_id: str, component: str | None = None) -> dict[str, Any]:
        """This party's outputs of the job (of one component): models with their documents and
        arrays, weights as {name: weight}, data tables by shape (rows: `output_rows`)."""
        query = {"component": component} if component else {}
        result: dict[str, Any] = self._request("GET", f"/jobs/{job_id}/outputs", params=query)
        return result

    def output_rows(
        self,
        job_id: str,
        component: str,
        output: str = "data",
        *,
        role: str | None = None,
        offset: int = 0,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """Rows [offset, offset + limit) of an output table (ids, columns, features, labels)."""
        query: dict[str, Any] = {"offset": offset, "limit": limit}
        if role:
            query["role"] = role
        path = f"/jobs/{job_id}/outputs/{component}/{output}"
        result: dict[str, Any] = self._request("GET", path, params=query)
        return result

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        on_update: Callable[[Job, list[Task]], None] | None = None,
        raise_on_failure: bool = False,
    ) -> Job:
        """Poll until the job ends (success, failed or canceled) and return it.

        `on_update(job, tasks)` is called after every poll (progress displays); `timeout`
        raises TimeoutError; `raise_on_failure` raises JobFailed for a failed or canceled job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job, self.tasks(job_id))
            if job.ended:
                if raise_on_failure and job.state != "success":
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            time.sleep(poll)
