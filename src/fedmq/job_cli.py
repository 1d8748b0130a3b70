"""`fedmq job ...`: submit and follow jobs through a party's REST API (fedmq.sdk).

    fedmq job submit examples/pipelines/psi_eval.yaml --wait   # at the guest's gateway
    fedmq job status JOB        fedmq job list [--state running]
    fedmq job wait JOB          # progress bars per task until the job ends
    fedmq job stop JOB [--reason TEXT]      fedmq job rerun JOB [--wait]
    fedmq job tasks JOB         fedmq job metrics JOB [--component eval_0]
    fedmq job logs JOB
    fedmq job model JOB [--component lr_0] [--output model.json]   # this party's models, JSON
    fedmq job data JOB --component psi_0 [--name data] [--output rows.csv]   # a table as CSV
    fedmq job trace JOB [--dir .fedmq/local | --file spans.jsonl ...]   # span tree, no Jaeger

Connection options as in `fedmq data` (--url/--token or FEDMQ_API_URL/FEDMQ_API_TOKEN).
Exit status: 0 done (a waited-for job succeeded), 1 the job failed or was canceled (its reason
is printed), 2 the request was refused or the API unreachable, 124 `--timeout` passed first.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import TaskID

from fedmq import local, trace_view
from fedmq.cli_output import rich_table, task_progress
from fedmq.data_cli import (
    DEFAULT_URL,
    ApiToken,
    ApiUrl,
    JsonFlag,
    api_client,
    console,
    errors,
    print_json,
)
from fedmq.sdk import Client, Job, Task

job_app = typer.Typer(
    help="Submit and follow jobs at a party (its REST API).", no_args_is_help=True
)

JobArg = Annotated[str, typer.Argument(help="the job id", metavar="JOB")]
Timeout = Annotated[
    float | None, typer.Option(help="give up waiting after this many seconds (exit 124)")
]
Poll = Annotated[float, typer.Option(help="seconds between polls")]

STATE_STYLE = {
    "waiting": "dim",
    "running": "cyan",
    "success": "green",
    "failed": "red",
    "canceled": "yellow",
}


def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def _print_job(job: Job) -> None:
    console.print(
        f"job [bold]{escape(job.job_id)}[/bold]: {_state(job.state)}, attempt {job.attempt}, "
        f"{job.tasks_succeeded}/{job.tasks_total} tasks succeeded"
    )
    for party in job.parties:
        reason = f": {escape(party.reason)}" if party.reason else ""
        console.print(f"  party {party.party_id} ({', '.join(party.roles)}): {party.state}{reason}")
    if job.reason:
        console.print(f"  reason: {escape(job.reason)}")


def wait_with_progress(api: Client, job_id: str, *, timeout: float | None, poll: float) -> Job:
    """Poll until the job ends, showing a bar for the job and one per task with its state."""
    with task_progress(console) as progress:
        overall = progress.add_task(f"job {escape(job_id)}", total=None, state="")
        rows: dict[tuple[str, str, int], TaskID] = {}

        def on_update(job: Job, tasks: list[Task]) -> None:
            progress.update(
                overall,
                total=max(job.tasks_total, 1),
                completed=job.tasks_succeeded,
                state=_state(job.state),
            )
            for task in tasks:
                key = (task.component, task.party_id, task.attempt)
                if key not in rows:
                    label = f"  {task.component:<14} {task.party_id}"
                    if task.attempt:
                        label += f" (attempt {task.attempt})"
                    rows[key] = progress.add_task(escape(label), total=1.0, state="")
                done = 1.0 if task.state == "success" else (task.progress or 0.0)
                progress.update(rows[key], completed=done, state=_state(task.state))

        try:
            return api.wait(job_id, timeout=timeout, poll=poll, on_update=on_update)
        except TimeoutError as exc:
            errors.print(f"[yellow]{escape(str(exc))}[/yellow]")
            raise typer.Exit(124) from None


def _end(job: Job) -> None:
    """Exit 0 for success; 1 with the reason for a failed or canceled job."""
    if job.state == "success":
        console.print(f"job {escape(job.job_id)} [green]succeeded[/green]")
        return
    errors.print(
        f"[red]job {escape(job.job_id)} {job.state}:[/red] {escape(job.reason or 'no reason')}"
    )
    raise typer.Exit(1)


@job_app.command("submit")
def submit(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML", metavar="PIPELINE")],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    job_id: Annotated[str | None, typer.Option(help="job id (default: a fresh one)")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job to its end")] = False,
    timeout: Timeout = None,
    poll: Poll = 1.0,
    as_json: JsonFlag = False,
) -> None:
    """Submit PIPELINE at this party (the pipeline's guest)."""
    try:
        text = pipeline.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        errors.print(f"[red]cannot read {escape(str(pipeline))}:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    with api_client(url, token) as api:
        job = api.submit(text, job_id=job_id)
        if as_json and not wait:
            print_json(job.model_dump(mode="json"))
            return
        console.print(f"submitted job [bold]{escape(job.job_id)}[/bold] ({job.state})")
        if wait:
            job = wait_with_progress(api, job.job_id, timeout=timeout, poll=poll)
    if wait:
        _end(job)


@job_app.command("status")
def status(
    job_id: JobArg, url: ApiUrl = DEFAULT_URL, token: ApiToken = "", as_json: JsonFlag = False
) -> None:
    """A job's state, its parties and task counts."""
    with api_client(url, token) as api:
        job = api.job(job_id)
    if as_json:
        print_json(job.model_dump(mode="json"))
    else:
        _print_job(job)


@job_app.command("list")
def list_jobs(
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    state: Annotated[str | None, typer.Option(help="only jobs in this state")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Jobs this party knows of, newest first."""
    with api_client(url, token) as api:
        jobs = api.jobs(state=state, limit=limit)
    if as_json:
        print_json([j.model_dump(mode="json") for j in jobs])
        return
    columns = ("job", "state", "attempt", "initiator", "tasks", "created", "reason")
    cells = [
        (
            j.job_id,
            _state(j.state),
            str(j.attempt),
            j.initiator,
            f"{j.tasks_succeeded}/{j.tasks_total}",
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape((j.reason or "")[:80]),
        )
        for j in jobs
    ]
    console.print(rich_table("Jobs", columns, cells))


@job_app.command("wait")
def wait(
    job_id: JobArg,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    timeout: Timeout = None,
    poll: Poll = 1.0,
) -> None:
    """Follow a job with progress bars until it ends; exit 1 with the reason if it fails."""
    with api_client(url, token) as api:
        job = wait_with_progress(api, job_id, timeout=timeout, poll=poll)
    _end(job)


@job_app.command("stop")
def stop(
    job_id: JobArg,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    reason: Annotated[str | None, typer.Option(help="why (shown as the job's reason)")] = None,
) -> None:
    """Stop a running job at every party."""
    with api_client(url, token) as api:
        job = api.stop(job_id, reason)
    _print_job(job)


@job_app.command("rerun")
def rerun(
    job_id: JobArg,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    wait: Annotated[bool, typer.Option(help="follow the new attempt to its end")] = False,
    timeout: Timeout = None,
    poll: Poll = 1.0,
) -> None:
    """Run a failed or canceled job again from the components that did not succeed."""
    with api_client(url, token) as api:
        job = api.rerun(job_id)
        console.print(f"job {escape(job.job_id)}: attempt {job.attempt} ({job.state})")
        if wait:
            job = wait_with_progress(api, job_id, timeout=timeout, poll=poll)
    if wait:
        _end(job)


@job_app.command("tasks")
def tasks(
    job_id: JobArg,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    attempt: Annotated[int | None, typer.Option(help="only this attempt")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The job's tasks: one per component, party and attempt."""
    with api_client(url, token) as api:
        rows = api.tasks(job_id, attempt)
    if as_json:
        print_json([t.model_dump(mode="json") for t in rows])
        return
    columns = ("component", "type", "party", "attempt", "state", "progress", "reason")
    cells = [
        (
            t.component,
            t.component_type,
            t.party_id,
            str(t.attempt),
            _state(t.state),
            "" if t.progress is None else f"{t.progress:.0%}",
            escape((t.reason or "")[:100]),
        )
        for t in rows
    ]
    console.print(rich_table(f"Tasks of job {escape(job_id)}", columns, cells))


@job_app.command("metrics")
def metrics(
    job_id: JobArg,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    component: Annotated[str | None, typer.Option(help="only this component")] = None,
    as_json: JsonFlag = False,
) -> None:
    """This party's metrics of the job (series are summarised by their last step)."""
    with api_client(url, token) as api:
        result = api.metrics(job_id, component)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    cells = [
        (
            m.component,
            m.party_id,
            m.name,
            "" if m.step == -1 else str(m.step),
            "undefined" if m.value is None else f"{m.value:.6g}",
        )
        for m in result.data
    ]
    columns = ("component", "party", "metric", "step", "value")
    table = rich_table(f"Metrics of job {escape(job_id)}", columns, cells, right=("step", "value"))
    console.print(table)
    if result.curves:
        names = ", ".join(f"{c.component}.{c.name} ({len(c.x)} points)" for c in result.curves)
        console.print(f"curves: {escape(names)} (--json for the points)")


@job_app.command("logs")
def logs(
    job_id: JobArg, url: ApiUrl = DEFAULT_URL, token: ApiToken = "", as_json: JsonFlag = False
) -> None:
    """The job's events as this party's scheduler recorded them, oldest first."""
    with api_client(url, token) as api:
        entries = api.logs(job_id)
    if as_json:
        print_json([e.model_dump(mode="json") for e in entries])
        return
    colors = {"info": "white", "warning": "yellow", "error": "red"}
    for e in entries:
        when = e.time.strftime("%H:%M:%S.%f")[:-3] if e.time else "--:--:--.---"
        console.print(f"{when} [{colors.get(e.level, 'white')}]{escape(e.message)}[/]")


@job_app.command("trace")
def trace(
    job_id: JobArg,
    directory: Annotated[
        Path,
        typer.Option("--dir", help="a `fedmq local` folder: reads <dir>/<party>/traces/*.jsonl"),
    ] = local.DEFAULT_DIR,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            help="a trace file (FEDMQ_<SERVICE>_TRACE_FILE's JSON lines, or an OpenTelemetry "
            "Collector file exporter's output); repeatable; replaces --dir",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="show at most this many spans (0: all)")] = 500,
    tree: Annotated[bool, typer.Option(help="draw a tree instead of the indented table")] = False,
) -> None:
    """The job's spans as a tree: start, duration, service@party and name (indented under its
    parent) of each, read from trace files (every party's, when they are on this machine)."""
    paths = list(files) if files else trace_view.trace_files(directory)
    if not paths:
        console.print(f"[red]no trace files[/red] under {escape(str(directory))}/*/traces/")
        raise typer.Exit(2)
    try:
        spans = trace_view.read_spans(paths)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read the spans:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    found = trace_view.job_spans(spans, job_id)
    if not found:
        console.print(
            f"no spans of job {escape(job_id)} in {len(paths)} trace files "
            f"({len(spans)} spans of other jobs or none)"
        )
        raise typer.Exit(1)
    job = trace_view.JobTrace(job_id, found)
    draw = trace_view.render_tree if tree else trace_view.render
    console.print(draw(job, limit=limit))


OutputFile = Annotated[
    Path | None, typer.Option("--output", "-o", help="write to this file instead of stdout")
]


def _write_or_print(text: str, output: Path | None, what: str) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        errors.print(f"[red]cannot write {escape(str(output))}:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"{what} written to {escape(str(output))}")


@job_app.command("model")
def model(
    job_id: JobArg,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    component: Annotated[str | None, typer.Option(help="only this component")] = None,
    output: OutputFile = None,
) -> None:
    """This party's outputs of a job as JSON: each model (document and arrays), each weights
    table as {name: weight}, each data table by its shape (`fedmq job data` exports its rows)."""
    with api_client(url, token) as api:
        found = api.outputs(job_id, component)
    text = json.dumps(found, indent=2, sort_keys=True) + "\n"
    _write_or_print(text, output, f"{found.get('count', 0)} outputs of job {job_id}")


@job_app.command("data")
def data(
    job_id: JobArg,
    component: Annotated[str, typer.Option(help="the component whose output table to export")],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    name: Annotated[str, typer.Option(help="the output's name")] = "data",
    role: Annotated[
        str | None, typer.Option(help="the role, where this party ran the component as several")
    ] = None,
    page_rows: Annotated[int, typer.Option(min=1, max=5000, help="rows per request")] = 1000,
    output: OutputFile = None,
) -> None:
    """A job's output table at this party as CSV (id, the columns, the label if any: a text
    label by its class name), fetched a page of rows at a time."""
    from fedmq.results import write_rows  # imports fedflow: only for this command

    buffer = io.StringIO()
    offset, total = 0, None
    with api_client(url, token) as api:
        while total is None or offset < total:
            page = api.output_rows(
                job_id, component, name, role=role, offset=offset, limit=page_rows
            )
            total = int(page["rows"])
            write_rows(buffer, page, header=offset == 0)
            if not page["ids"]:
                break
            offset += len(page["ids"])
    _write_or_print(buffer.getvalue(), output, f"{total} rows of {component}.{name}")
