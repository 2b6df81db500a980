"""The webhook route: Telegram posts an update; it is checked, stored once, and a press is answered at once."""

import hmac

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.orm import sessionmaker

from app import db
from app.telegram.presses import Presses
from app.telegram.settings import SECRET_HEADER, WEBHOOK_PATH, Settings
from app.telegram.updates import store_update

bp = Blueprint("telegram", __name__)


@bp.post(WEBHOOK_PATH)
def webhook() -> Response | tuple[str, int]:
    """Telegram posts an update: check the secret header, store it once, answer a press in the response body."""
    settings = Settings.from_config(current_app.config)
    if settings is None or settings.mode != "webhook":
        return "", 404
    if not hmac.compare_digest(request.headers.get(SECRET_HEADER, ""), settings.webhook_secret):
        return "", 403
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("update_id"), int):
        return "", 400
    query = body.get("callback_query")
    press = isinstance(query, dict) and isinstance(query.get("message"), dict)
    if press:
        # Judged before the update is stored: once stored, the worker may apply the press before this answer is
        # written, and the answer would then judge the press by its own outcome (an ack as "no longer open").
        chat = query["message"].get("chat") or {}
        sender = query.get("from") or {}
        presses = Presses(sessionmaker(db.engine(), expire_on_commit=False), settings, current_app.config)
        outcome = presses.judge(data=str(query.get("data") or ""), chat_id=int(chat.get("id", 0)),
                                user_id=int(sender.get("id", 0)), chat_type=str(chat.get("type", "")))  # fmt: skip
    if not store_update(db.session(), settings, body):
        return "", 200  # a repeat of an update already stored: Telegram retried its delivery
    if not press:
        return "", 200
    # The answer rides on the response (no round trip); the worker applies the press from the stored update.
    return jsonify({"method": "answerCallbackQuery", "callback_query_id": str(query.get("id")),
                    "text": outcome.answer, "show_alert": outcome.alert})  # fmt: skip
