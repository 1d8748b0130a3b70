"""`fedmq model ...` and `fedmq serving ...`: the party's published models and its online
services, through its REST API (/api/v1/serving; docs/serving.md).

    fedmq model publish JOB --name N [--component hetero_lr_0] [--guest-only]
    fedmq model list [--name N]            fedmq model show N VERSION [--owner P]
    fedmq model accept N VERSION --owner P (a host's operator)
    fedmq model delete N VERSION [--owner P]
    fedmq model export N VERSION -o credit-1.json   fedmq model import credit-1.json
    fedmq serving bind SERVICE N VERSION [--fallback refuse|guest_only]
    fedmq serving canary SERVICE VERSION --percent 10     (VERSION 0: no canary)
    fedmq serving switch SERVICE VERSION   fedmq serving rollback SERVICE
    fedmq serving unbind SERVICE           fedmq serving status [SERVICE]
    fedmq serving events [SERVICE]         fedmq serving features TABLE (a host)
    fedmq serving predict SERVICE ID --feature x0=0.1 --feature x1=2

Connection options as in `fedmq data` (--url/--token or FEDMQ_API_URL/FEDMQ_API_TOKEN).
Exit status: 0 fine, 2 the request was refused or the API unreachable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from fedmq.cli_output import rich_table
from fedmq.data_cli import (
    DEFAULT_URL,
    ApiToken,
    ApiUrl,
    JsonFlag,
    api_request,
    console,
    errors,
    print_json,
)

model_app = typer.Typer(
    help="Published models: publish, list, show, accept, delete.", no_args_is_help=True
)
serving_app = typer.Typer(
    help="Online services: bind, canary, switch, rollback, unbind, status, predict.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="the model's name", metavar="NAME")]
VersionArg = Annotated[int, typer.Argument(help="the model's version", metavar="VERSION")]
ServiceArg = Annotated[str, typer.Argument(help="the service id", metavar="SERVICE")]
Owner = Annotated[str | None, typer.Option("--owner", help="the publishing guest (at a host)")]


def call(url: str, token: str, method: str, path: str, **kwargs: Any) -> Any:
    return api_request(url, token, method, f"/serving{path}", timeout=90.0, **kwargs).json()


def _print_model(model: dict[str, Any]) -> None:
    console.print(
        f"model [bold]{escape(model['name'])}[/bold] version {model['version']} "
        f"({model['role']} part, owner {model['owner_party']}): {model['state']}"
    )
    console.print(f"  job {model['job_id']} component {model['component']}")
    for host, state in sorted(model.get("hosts", {}).items()):
        console.print(f"  host {host}: {escape(str(state))}")


def _print_service(service: dict[str, Any]) -> None:
    canary = (
        f", canary v{service['canary_version']} at {service['canary_percent']:g}%"
        if service.get("canary_version")
        else ""
    )
    console.print(
        f"service [bold]{escape(service['service_id'])}[/bold]: {service['model_name']} "
        f"v{service['version']}{canary} ({service['state']}, fallback {service['fallback']})"
    )


@model_app.command("publish")
def publish(
    job: Annotated[str, typer.Argument(help="the job that trained the model", metavar="JOB")],
    name: Annotated[str, typer.Option("--name", help="the model's name")],
    component: Annotated[str, typer.Option(help="the training component")] = "hetero_lr_0",
    guest_only: Annotated[bool, typer.Option(help="the guest's part alone")] = False,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    as_json: JsonFlag = False,
) -> None:
    """Publish a job's model as the next version of NAME; each host is asked to accept it."""
    body = {"job_id": job, "name": name, "component": component, "guest_only": guest_only}
    model = call(url, token, "POST", "/models", json=body)
    print_json(model) if as_json else _print_model(model)


@model_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option(help="only this model")] = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    as_json: JsonFlag = False,
) -> None:
    found = call(url, token, "GET", "/models", params={"name": name} if name else {})
    if as_json:
        print_json(found)
        return
    rows = [
        [m["name"], str(m["version"]), m["role"], m["owner_party"], m["state"], m["job_id"]]
        for m in found["data"]
    ]
    console.print(rich_table("models", ["name", "version", "role", "owner", "state", "job"], rows))


@model_app.command("show")
def show(
    name: NameArg,
    version: VersionArg,
    owner: Owner = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    as_json: JsonFlag = False,
) -> None:
    params = {"owner_party": owner} if owner else {}
    model = call(url, token, "GET", f"/models/{name}/{version}", params=params)
    print_json(model) if as_json else _print_model(model)


