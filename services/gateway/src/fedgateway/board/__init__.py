"""fedmq board: the party's web pages under /board, served by its gateway (docs/board.md).

Server-rendered (Jinja2) pages with htmx for the live parts (the jobs list over server-sent
events) and uPlot for the charts, both vendored from npm at pinned versions under static/vendor
(VENDOR.json: versions, tarball integrity, licences): nothing is fetched from outside and no
Node runs. The pages read only the REST API's read models (fedgateway.api.board_data and the
clients the API routes use), so everything drawn is also JSON from /api/v1.

`mount(app, gateway)` is the one call the gateway app makes: it adds the login, the static
files, every page found in `fedgateway.board.pages` and the /api/v1/board routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from fedgateway.api import board_data
from fedgateway.api.deps import API_PREFIX, get_api
from fedgateway.board import auth, registry, views

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(duration=views.duration, short_time=views.short_time, size=views.size)

SECURITY_HEADERS = {
    # Scripts and styles only from the board's own static files: no inline script runs, so
    # markup that slipped through escaping could not execute. Data for the charts travels as
    # <script type="application/json">, which is never executed.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page in the board's frame: navigation from the registry, this party's id."""
    api = getattr(request.app.state, "api", None)
    nav = [
        {"slug": p.slug, "title": p.title}
        for p in request.app.state.board_pages
        if p.nav and p.available(request.app)
    ]
    context.setdefault("active", "")
    response = templates.TemplateResponse(
        request,
        template,
        {"nav": nav, "party_id": getattr(api, "party_id", ""), **context},
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def mount(app: FastAPI, gateway: Any) -> None:
    app.state.gateway = gateway
    app.state.board_sessions = auth.Sessions()
    app.state.board_pages = registry.pages()
    app.include_router(board_data.router, prefix=API_PREFIX)
    app.mount("/board/static", StaticFiles(directory=str(HERE / "static")), name="board-static")

    @app.exception_handler(auth.LoginRequired)
    def login_required(request: Request, exc: auth.LoginRequired) -> Response:
        if request.headers.get("hx-request"):
            # htmx follows redirects inside the fragment; tell it to load the login page.
            return Response(status_code=401, headers={"HX-Redirect": auth.login_url(exc.next_path)})
        return RedirectResponse(auth.login_url(exc.next_path), status.HTTP_303_SEE_OTHER)

    @app.get("/board", include_in_schema=False)
    def board_home() -> Response:
        return RedirectResponse("/board/jobs", status.HTTP_303_SEE_OTHER)

    @app.get("/board/login", include_in_schema=False)
    def login_form(request: Request, next: str | None = None) -> HTMLResponse:
        return render(request, "login.html", next=auth.safe_next(next), error=None)

    @app.post("/board/login", include_in_schema=False)
    def login(
        request: Request,
        token: str = Form(default="", max_length=4096),
        next: str = Form(default="/board/jobs", max_length=2048),
    ) -> Response:
        api = get_api(request)
        target = auth.safe_next(next)
        if not token or not api.token_ok(token):
            return render(
                request,
                "login.html",
                status_code=401,
                next=target,
                error="That token is not valid here.",
            )
        sid = request.app.state.board_sessions.open(token)
        response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            auth.COOKIE,
            sid,
            max_age=int(auth.SESSION_TTL_S),
            path="/board",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/board/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sid = request.cookies.get(auth.COOKIE)
        if sid:
            request.app.state.board_sessions.close(sid)
        response = RedirectResponse("/board/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(auth.COOKIE, path="/board")
        return response

    for page in app.state.board_pages:
        app.include_router(page.router, prefix="/board", include_in_schema=False)
