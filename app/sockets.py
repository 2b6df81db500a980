"""Socket.IO namespace /live: authenticated connects, rooms by who may see what, replay from a last event id."""

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, request, session
from flask_socketio import SocketIO, disconnect

from app import db
from app.feed import NAMESPACE, Feed
from incidents.access import Actor
from incidents.base import MAX_ID

log = logging.getLogger("ucsc.live")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def init_app(app: Flask) -> SocketIO:
    """Bind Socket.IO (gevent, set explicitly) and the feed; cross-origin browsers are refused."""
    origins = [origin_of(app.config["BASE_URL"]), *app.config["SOCKETIO_EXTRA_ORIGINS"]]
    socketio = SocketIO(
        app,
        async_mode="gevent",
        cors_allowed_origins=origins,
        ping_interval=float(app.config["SOCKETIO_PING_INTERVAL"]),
        ping_timeout=float(app.config["SOCKETIO_PING_TIMEOUT"]),
        max_http_buffer_size=64 * 1024,
        logger=False,
        engineio_logger=False,
    )
    feed = Feed(app, socketio)
    app.extensions["ucsc.socketio"] = socketio
    app.extensions["ucsc.feed"] = feed

    @socketio.on("connect", namespace=NAMESPACE)
    def connect(auth: Any = None) -> bool:
        actor = _authenticate(auth)
        if actor is None:
            log.info("refused /live connect from %s", request.remote_addr)
            return False
        feed.join(request.sid, actor, _last_event_id(auth))
        return True

    @socketio.on("disconnect", namespace=NAMESPACE)
    def gone(*_reason: Any) -> None:
        forget(request.sid)

    @socketio.on("catch_up", namespace=NAMESPACE)
    def catch_up(data: Any = None) -> None:
        """A client may also ask for what it missed after connecting: {"last_event_id": N}."""
        actor = _authenticate(None, sid_only=True)
        if actor is None:
            disconnect()
            return
        feed.join(request.sid, actor, _last_event_id(data))

    return socketio


def _authenticate(auth: Any, *, sid_only: bool = False) -> Actor | None:
    """An API client sends auth={"token": TOKEN}; a browser has its login session."""
    from app.auth import actor_for_token, actor_for_user

    if sid_only:
        return _connected.get(request.sid)
    actor = None
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        actor = actor_for_token(auth["token"])
    elif isinstance(session.get("_user_id"), str):
        from app.web import actor_for_browser

        actor = actor_for_browser(session["_user_id"])  # a Flask-Login session: its browser session row must be live
    elif session.get("user_id") is not None:
        actor = actor_for_user(session["user_id"])
    db.session().close()  # a long-lived socket must not hold a pooled connection
    if actor is not None:
        _connected[request.sid] = actor
    return actor


_connected: dict[str, Actor] = {}


def _last_event_id(data: Any) -> int | None:
    value = data.get("last_event_id") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        return None
    return value


def forget(sid: str) -> None:
    _connected.pop(sid, None)


def current_feed() -> Feed:
    return current_app.extensions["ucsc.feed"]
