"""Site: this party's gateway, its peers, each link's state and mean round trip, and the expiry
of its own, its peers' and the federation CA's certificates (GET /api/v1/board/site)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fedgateway.api.board_data import gateway_of, site_view
from fedgateway.board.auth import BoardUser
from fedgateway.board.registry import Page

router = APIRouter()


@router.get("/site", response_class=HTMLResponse)
def site_page(request: Request, api: BoardUser) -> HTMLResponse:
    from fedgateway.board import render

    return render(request, "site.html", active="site", site=site_view(gateway_of(request)))


PAGE = Page(slug="site", title="Site", router=router, order=40)
