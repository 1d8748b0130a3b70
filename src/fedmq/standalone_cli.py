"""`fedmq standalone run PIPELINE`: every party of a pipeline in this process.

    fedmq standalone run examples/pipelines/psi_eval.yaml \
        --data 9999=examples/data --data 10000=examples/data
    fedmq standalone metrics JOB [--component eval_0] [-o metrics.json]
    fedmq standalone model JOB hetero_lr_0 [-o model.json]   # each party's part, as JSON
    fedmq standalone data JOB predict_0 --party 9999 [-o scores.csv]   # an output table

Each party gets its own in-memory broker and SQLite file under --workdir, linked by an
in-process relay that signs, verifies and records every crossing (fedflow.standalone). `--data
PARTY=FOLDER` gives a party its CSV tables (table name = file name without .csv); `--data
FOLDER` gives every party the same folder. `--threads`, `--prefetch-threads` and
`--prefetch-nice` are the parties' runtime options (the threads a component may use; a
pipeline's own thread params are ignored). `--policy PARTY=FILE` gives a party its security
policy (docs/policy.md); every party checks its part of the pipeline against its own (the
secure defaults where none is given) before anything runs. Progress is shown per task while it
runs; then the tasks, the metrics and what crossed between the parties are printed. Exit
status: 0 on success, 1 when a task failed, 2 for a bad pipeline, a bad or refusing policy,
or missing data.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import TaskID

from fedmq.cli_output import CROSSED_COLUMNS, CROSSED_TITLE, rich_table, task_progress

if TYPE_CHECKING:
    from fedaudit.standalone import AuditedRun
    from fedflow.policy import SecurityPolicy

standalone_app = typer.Typer(
    help="Run a pipeline with every party in this process (in-memory brokers, SQLite).",
    no_args_is_help=True,
)


def _parse_data(values: list[str], parties: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        party, sep, folder = value.partition("=")
        if sep:
            if party not in parties:
                raise typer.BadParameter(
                    f"--data {value}: {party} is not a party of the pipeline ({', '.join(parties)})"
                )
            out[party] = Path(folder)
        else:
            out.update({p: Path(value) for p in parties if p not in out})
    return out


def _parse_policies(values: list[str], parties: list[str]) -> dict[str, SecurityPolicy]:
    from fedflow.policy import load_policy

    out: dict[str, SecurityPolicy] = {}
    for value in values:
        party, sep, file = value.partition("=")
        if not sep or not file:
            raise typer.BadParameter(f"--policy {value}: write PARTY=FILE")
        if party not in parties:
            raise typer.BadParameter(
                f"--policy {value}: {party} is not a party of the pipeline ({', '.join(parties)})"
            )
        out[party] = load_policy(file)
    return out


@standalone_app.command("run")
def run(
    pipeline_file: Annotated[Path, typer.Argument(help="pipeline YAML", metavar="PIPELINE")],
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="PARTY=FOLDER of CSV tables (or FOLDER for every party)"),
    ] = None,
    workdir: Annotated[Path, typer.Option(help="where the parties' SQLite files go")] = Path(
        ".fedmq/standalone"
    ),
    job_id: Annotated[str | None, typer.Option(help="job id (default: a fresh one)")] = None,
    label_column: Annotated[
        str, typer.Option(help="a CSV column of this name is the table's label")
    ] = "y",
    id_column: Annotated[
        str, typer.Option(help="the CSV column of the row ids (as `fedmq data upload`)")
    ] = "id",
    timeout: Annotated[float, typer.Option(help="seconds a party waits for a message")] = 600.0,
    log_level: Annotated[str, typer.Option(help="log level of the runtime (stderr)")] = "WARNING",
    threads: Annotated[
        int, typer.Option(min=0, max=64, help="threads per task for homomorphic batch work")
    ] = 2,
    prefetch_threads: Annotated[
        int,
        typer.Option(min=0, max=64, help="low-priority threads per task precomputing encryption"),
    ] = 2,
    prefetch_nice: Annotated[
        int, typer.Option(min=0, max=19, help="CPU priority (nice) of the prefetch threads")
    ] = 19,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="PARTY=FILE: that party's security policy (default: the secure defaults)",
        ),
    ] = None,
    audit: Annotated[
        bool,
        typer.Option(
            "--audit",
            help="run each party's audit service (SQLite in --workdir); a critical finding "
            "stops the job, and findings above info are listed after it",
        ),
    ] = False,
) -> None:
    """Run PIPELINE with every party in this process."""
    from fedcommon.logging import configure_logging

    configure_logging("fedmq-standalone", level=log_level, json=False, stream=sys.stderr)

    from fedflow.context import RuntimeOptions
    from fedflow.pipeline import Pipeline, PipelineError
    from fedflow.policy import PolicyError, SecurityPolicy
    from fedflow.standalone import PolicyRefused, StandaloneError, check_policies, run_pipeline
    from fedflow.tables import TableError

    console = Console()
    try:
        pipeline = Pipeline.from_yaml(pipeline_file.read_text())
    except (OSError, UnicodeDecodeError, PipelineError) as exc:
        console.print(f"[red]cannot use {escape(str(pipeline_file))}:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    tables = _parse_data(list(data or []), pipeline.party_ids())
    try:
        policies = _parse_policies(list(policy or []), pipeline.party_ids())
        check_policies(pipeline, policies)
    except (PolicyError, PolicyRefused) as exc:
        console.print(f"[red]refused by policy:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    audited = None
    if audit:
        from fedaudit.standalone import AuditedRun

        floors = {p: policies.get(p, SecurityPolicy()).min_key_bits for p in pipeline.party_ids()}
        audited = AuditedRun(pipeline, pipeline_file.read_text(), workdir, min_key_bits=floors)
    lock = threading.Lock()
    with task_progress(console) as progress:
        bars: dict[tuple[str, str, str], TaskID] = {}

        def on_event(state: str, party: str, role: str, component: str, fraction: float) -> None:
            with lock:
                key = (party, role, component)
                if key not in bars:
                    bars[key] = progress.add_task(
                        f"{component:<12} {party} ({role})", total=1.0, state=""
                    )
                shown = "" if state == "progress" else state
                if shown:
                    progress.update(bars[key], state=shown)
                progress.update(bars[key], completed=fraction)

        try:
            result = run_pipeline(
                pipeline,
                tables,
                workdir,
                job_id=job_id,
                label_column=label_column,
                id_column=id_column,
                recv_timeout=timeout,
                on_event=on_event,
                options=RuntimeOptions(threads, prefetch_threads, prefetch_nice),
                policies=policies,
                watch=audited,
            )
        except TableError as exc:
            console.print(f"[red]data problem:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except StandaloneError as exc:
            console.print(f"[red]job failed:[/red] {escape(str(exc))}")
            if audited is not None:
                _print_findings(console, audited)
            raise typer.Exit(1) from None

    final = [
        (m.component, m.party_id, m.name, f"{m.value:.6g}") for m in result.metrics if m.step == -1
    ]
    columns = ("component", "party", "metric", "value")
    console.print(rich_table(f"Metrics of job {result.job_id}", columns, final, right=("value",)))
    crossed: dict[tuple[str, str, str, str], tuple[int, int]] = {}
    for c in result.crossings:
        count, size = crossed.get((c.source, c.destination, c.tag, c.kind), (0, 0))
        crossed[(c.source, c.destination, c.tag, c.kind)] = (count + 1, size + c.bytes)
    cells = [(*route, str(count), f"{size:,}") for route, (count, size) in crossed.items()]
    console.print(rich_table(CROSSED_TITLE, CROSSED_COLUMNS, cells, right=("messages", "bytes")))
    console.print(
        f"pipeline {result.pipeline}: {len(result.tasks)} tasks succeeded in "
        f"{result.seconds:.2f} s; databases in {escape(str(result.workdir))}"
    )
    if audited is not None:
        _print_findings(console, audited)


def _print_findings(console: Console, audited: AuditedRun) -> None:
    """Each party's audit findings above info and whether its chain verifies."""
    rows = []
    for party_id, party in sorted(audited.audits.items()):
        found = party.findings(audited.job_id)
        rows += [(party_id, f["severity"], f["rule"], f["party"], f["detail"]) for f in found]
        problems = party.chain_problems()
        chain = "verifies" if not problems else "; ".join(problems)
        console.print(f"audit of party {party_id}: {len(found)} finding(s); its chain {chain}")
    if rows:
        columns = ("audit of", "severity", "rule", "party", "detail")
        console.print(rich_table("Audit findings", columns, rows))


