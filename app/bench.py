"""Routes for `make bench` only (UCSC_BENCH_ROUTES=1): a bare Socket.IO emit to compare the feed against."""

from flask import Blueprint, Response, current_app, jsonify, request

from app.feed import NAMESPACE

bp = Blueprint("bench", __name__, url_prefix="/_bench")


@bp.post("/emit")
def bare_emit() -> Response:
    """Emit `bench.bare` to the desk room straight away: no database, no feed."""
    data = request.get_json(silent=True) or {}
    socketio = current_app.extensions["ucsc.socketio"]
    socketio.emit("bench.bare", {"seq": data.get("seq")}, to="desk", namespace=NAMESPACE)
    return jsonify({"ok": True})


@bp.post("/pg-sleep")
def pg_sleep() -> Response:
    """Hold a PostgreSQL connection in `pg_sleep` for the requested seconds (proves psycopg yields to gevent)."""
    from sqlalchemy import text

    from app import db

    seconds = min(10.0, float((request.get_json(silent=True) or {}).get("seconds", 2)))
    db.session().execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
    db.session().rollback()
    return jsonify({"slept": seconds})
