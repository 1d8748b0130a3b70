"""The component's charts: every metric logged per step (loss per epoch) and every curve it
wrote (ROC, KS, PR, gain, lift...). The page carries their data as JSON (the same answer as
GET /api/v1/board/jobs/{job_id}/charts) and static/board.js draws them with uPlot."""

from __future__ import annotations

from typing import Any

from fedgateway.board.registry import Panel

TITLES = {
    "loss": "Loss per epoch",
    "roc": "ROC curve",
    "ks": "KS curve",
    "pr": "Precision-recall curve",
    "gain": "Cumulative gain",
    "lift": "Lift",
}


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    name = ctx["node"].name
    charts = [
        {"chart": c, "title": TITLES.get(c.name, c.name.replace("_", " "))}
        for c in ctx["charts"].data
        if c.component == name
    ]
    return {"charts": charts, "job_id": ctx["job"]["job_id"]} if charts else None


PANEL = Panel(slug="charts", title="Charts", template="panel_charts.html", build=build, order=40)
