"""Routes for `make bench` only (UCSC_BENCH_ROUTES=1): a bare Socket.IO emit and an intake floor to compare against."""

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


@bp.post("/intake-floor/<kind>")
def intake_floor(kind: str) -> Response:
    """What every alert post costs before its filing, answered at once: the caller's token checked, the rate limit
    taken, the JSON body read and parsed; nothing filed. bench/sources.py posts the repeats here too, so the cost
    of a repeat beyond this floor is measured in the same run."""
    from app.api.operations import raw_json_body
    from app.auth import current_actor, limit_intake
    from incidents import strict_json
    from incidents.policy import Capability, require

    actor = current_actor()
    require(actor, Capability.FILE_INCIDENT, "your role may not file incidents")
    limit_intake(actor)
    payload = strict_json.loads(raw_json_body())
    return jsonify({"kind": kind, "fields": len(payload), "filed": False})
