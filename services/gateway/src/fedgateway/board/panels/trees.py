"""SecureBoost trees (hetero_secureboost): each tree drawn server-side as SVG with this party's
own split details only (a host's split at the guest: "party P, split #k"), and the feature
importance. Loaded like the binning panel (htmx) from /board/jobs/{job}/trees/{component};
its data: GET /api/v1/board/jobs/{job}/trees/{component}."""

from __future__ import annotations

from typing import Any

from fedgateway.api.board_models import BOOST_TYPE
from fedgateway.board.registry import Panel


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    node = ctx["node"]
    if node.type != BOOST_TYPE:
        return None
    job_id = ctx["dag"].job_id
    return {
        "url": f"/board/jobs/{job_id}/trees/{node.name}",
        "json": f"/api/v1/board/jobs/{job_id}/trees/{node.name}",
    }


PANEL = Panel(
    slug="trees",
    title="Trees and feature importance",
    template="panel_trees.html",
    build=build,
    order=41,
)
