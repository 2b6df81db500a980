"""Socket.IO namespace /live: authenticated connects, rooms by who may see what, replay from a last event id."""

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, request, session
from flask_socketio import SocketIO, disconnect, emit

from app import db
from app.auth import Credential, Identity, browser_credential, token_credential
from app.feed import NAMESPACE, Feed
from incidents.base import MAX_ID

log = logging.getLogger("ucsc.live")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class OriginCheck:
    """Engine.IO's origin rule: the page's own origin (the host the request names), UCSC_BASE_URL's, and the extras.

    The page's own origin is always allowed, so a server bound elsewhere than UCSC_BASE_URL says still serves its
    own pages; a cross-site page cannot name our host as its origin, and the session cookie is the host's own.
    """

    def __init__(self, base_url: str, extra: list[str]) -> None:
        self.allowed = frozenset({origin_of(base_url), *(o.rstrip("/") for o in extra)})
        self.refused: set[str] = set()

    def __call__(self, origin: str | None, environ: dict[str, Any] | None = None) -> bool:
        if not origin or origin in self.allowed:
            return True
        environ = environ or {}
        host = environ.get("HTTP_HOST")
        if host and origin == f"{environ.get('wsgi.url_scheme', 'http')}://{host}":
            return True
        if origin not in self.refused and len(self.refused) < 100:  # once per origin: a refused page retries forever
            self.refused.add(origin)
            log.warning(
                "refused /live from origin %s (allowed: %s): if people open UCSC at that address, set "
                "UCSC_BASE_URL=%s or add it to UCSC_SOCKETIO_EXTRA_ORIGINS",
                origin, ", ".join(sorted(self.allowed)), origin,
            )  # fmt: skip
        return False


class SocketPathOnly:
    """Socket.IO's WSGI middleware for its own path only; every other request goes straight to Flask.

    Flask-SocketIO's middleware copies each request's environ and defines a class at every call, whatever the
    path: 2 % of the web's CPU for an alert repeat (py-spy under bench/sources.py), for requests it hands on.
    """

    def __init__(self, middleware: Any) -> None:
        self.middleware = middleware
        self.prefix: str = middleware.engineio_path  # "/socket.io/"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") or "").startswith(self.prefix):
            return self.middleware(environ, start_response)
        return self.middleware.wsgi_app(environ, start_response)  # read at each call: a debugger may wrap it


def init_app(app: Flask) -> SocketIO:
    """Bind Socket.IO (gevent, set explicitly) and the feed; cross-origin browsers are refused."""
    socketio = SocketIO(
        app,
        async_mode="gevent",
        cors_allowed_origins=OriginCheck(app.config["BASE_URL"], list(app.config["SOCKETIO_EXTRA_ORIGINS"])),
        ping_interval=float(app.config["SOCKETIO_PING_INTERVAL"]),
        ping_timeout=float(app.config["SOCKETIO_PING_TIMEOUT"]),
        max_http_buffer_size=64 * 1024,
        logger=False,
        engineio_logger=False,
    )
    app.wsgi_app = SocketPathOnly(app.wsgi_app)  # type: ignore[method-assign]
    feed = Feed(app, socketio)
    app.extensions["ucsc.socketio"] = socketio
    app.extensions["ucsc.feed"] = feed

    @socketio.on("connect", namespace=NAMESPACE)
    def connect(auth: Any = None) -> bool:
        """A client opens /live with a token or its browser session; it joins its rooms and gets what it missed."""
        found = _authenticate(auth)
        if found is None:
            log.info("refused /live connect from %s", request.remote_addr)
            return False
        feed.admit(request.sid, *found)
        feed.join(request.sid, _last_event_id(auth))
        return True

    @socketio.on("disconnect", namespace=NAMESPACE)
    def gone(*_reason: Any) -> None:
        feed.forget(request.sid)

    @socketio.on("catch_up", namespace=NAMESPACE)
    def catch_up(data: Any = None) -> None:
        """A client may also ask for what it missed after connecting: {"last_event_id": N}; rate-limited per client."""
        member = feed.members.get(request.sid)
        if member is None:
            disconnect()
            return
        wait = member.spend()
        if wait:
            retry = math.ceil(wait * 10) / 10
            emit("error", {"code": "rate_limited", "message": "too many catch_up requests", "retry_after": retry})
            return
        feed.join(request.sid, _last_event_id(data))

    return socketio


def _authenticate(auth: Any) -> tuple[Identity, Credential] | None:
    """An API client sends auth={"token": TOKEN}; a browser has its Flask-Login session, backed by a live row."""
    found = None
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        found = token_credential(auth["token"])
    elif isinstance(session.get("_user_id"), str):
        found = browser_credential(session["_user_id"])
    db.session().close()  # a long-lived socket must not hold a pooled connection
    return found


def _last_event_id(data: Any) -> int | None:
    value = data.get("last_event_id") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        return None
    return value


def current_feed() -> Feed:
    return current_app.extensions["ucsc.feed"]
