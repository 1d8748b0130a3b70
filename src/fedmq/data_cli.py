"""`fedmq data ...`: a party's tables and grants through its REST API (fedmq.sdk).

    export FEDMQ_API_URL=http://127.0.0.1:17401 FEDMQ_API_TOKEN=...
    fedmq data upload examples/data/breast_hetero_host.csv            # table breast_hetero_host
    fedmq data upload guest.csv --name breast_hetero_guest --label-column y
    fedmq data grant breast_hetero_host --to 9999 --components psi
    fedmq data grant breast_hetero_host --to 9999 --components psi,hetero_lr \
        --param hetero_lr.learning_rate --param hetero_lr.epochs=1..50   # all it may set here
    fedmq data list            # tables: rows, features, missing values, reads
    fedmq data grants          # who may read what

Exit status: 0 done, 2 refused (the reason is printed: bad rows with their lines, an unknown
table...) or the API unreachable.

The connection options (--url, --token, or FEDMQ_API_URL / FEDMQ_API_TOKEN) and the error
handling are shared with `fedmq job` (job_cli.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from fedflow.names import TABLE_NAME_PATTERN
from fedflow.policy import parse_param_spec
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from fedmq.cli_output import rich_table
from fedmq.sdk import ApiError, Client

DEFAULT_URL = "http://127.0.0.1:8081"

ApiUrl = Annotated[
    str, typer.Option("--url", envvar="FEDMQ_API_URL", help="the party's gateway (HTTP)")
]
ApiToken = Annotated[
    str,
    typer.Option(
        "--token", envvar="FEDMQ_API_TOKEN", help="an API token of that gateway", show_default=False
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="print the API's JSON instead")]

console = Console()
errors = Console(stderr=True)

data_app = typer.Typer(help="Tables and grants at a party (its REST API).", no_args_is_help=True)


@contextmanager
def api_client(url: str, token: str) -> Iterator[Client]:
    """A Client; a refused request ends the command with status 2 and the server's reason."""
    if not token:
        errors.print("[red]no API token:[/red] pass --token or set FEDMQ_API_TOKEN")
        raise typer.Exit(2)
    client = Client(url, token)
    try:
        yield client
    except ApiError as exc:
        where = f"{exc.method} {exc.path}: " if exc.method else ""
        status = f"{exc.status} " if exc.status else ""
        errors.print(
            f"[red]refused ({status.strip() or 'no answer'}):[/red] {escape(where + exc.detail)}"
        )
        raise typer.Exit(2) from None
    finally:
        client.close()