@model_app.command("accept")
def accept(
    name: NameArg,
    version: VersionArg,
    owner: Annotated[str, typer.Option("--owner", help="the publishing guest")],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    """A host's operator accepts a guest's model that its policy left pending."""
    model = call(
        url, token, "POST", f"/models/{name}/{version}/accept", params={"owner_party": owner}
    )
    _print_model(model)


@model_app.command("delete")
def delete(
    name: NameArg,
    version: VersionArg,
    owner: Owner = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    params = {"owner_party": owner} if owner else {}
    call(url, token, "DELETE", f"/models/{name}/{version}", params=params)
    console.print(f"deleted {escape(name)} version {version}")


@model_app.command("export")
def export(
    name: NameArg,
    version: VersionArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the file")],
    owner: Owner = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    """This party's part of a model version as a signed file."""
    params = {"owner_party": owner} if owner else {}
    document = call(url, token, "GET", f"/models/{name}/{version}/export", params=params)
    output.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {escape(str(output))} (signed by {document['public_key'][:16]}...)")


@model_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="a file `fedmq model export` wrote")],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    """Add a model version from a signed export (its key must be trusted here)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        errors.print(f"[red]cannot read {escape(str(path))}:[/red] {exc}")
        raise typer.Exit(2) from None
    _print_model(call(url, token, "POST", "/models/import", json={"document": document}))


@serving_app.command("bind")
def bind(
    service: ServiceArg,
    name: NameArg,
    version: VersionArg,
    fallback: Annotated[str, typer.Option(help="refuse or guest_only")] = "refuse",
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    body = {"service_id": service, "name": name, "version": version, "fallback": fallback}
    _print_service(call(url, token, "POST", "/services", json=body))


@serving_app.command("canary")
def canary(
    service: ServiceArg,
    version: Annotated[int, typer.Argument(help="the canary version; 0: none")],
    percent: Annotated[float, typer.Option(help="share of request keys, 0..100")] = 10.0,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    body = {"version": version or None, "percent": percent if version else 0.0}
    _print_service(call(url, token, "POST", f"/services/{service}/canary", json=body))


@serving_app.command("switch")
def switch(
    service: ServiceArg, version: VersionArg, url: ApiUrl = DEFAULT_URL, token: ApiToken = ""
) -> None:
    _print_service(
        call(url, token, "POST", f"/services/{service}/switch", json={"version": version})
    )


@serving_app.command("rollback")
def rollback(service: ServiceArg, url: ApiUrl = DEFAULT_URL, token: ApiToken = "") -> None:
    _print_service(call(url, token, "POST", f"/services/{service}/rollback"))


@serving_app.command("unbind")
def unbind(service: ServiceArg, url: ApiUrl = DEFAULT_URL, token: ApiToken = "") -> None:
    result = call(url, token, "DELETE", f"/services/{service}")
    console.print(f"unbound {escape(service)} (drained: {result['drained']})")


@serving_app.command("status")
def status(
    service: Annotated[str | None, typer.Argument(metavar="[SERVICE]")] = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    as_json: JsonFlag = False,
) -> None:
    found = (
        {"data": [call(url, token, "GET", f"/services/{service}")]}
        if service
        else call(url, token, "GET", "/services")
    )
    if as_json:
        print_json(found)
        return
    for item in found["data"]:
        _print_service(item)


@serving_app.command("events")
def events(
    service: Annotated[str | None, typer.Argument(metavar="[SERVICE]")] = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    as_json: JsonFlag = False,
) -> None:
    found = call(url, token, "GET", "/events", params={"service_id": service} if service else {})
    if as_json:
        print_json(found)
        return
    rows = [
        [e["at"], e["action"], e["service_id"], e["model_name"], str(e["version"] or "")]
        for e in found["data"]
    ]
    console.print(
        rich_table("serving events", ["at", "action", "service", "model", "version"], rows)
    )


@serving_app.command("features")
def features(
    table: Annotated[str, typer.Argument(help="the table to serve features from")],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    """A host loads one of its tables into its online feature cache."""
    result = call(url, token, "POST", "/features", json={"table": table})
    console.print(f"loaded {result['rows']} rows of {escape(table)}")


@serving_app.command("predict")
def predict(
    service: ServiceArg,
    row_id: Annotated[str, typer.Argument(help="the row's id", metavar="ID")],
    feature: Annotated[list[str], typer.Option(help="NAME=VALUE, once per feature")],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    values: dict[str, float] = {}
    for item in feature:
        name, sep, value = item.partition("=")
        if not sep:
            errors.print(f"[red]--feature {escape(item)}:[/red] expected NAME=VALUE")
            raise typer.Exit(2)
        try:
            values[name] = float(value)
        except ValueError:
            errors.print(f"[red]--feature {escape(item)}:[/red] not a number")
            raise typer.Exit(2) from None
    print_json(
        call(url, token, "POST", f"/{service}/predict", json={"id": row_id, "features": values})
    )