Workdir = Annotated[
    Path, typer.Option(help="the --workdir of `fedmq standalone run` (its party-*.db files)")
]
Output = Annotated[
    Path | None, typer.Option("--output", "-o", help="write the JSON here instead of stdout")
]


def _emit(document: dict[str, object], output: Path | None) -> None:
    import json

    text = json.dumps(document, indent=2, sort_keys=True)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        Console(stderr=True).print(f"wrote {escape(str(output))}")


@standalone_app.command("metrics")
def metrics(
    job_id: Annotated[str, typer.Argument(help="the job id the run printed", metavar="JOB")],
    component: Annotated[str | None, typer.Option(help="only this component")] = None,
    workdir: Workdir = Path(".fedmq/standalone"),
    output: Output = None,
) -> None:
    """Every party's metrics and curves of a standalone run's job, as JSON (fedmq.results)."""
    from fedmq.results import NoResults, metrics_json

    try:
        _emit(metrics_json(workdir, job_id, component), output)
    except NoResults as exc:
        Console(stderr=True).print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None


@standalone_app.command("model")
def model(
    job_id: Annotated[str, typer.Argument(help="the job id the run printed", metavar="JOB")],
    component: Annotated[str, typer.Argument(help="the component, e.g. hetero_lr_0")],
    workdir: Workdir = Path(".fedmq/standalone"),
    output: Output = None,
) -> None:
    """Each party's outputs of COMPONENT (its part of a model: weights by feature name, a
    fitted scaling, a profile) as JSON (fedmq.results)."""
    from fedmq.results import NoResults, model_json

    try:
        _emit(model_json(workdir, job_id, component), output)
    except NoResults as exc:
        Console(stderr=True).print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None


@standalone_app.command("data")
def data(
    job_id: Annotated[str, typer.Argument(help="the job id the run printed", metavar="JOB")],
    component: Annotated[str, typer.Argument(help="the component, e.g. predict_0")],
    party: Annotated[str, typer.Option(help="the party whose output to export")],
    name: Annotated[str, typer.Option(help="the output's name")] = "data",
    role: Annotated[
        str | None, typer.Option(help="the role, where the party ran the component as several")
    ] = None,
    workdir: Workdir = Path(".fedmq/standalone"),
    output: Output = None,
) -> None:
    """A party's output table of COMPONENT as CSV (id, the columns, the label if any: a text
    label by its class name), as `fedmq job data` exports a job's (fedmq.results)."""
    from fedmq.results import NoResults, data_csv

    try:
        text = data_csv(workdir, job_id, component, party, name, role)
    except NoResults as exc:
        Console(stderr=True).print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        Console(stderr=True).print(f"wrote {escape(str(output))}")
