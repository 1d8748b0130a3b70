"""`fedmq audit ...`: a party's audit log, through its REST API (/api/v1/audit), and the
offline verification of an exported log.

    fedmq audit events JOB [--json]     what crossed for the job, one line per message (a
                                        job.accept with the grants that covered the job)
    fedmq audit alerts [JOB] [--json]   findings of severity warn and critical
    fedmq audit report JOB [--json]     post-hoc audit: rules re-run over the recorded log
    fedmq audit export -o audit.jsonl   the whole log (JSON lines) for `verify`
    fedmq audit verify audit.jsonl      offline: broken links, altered or missing records,
                                        checkpoints that do not match (needs no server)
    fedmq audit verify mine.jsonl --peer theirs.jsonl
                                        also: the peer's checkpoints this party holds against
                                        the peer's log, and what crossed, in both logs

Connection options as in `fedmq data` (--url/--token or FEDMQ_API_URL/FEDMQ_API_TOKEN).
Exit status: 0 fine, 1 `verify` found problems or `report` a broken chain or critical findings,
2 the request was refused or the API unreachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
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

audit_app = typer.Typer(
    help="The party's audit log: events, alerts, reports, offline verification.",
    no_args_is_help=True,
)

JobArg = Annotated[str, typer.Argument(help="the job id", metavar="JOB")]


def _get(url: str, token: str, path: str, **params: Any) -> httpx.Response:
    query = {k: v for k, v in params.items() if v is not None}
    return api_request(url, token, "GET", f"/audit{path}", timeout=60.0, params=query)


def _findings(record: dict[str, Any]) -> str:
    return ", ".join(f"{f['rule']} ({f['severity']})" for f in record["findings"]) or "-"


def _grants(record: dict[str, Any]) -> str:
    """The grants a job.accept names (the accepting party's, covering the job), else "-"."""
    grants = record.get("facts", {}).get("grants")
    if not grants:
        return "-"
    return ", ".join(
        f"#{g['grant_id']} {g['table']} ({','.join(g['component_types'])})" for g in grants
    )


@audit_app.command("events")
def events(
    job_id: JobArg,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    after: Annotated[int, typer.Option(help="records after this seq")] = 0,
    limit: Annotated[int, typer.Option(help="at most this many")] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """The job's records: one per message that entered or left the party."""
    body = _get(url, token, f"/jobs/{job_id}/events", after=after, limit=limit).json()
    if as_json:
        print_json(body)
        return
    rows = [
        [
            str(r["seq"]),
            r["direction"],
            r["type"],
            r["component"] or "-",
            r["tag"],
            str(r["iteration"]),
            f"{r['source_party']} -> {r['destination_party']}",
            str(r["size"]),
            _grants(r),
            _findings(r),
        ]
        for r in body["data"]
    ]
    heads = [
        *("seq", "dir", "type", "component", "tag", "iter", "from -> to", "bytes"),
        *("grants", "findings"),
    ]
    console.print(rich_table(f"audit events of {job_id}", heads, rows, right={"seq", "bytes"}))


@audit_app.command("alerts")
def alerts(
    job_id: Annotated[str | None, typer.Argument(help="the job id (all jobs if left out)")] = None,
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
    as_json: JsonFlag = False,
) -> None:
    """Findings of severity warn and critical."""
    body = _get(url, token, "/alerts", job_id=job_id).json()
    if as_json:
        print_json(body)
        return
    rows = [
        [f["at"], f["job_id"], f["rule"], f["severity"], f["party"], f["detail"]]
        for f in body["data"]
    ]
    heads = ["at", "job", "rule", "severity", "party", "detail"]
    console.print(rich_table("audit alerts", heads, rows))


@audit_app.command("report")
def report(
    job_id: JobArg, url: ApiUrl = DEFAULT_URL, token: ApiToken = "", as_json: JsonFlag = False
) -> None:
    """The post-hoc audit of a job; exit 1 on a broken chain or a critical finding."""
    body = _get(url, token, f"/jobs/{job_id}/report").json()
    if as_json:
        print_json(body)
    else:
        console.print(
            f"job {escape(job_id)} at party {body['party_id']}: {body['records']} records "
            f"(seq {body['first_seq']}..{body['last_seq']}), chain "
            + ("[green]verifies[/green]" if body["chain_ok"] else "[red]BROKEN[/red]")
        )
        for problem in body["chain_problems"]:
            console.print(f"  [red]{escape(problem)}[/red]")
        traffic = [
            [t["type"], t["direction"], t["peer"], str(t["messages"]), str(t["bytes"])]
            for t in body["traffic"]
        ]
        heads = ["type", "dir", "peer", "messages", "bytes"]
        console.print(rich_table("traffic", heads, traffic, right={"messages", "bytes"}))
        for name in ("findings_live", "findings_post_hoc"):
            rows = [
                [str(f["seq"]), f["rule"], f["severity"], f["party"], f["detail"]]
                for f in body[name]
                if f["severity"] != "info"
            ]
            title = name.replace("_", " ")
            console.print(f"{title}: {len(rows)}")
            if rows:
                heads = ["seq", "rule", "severity", "party", "detail"]
                console.print(rich_table(title, heads, rows))
        for held in body.get("peer_statements", []):
            verdict = (
                "[green]agrees[/green]"
                if held["agrees"]
                else f"[red]disagrees[/red]: {escape(held['problem'])}"
            )
            console.print(
                f"party {held['peer']}'s signed statement of the job (its record "
                f"{held['peer_seq']}): {verdict}"
            )
    critical = any(f["severity"] == "critical" for f in body["findings_live"])
    if not body["chain_ok"] or critical:
        raise typer.Exit(1)


@audit_app.command("export")
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="the file to write")],
    url: ApiUrl = DEFAULT_URL,
    token: ApiToken = "",
) -> None:
    """Write the whole log (JSON lines) for `fedmq audit verify`."""
    text = _get(url, token, "/export").text
    output.write_text(text)
    console.print(f"wrote {len(text.splitlines()) - 1} lines to {escape(str(output))}")


