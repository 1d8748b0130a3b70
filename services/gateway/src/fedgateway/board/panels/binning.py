"""Binning tables (hetero_feature_binning): per feature its bins, rows, events, WOE and IV at
this party. The table comes from the component's model output, which the job page does not
read itself: the panel loads it (htmx, when it comes into the page) from
/board/jobs/{job}/binning/{component} (fedgateway.board.pages.model_panels), whose data is
GET /api/v1/board/jobs/{job}/binning/{component}."""

from __future__ import annotations

from typing import Any

from fedgateway.api.board_models import BINNING_TYPE
from fedgateway.board.registry import Panel


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    node = ctx["node"]
    if node.type != BINNING_TYPE:
        return None
    job_id = ctx["dag"].job_id
    return {
        "url": f"/board/jobs/{job_id}/binning/{node.name}",
        "json": f"/api/v1/board/jobs/{job_id}/binning/{node.name}",
    }


PANEL = Panel(
    slug="binning",
    title="Binning (WOE / IV)",
    template="panel_binning.html",
    build=build,
    order=40,
)
