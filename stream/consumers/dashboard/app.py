"""The dashboard web service (aiohttp): page, live Server-Sent Events, acknowledge, snapshots.

Routes (all but ``/login`` need the token, see :mod:`stream.consumers.dashboard.auth`):

* ``GET /`` the ward page; ``GET /static/{app.js,app.css}`` its script and style.
* ``GET /api/state`` every bed's view (JSON), what a page loads on connect.
* ``GET /api/events`` Server-Sent Events (W3C/WHATWG HTML "server-sent events"): first a
  ``snapshot`` event with the whole ward, then one ``bed`` event per changed bed, and a comment
  line every 15 s so proxies keep the stream open. ``EventSource`` reconnects by itself after a
  network drop or a restart and receives a fresh snapshot, so a page always catches up.
* ``POST /api/ack`` JSON ``{"alert_id": ..., "by": ...}``: acknowledge, published to the acks
  topic. JSON only (a cross-site form cannot send it without a CORS preflight; the session
  cookie is ``SameSite=Strict`` as well).
* ``GET /api/snapshot/{alert_id}.png`` the ECG paper image of the window that triggered the
  alert, read from Redis ``mirage:snapshot:{alert_id}`` (written by the stream worker).
* ``GET /api/st/{bed_id}`` the bed's current ST per lead, its reference and last-hour trend
  (issue #19), read from Redis ``mirage:st:{bed_id}`` (written by the stream worker); 404 when
  the bed has no ST yet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from stream.consumers.dashboard.auth import COOKIE, auth_middleware, login_handlers
from stream.consumers.dashboard.consumer import DashboardFeed
from stream.consumers.dashboard.state import WardState
from stream.core.st import ST_VIEW_KEY
from stream.settings import Settings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "application/javascript", "app.css": "text/css"}
SNAPSHOT_KEY = "mirage:snapshot:{alert_id}"
_ALERT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_HEARTBEAT_S = 15.0
_CLIENT_QUEUE = 1000

FEED_KEY = web.AppKey("feed", DashboardFeed)
STATE_KEY = web.AppKey("state", WardState)
CLIENTS_KEY = web.AppKey("clients", set)
REDIS_KEY = web.AppKey("redis", object)
SHOWN_KEY = web.AppKey("shown", dict)  # bed -> state last pushed to pages
EXPIRE_TASK_KEY = web.AppKey("expire_task", asyncio.Task)


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
    return resp


def _broadcast(app: web.Application, bed_id: str) -> None:
    """Push one bed's new view to every open event stream."""
    view = app[STATE_KEY].bed_view(bed_id, time.time_ns())
    app[SHOWN_KEY][bed_id] = view["state"]
    _push(app, "bed", json.dumps(view, separators=(",", ":")))


async def _expire_loop(app: web.Application, every_s: float) -> None:
    """Push beds whose state changed with time alone (an ended episode past its retention)."""
    while True:
        await asyncio.sleep(every_s)
        now = time.time_ns()
        for bed in app[STATE_KEY].beds():
            if app[STATE_KEY].bed_view(bed, now)["state"] != app[SHOWN_KEY].get(bed):
                _broadcast(app, bed)


def _push(app: web.Application, event: str, data: str) -> None:
    """Queue one event for every open event stream (drop clients that fall behind)."""
    for q in list(app[CLIENTS_KEY]):
        try:
            q.put_nowait((event, data))
        except asyncio.QueueFull:  # a stuck client: close it, EventSource reconnects with a snapshot
            app[CLIENTS_KEY].discard(q)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": STATIC_FILES[name]})


def _snapshot_payload(app: web.Application) -> dict[str, Any]:
    feed = app[FEED_KEY]
    snap = app[STATE_KEY].snapshot(time.time_ns())
    snap["caught_up"] = feed.caught_up.is_set()
    snap["counts"] = dict(feed.counts)
    return snap


async def api_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(_snapshot_payload(request.app))


