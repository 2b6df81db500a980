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
