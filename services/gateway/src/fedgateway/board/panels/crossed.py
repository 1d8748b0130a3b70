"""What crossed between this party and its peers for the job, per tag and direction, from
this party's audit log (GET /api/v1/board/jobs/{job_id}/crossed)."""

from __future__ import annotations

from typing import Any

from fedgateway.board.registry import Panel


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    job_id = ctx["job"]["job_id"]
    return {"crossed": ctx["crossed"], "error": ctx["crossed_error"], "job_id": job_id}


PANEL = Panel(
    slug="crossed",
    title="What crossed between the parties",
    template="panel_crossed.html",
    build=build,
    order=90,
    per_component=False,
)