def api_request(
    url: str, token: str, method: str, path: str, *, timeout: float, **kwargs: Any
) -> httpx.Response:
    """One request to the party's REST API at `path` (under /api/v1) for the commands that
    speak to a router the SDK's Client does not wrap (audit, serving); no token, no answer or
    a refusal ends the command with status 2 and the server's reason."""
    if not token:
        errors.print("[red]no API token:[/red] pass --token or set FEDMQ_API_TOKEN")
        raise typer.Exit(2)
    try:
        response = httpx.request(
            method,
            f"{url.rstrip('/')}/api/v1{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        errors.print(f"[red]refused (no answer):[/red] cannot reach {escape(url)}: {exc}")
        raise typer.Exit(2) from None
    if response.status_code >= 400:
        try:
            detail = str(response.json().get("detail"))
        except ValueError:
            detail = response.text
        errors.print(f"[red]refused ({response.status_code}):[/red] {escape(detail)}")
        raise typer.Exit(2)
    return response


@contextmanager
def upload_progress(quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A bar of the bytes sent (on stderr), then a spinner while the party parses and stores
    the table; nothing with --json."""
    if quiet:
        yield None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    )
    task = progress.add_task("sending", total=None)

    def report(sent: int, size: int) -> None:
        if sent >= size:
            progress.update(task, description="parsing at the party", total=None, completed=0)
        else:
            progress.update(task, total=size, completed=sent)

    with progress:
        yield report


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


@data_app.command("upload")
def upload(
    csv_file: Annotated[
        Path, typer.Argument(help="CSV: an id column, numeric features", metavar="CSV")
    ],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    name: Annotated[str | None, typer.Option(help="table name (default: the file's stem)")] = None,
    id_column: Annotated[str, typer.Option(help="the id column")] = "id",
    label_column: Annotated[str | None, typer.Option(help="the label column, if any")] = None,
    replace: Annotated[bool, typer.Option(help="overwrite a table of that name")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Upload a CSV table to the party (stored there only; bad rows are reported by line)."""
    if not csv_file.is_file():
        errors.print(f"[red]no such file:[/red] {escape(str(csv_file))}")
        raise typer.Exit(2)
    if name is None and not re.fullmatch(TABLE_NAME_PATTERN, csv_file.stem):
        errors.print(
            f"[red]{escape(repr(csv_file.stem))} (the file's name) is no table name[/red] "
            "(letters, digits, _ . and -, up to 128): give one with --name"
        )
        raise typer.Exit(2)
    with api_client(url, token) as api, upload_progress(as_json) as on_progress:
        table = api.upload_table(
            name or csv_file.stem,
            csv_file,
            id_column=id_column,
            label_column=label_column,
            replace=replace,
            on_progress=on_progress,
        )
    if as_json:
        print_json(table.model_dump(mode="json"))
        return
    label = f", label {table.label_column}" if table.label_column else ""
    if table.label_classes:
        classes = ", ".join(f"{k} = {name}" for k, name in enumerate(table.label_classes))
        label += f" (text: classes {classes})"
    console.print(
        f"table [bold]{escape(table.name)}[/bold]: {table.rows} rows, {table.features} "
        f"features{escape(label)}, {table.missing_values} missing values"
    )


@data_app.command("grant")
def grant(
    table: Annotated[str, typer.Argument(help="a table of this party")],
    to: Annotated[str, typer.Option("--to", help="the party whose jobs may read it")],
    components: Annotated[
        str, typer.Option(help="component types its data may flow into, comma-separated; * any")
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="TYPE.PARAM: a param --to's pipelines may set for this party (the rest keep "
            "their defaults), or TYPE.PARAM=MIN..MAX within bounds; repeat it",
        ),
    ] = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    as_json: JsonFlag = False,
) -> None:
    """Let jobs initiated by party --to read TABLE into these component types."""
    types = [c.strip() for c in components.split(",") if c.strip()]
    try:
        rules = parse_param_spec(param) if param else None
    except ValueError as exc:
        errors.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    params = (
        {t: r.model_dump(mode="json", exclude_defaults=True) for t, r in rules.items()}
        if rules
        else None
    )
    with api_client(url, token) as api:
        granted = api.grant(table, to, types, params)
        for warning in grant_warnings(api, granted.table, granted.grantee):
            errors.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if as_json:
        print_json(granted.model_dump(mode="json"))
        return
    console.print(
        f"table {escape(granted.table)} granted to party {escape(granted.grantee)} for "
        f"{escape(', '.join(granted.component_types))}"
    )
    if granted.params:
        console.print(f"its pipelines may set: {escape(params_text(granted.params))}")


def grant_warnings(api: Client, table: str, grantee: str) -> list[str]:
    """What in a recorded grant looks like a typo: a table this party holds no upload of (yet),
    a party its gateway has no link to. A grant before the upload or the link is legitimate,
    so these warn; a site whose API cannot say (no gateway answering /peers) is not checked."""
    warnings = []
    if table not in {t.name for t in api.tables()}:
        warnings.append(
            f"this party has no table {table} (yet): the grant applies once a table of that "
            "name is uploaded; check the name with `fedmq data list`"
        )
    try:
        peers = api.peers()
    except ApiError:
        return warnings
    if grantee not in peers:
        known = ", ".join(sorted(peers)) or "none"
        warnings.append(
            f"party {grantee} is not one of this site's peers ({known}): its jobs cannot reach "
            "this party until the gateway links to it"
        )
    return warnings


def params_text(params: dict[str, dict[str, Any]] | None) -> str:
    """A grant's params as `TYPE.PARAM` / `TYPE.PARAM=MIN..MAX`, as --param takes them."""
    if not params:
        return "any (the policy decides)"
    parts: list[str] = []
    for ctype, rules in params.items():
        bounds = rules.get("bounds") or {}
        for name in rules.get("may_set") or []:
            if name not in bounds:
                parts.append(f"{ctype}.{name}")
        for name, limits in bounds.items():
            low = "" if limits.get("min") is None else f"{limits['min']:g}"
            high = "" if limits.get("max") is None else f"{limits['max']:g}"
            parts.append(f"{ctype}.{name}={low}..{high}")
        if not parts or not parts[-1].startswith(f"{ctype}."):
            parts.append(f"{ctype}: defaults only")
    return ", ".join(parts)


@data_app.command("list")
def list_tables(url: ApiUrl = DEFAULT_URL, token: ApiToken = "", as_json: JsonFlag = False) -> None:
    """The party's tables."""
    with api_client(url, token) as api:
        tables = api.tables()
    if as_json:
        print_json([t.model_dump(mode="json") for t in tables])
        return
    columns = ("name", "rows", "features", "label", "missing", "reads", "uploaded")
    cells = [
        (
            t.name,
            str(t.rows),
            str(t.features),
            t.label_column or "",
            str(t.missing_values),
            str(t.reads),
            t.uploaded_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for t in tables
    ]
    numbers = ("rows", "features", "missing", "reads")
    console.print(rich_table("Tables", columns, cells, right=numbers))


@data_app.command("grants")
def list_grants(
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    table: Annotated[str | None, typer.Option(help="only this table")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The party's grants."""
    with api_client(url, token) as api:
        grants = api.grants(table=table)
    if as_json:
        print_json([g.model_dump(mode="json") for g in grants])
        return
    columns = ("table", "grantee", "component types", "params", "granted")
    cells = [
        (
            g.table,
            g.grantee,
            ", ".join(g.component_types),
            params_text(g.params),
            g.granted_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for g in grants
    ]
    console.print(rich_table("Grants", columns, cells))