@audit_app.command("verify")
def verify(
    export_file: Annotated[Path, typer.Argument(help="an export (fedmq audit export)")],
    peer: Annotated[
        Path | None,
        typer.Option(
            "--peer",
            help="the peer party's export: check the peer's checkpoints this log holds against "
            "it, and that what crossed between the two is in both",
        ),
    ] = None,
) -> None:
    """Check an exported log offline; exit 1 naming every problem found."""
    from fedaudit.verify import Export, Problem, parse_export, verify_export, verify_pair

    def read(path: Path) -> Export:
        try:
            return parse_export(path.read_text().splitlines())
        except (OSError, ValueError) as exc:
            errors.print(f"[red]cannot read {escape(str(path))}:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None

    export = read(export_file)
    problems = verify_export(export)
    theirs = read(peer) if peer is not None else None
    if theirs is not None:
        problems += [
            Problem(p.kind, p.seq, f"party {theirs.party_id}'s export: {p}")
            for p in verify_export(theirs)
        ]
        problems += verify_pair(export, theirs)
    if not problems:
        console.print(
            f"[green]ok[/green]: {len(export.records)} records of party {export.party_id}, "
            f"{len(export.checkpoints)} signed checkpoints, chain intact"
        )
        if theirs is not None:
            held = sum(1 for c in export.peer_checkpoints if c.get("peer") == theirs.party_id)
            console.print(
                f"[green]ok[/green]: party {theirs.party_id}'s log ({len(theirs.records)} "
                f"records) matches the {held} checkpoints of it held here, and what crossed "
                "between the two is in both logs"
            )
        return
    for problem in problems:
        console.print(f"[red]{problem.kind}[/red]: {escape(str(problem))}")
    raise typer.Exit(1)