async def api_events(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=_CLIENT_QUEUE)
    clients = request.app[CLIENTS_KEY]
    clients.add(queue)
    try:
        await resp.write(b"retry: 2000\n")
        snap = json.dumps(_snapshot_payload(request.app), separators=(",", ":"))
        await resp.write(f"event: snapshot\ndata: {snap}\n\n".encode())
        while queue in clients:
            try:
                event, data = await asyncio.wait_for(queue.get(), timeout=_HEARTBEAT_S)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await resp.write(f"event: {event}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        clients.discard(queue)
    return resp


async def api_ack(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json":
        return web.json_response({"error": f"content type {request.content_type!r}, expected application/json"}, status=415)
    try:
        body = await request.json()
        alert_id = body["alert_id"]
        by = str(body.get("by", ""))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return web.json_response({"error": "body must be JSON with alert_id"}, status=400)
    if not isinstance(alert_id, str) or not _ALERT_ID.match(alert_id):
        return web.json_response({"error": f"bad alert_id {str(alert_id)[:80]!r}"}, status=400)
    try:
        ack = await request.app[FEED_KEY].acknowledge(alert_id, by)
    except KeyError:
        return web.json_response({"error": f"unknown alert_id {alert_id!r}"}, status=404)
    except Exception as exc:  # broker unreachable: tell the nurse it did not go through
        log.error("acknowledgement of %s could not be published: %s", alert_id, type(exc).__name__)
        return web.json_response({"error": "acknowledgement could not be published; try again"}, status=503)
    return web.json_response({"ack": ack.to_dict()})


async def _redis_blob(request: web.Request, param: str, key: str, what: str, content_type: str) -> web.StreamResponse:
    """Serve one Redis value named by a URL parameter (404 for a bad name or no value, 503 if Redis is down)."""
    name = request.match_info[param]
    if not _ALERT_ID.match(name):
        raise web.HTTPNotFound()
    try:
        data = await request.app[REDIS_KEY].get(key.format(**{param: name}))  # type: ignore[attr-defined]
    except Exception as exc:
        log.warning("%s lookup failed: %s", what, type(exc).__name__)
        return web.json_response({"error": f"{what} store unavailable"}, status=503)
    if not data:
        return web.json_response({"error": f"no {what} for this {param.split('_')[0]}"}, status=404)
    return web.Response(body=data, content_type=content_type)


async def api_snapshot(request: web.Request) -> web.StreamResponse:
    return await _redis_blob(request, "alert_id", SNAPSHOT_KEY, "snapshot", "image/png")


async def api_st(request: web.Request) -> web.StreamResponse:
    return await _redis_blob(request, "bed_id", ST_VIEW_KEY, "ST", "application/json")


async def logout(request: web.Request) -> web.StreamResponse:
    resp = web.Response(status=303, headers={"Location": "/login"})
    resp.del_cookie(COOKIE, path="/")
    return resp


def create_app(settings: Settings, token: str, *, group: str | None = None, redis: Any = None,
               ended_retention_s: float = 3600.0, expire_every_s: float = 15.0) -> web.Application:
    """Build the dashboard application (the feed and Redis start with the app).

    Args:
        settings: broker, Redis and topic settings.
        token: the ward token (see :func:`stream.consumers.dashboard.auth.load_token`).
        group: consumer group of this instance (default: a fresh one).
        redis: an asyncio Redis client to use instead of one from ``settings.redis_url``.
        ended_retention_s: how long an ended MI episode stays on the bed.
        expire_every_s: how often beds are checked for a state change by time alone.
    """
    app = web.Application(middlewares=[security_headers, auth_middleware(token)])
    state = WardState(ended_retention_s=ended_retention_s)
    app[STATE_KEY] = state
    app[CLIENTS_KEY] = set()
    app[SHOWN_KEY] = {}
    app[FEED_KEY] = DashboardFeed(settings, state, lambda bed: _broadcast(app, bed), group=group,
                                  on_caught_up=lambda: _push(app, "status", json.dumps({"caught_up": True})))
    if redis is None:
        import redis.asyncio as aioredis

        # TLS to Redis is chosen by the URL scheme (rediss://), as redis-py does.
        redis = aioredis.from_url(settings.redis_url, password=settings.redis_password or None)
    app[REDIS_KEY] = redis

    async def on_startup(app: web.Application) -> None:
        await app[FEED_KEY].start()
        app[EXPIRE_TASK_KEY] = asyncio.create_task(_expire_loop(app, expire_every_s), name="dashboard-expire")

    async def on_shutdown(app: web.Application) -> None:
        for q in list(app[CLIENTS_KEY]):
            app[CLIENTS_KEY].discard(q)
            try:
                q.put_nowait(("bye", "{}"))
            except asyncio.QueueFull:
                pass

    async def on_cleanup(app: web.Application) -> None:
        if EXPIRE_TASK_KEY in app:
            app[EXPIRE_TASK_KEY].cancel()
        await app[FEED_KEY].stop()
        await app[REDIS_KEY].aclose()  # type: ignore[attr-defined]

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    login_get, login_post = login_handlers(token)
    app.router.add_get("/login", login_get)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/events", api_events)
    app.router.add_post("/api/ack", api_ack)
    app.router.add_get("/api/snapshot/{alert_id}.png", api_snapshot)
    app.router.add_get("/api/st/{bed_id}", api_st)
    return app
