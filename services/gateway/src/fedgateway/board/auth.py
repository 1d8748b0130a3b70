"""Who may see the board: the API's own tokens, as a bearer header or through the login form.

The login form takes an API token and, when the gateway accepts it (the API's constant-time
check), opens a session: a random 256-bit id in a cookie that is HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it, so no cross-site request rides on it) and
Secure when the board is served over TLS. The session keeps the token server-side, in the
gateway's memory, and every request checks it again: a token removed from the gateway's
settings ends its sessions at the next restart, and a restart ends every session. The cookie
never holds the token.

The board only reads; logging out is the one POST it answers besides the login itself.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status

from fedgateway.api.deps import ApiContext, get_api

COOKIE = "fedmq_board"
SESSION_TTL_S = 8 * 3600.0
MAX_SESSIONS = 1000
"""Oldest sessions go first beyond this (a login loop cannot grow the gateway's memory)."""


@dataclass
class _Session:
    token: str
    expires: float


class Sessions:
    def __init__(self, ttl_s: float = SESSION_TTL_S, limit: int = MAX_SESSIONS) -> None:
        self._ttl, self._limit = ttl_s, limit
        self._by_id: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
            while len(self._by_id) >= self._limit:
                self._by_id.pop(next(iter(self._by_id)))
            self._by_id[sid] = _Session(token, now + self._ttl)
        return sid

    def token(self, sid: str) -> str | None:
        with self._lock:
            session = self._by_id.get(sid)
            if session is None or session.expires <= time.monotonic():
                self._by_id.pop(sid, None)
                return None
            return session.token

    def close(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)


class LoginRequired(Exception):
    """Raised by `board_user` for a page request without a valid session: answered with a
    redirect to the login form (fedgateway.board.mount)."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def sessions_of(request: Request) -> Sessions:
    sessions = getattr(request.app.state, "board_sessions", None)
    if not isinstance(sessions, Sessions):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the board is not mounted")
    return sessions


def authenticated(request: Request, api: ApiContext) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given:
        return api.token_ok(given.strip())
    sid = request.cookies.get(COOKIE)
    if not sid:
        return False
    token = sessions_of(request).token(sid)
    return token is not None and api.token_ok(token)


def board_user(request: Request, api: Annotated[ApiContext, Depends(get_api)]) -> ApiContext:
    """The page's API context once the caller is known; otherwise LoginRequired."""
    if not authenticated(request, api):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return api


BoardUser = Annotated[ApiContext, Depends(board_user)]


def login_url(next_path: str) -> str:
    return f"/board/login?next={quote(next_path, safe='')}"


def safe_next(next_path: str | None) -> str:
    """Only a path on the board itself (no scheme, no host, no `//`): no open redirect."""
    if (
        next_path
        and next_path.startswith("/board/")
        and not any(c in next_path for c in ("\\", "\n", "\r"))
    ):
        return next_path
    return "/board/jobs"
