"""Token authentication of the dashboard: nothing is served without the ward token.

The token comes from (first found) ``--token-file``, ``$MIRAGE_DASHBOARD_TOKEN_FILE``,
``Settings.dashboard_token`` (TOML or ``$MIRAGE_DASHBOARD_TOKEN``). It is never logged.

A request is authenticated by either

* ``Authorization: Bearer <token>`` (scripts, other services), or
* the session cookie ``mirage_session`` set by the login form: an HMAC-SHA256 of a fixed label
  keyed by the token (the token itself never sits in the browser's cookie jar), ``HttpOnly``,
  ``SameSite=Strict``, ``Secure`` when served over TLS.

Unauthenticated requests get 401 (API, event stream, images, static files alike); the only
thing served is the login form at ``/login`` itself, which contains no ward data. Comparisons
are constant time (:func:`hmac.compare_digest`). Follows OWASP session management guidance
(HttpOnly, SameSite, no secrets in logs or URLs).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from stream.errors import SettingsError

log = logging.getLogger(__name__)

COOKIE = "mirage_session"
MIN_TOKEN_CHARS = 16
PUBLIC_PATHS = frozenset({"/login"})
FAILED_LOGIN_DELAY_S = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_token(token_file: str | None, settings_token: str, env: dict[str, str] | None = None) -> str:
    """The dashboard token from a file, the environment or settings; raise if none or too short."""
    env = dict(os.environ) if env is None else env
    path = token_file or env.get("MIRAGE_DASHBOARD_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read dashboard token file {path}: {exc.strerror}") from None
        where = f"token file {path}"
    else:
        token = settings_token.strip()
        where = "MIRAGE_DASHBOARD_TOKEN / dashboard_token"
    if not token:
        raise SettingsError("the dashboard needs a token: --token-file F, $MIRAGE_DASHBOARD_TOKEN_FILE, "
                            "$MIRAGE_DASHBOARD_TOKEN or dashboard_token in the settings file")
    if len(token) < MIN_TOKEN_CHARS:
        raise SettingsError(f"dashboard token from {where} has {len(token)} characters; need at least {MIN_TOKEN_CHARS}")
    return token


def session_value(token: str) -> str:
    """The cookie value for a token (HMAC, so the cookie does not reveal the token)."""
    return hmac.new(token.encode(), b"mirage-dashboard-session-v1", hashlib.sha256).hexdigest()


def is_authenticated(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def auth_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware: 401 for every unauthenticated request except the login form."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or is_authenticated(request, token):
            return await handler(request)
        if request.method == "GET" and request.path == "/" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPFound("/login")  # a browser opening the page gets the form
        return web.json_response({"error": "unauthorized"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="mirage-dashboard"'})

    return middleware


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MIRAGE dashboard: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:1.4rem system-ui,sans-serif;margin:3rem;background:#111;color:#eee}}
input,button{{font-size:1.4rem;padding:.5rem}}p.err{{color:#ff8080}}</style></head>
<body><main><h1>MIRAGE ward dashboard</h1>
<form method="post" action="/login"><label for="token">Ward token</label><br>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form>{error}</main></body></html>"""


def login_page(error: str = "") -> web.Response:
    err = f'<p class="err" role="alert">{html.escape(error)}</p>' if error else ""
    return web.Response(text=_LOGIN_PAGE.format(error=err), content_type="text/html",
                        status=401 if error else 200, headers={"Cache-Control": "no-store"})


def login_handlers(token: str) -> tuple[Handler, Handler]:
    """GET and POST handlers of ``/login``."""

    async def get(request: web.Request) -> web.StreamResponse:
        return login_page()

    async def post(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = str(form.get("token", "")).strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("dashboard login refused from %s", request.remote)
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)  # slows guessing; the token is long and random
            return login_page("That token is not valid.")
        resp = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
        resp.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict",
                        secure=request.secure, path="/", max_age=12 * 3600)
        return resp

    return get, post
