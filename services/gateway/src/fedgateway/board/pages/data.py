"""Data: this party's tables with their profile (rows, features, missing values per column,
label values, digest, reads) and the grants it gave. A grant another party gave this one is
kept at that party only: this page cannot list it (docs/board.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fedgateway.api.deps import answering
from fedgateway.board import views
from fedgateway.board.auth import BoardUser
from fedgateway.board.registry import Page

router = APIRouter()


@router.get("/data", response_class=HTMLResponse)
def data_page(request: Request, api: BoardUser) -> HTMLResponse:
    from fedgateway.board import render

    def tables() -> list[dict[str, object]]:
        with answering():
            return api.data().table_list()

    rows, tables_error = views.optional(tables)
    with answering():
        grants = api.scheduler().grant_list()
    return render(
        request,
        "data.html",
        active="data",
        tables=rows or [],
        tables_error=tables_error,
        grants=grants,
    )


PAGE = Page(slug="data", title="Data", router=router, order=20)
