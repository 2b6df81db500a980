"""Webhook mode: the web route checks the secret, stores each update once, answers in its body; the worker acts."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from app.telegram.settings import SECRET_HEADER, WEBHOOK_PATH
from playbooks.models import PAGE_ACKED
from playbooks.telegram_models import TelegramUpdate
from tests.botapi import BotAPI
from tests.conftest import incident_payload
from tests.live import LiveServer
from tests.tgkit import (
    add_playbook,
    buttons,
    count,
    events_of,
    linked,
    message_ids,
    page_states,
    refusals,
    stand_in,
    telegram_config,
    telegram_env,
    wait_until,
)


@pytest.fixture
def bot_api() -> Iterator[BotAPI]:
    yield from stand_in()


@pytest.fixture
def app_config(bot_api: BotAPI) -> dict:
    return telegram_config(bot_api, "webhook")


def test_webhook_mode_checks_the_secret_drops_repeats_answers_in_the_body_and_the_worker_acknowledges(
    app: Any, client: FlaskClient, session: Session, operator: dict, bot_api: BotAPI, start_worker: Any,
    database_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    add_playbook(app)
    linked(app, bot_api, 7001, name="Hoàng Webhook")
    env = telegram_env(bot_api, UCSC_TELEGRAM_MODE="webhook")
    env.pop("UCSC_BASE_URL")
    server = LiveServer(database_url, tmp_path / "gunicorn.log", env=env).start()
    try:
        worker = start_worker(env={**env, "UCSC_BASE_URL": server.url})
        wait_until(lambda: "telegram ready: webhook" in worker.log(), what="the webhook set")
        hook = bot_api.state.webhook
        assert hook["url"] == server.url + WEBHOOK_PATH and len(hook["secret_token"]) >= 32
        url = server.url + WEBHOOK_PATH
        assert httpx.post(url, json={"update_id": 1}, headers={SECRET_HEADER: "wrong"}).status_code == 403
        assert httpx.post(url, json={"update_id": 1}).status_code == 403
        assert count(session, TelegramUpdate) == 0

        client.post("/api/v1/incidents", json=incident_payload(category="phishing"), headers=operator)
        (page_call,) = bot_api.wait_sent(1, timeout=20)
        (message_id,) = message_ids(bot_api, 7001)
        data = dict(buttons(page_call))["Nhận xử lý"]

        forged = bot_api.press(bot_api.user(7001), 7001, message_id, data[:-4] + "abcd")
        answer = bot_api.wait_for(lambda a: a.calls_of("answerCallbackQuery"), what="the forged press answered")[0]
        assert answer.via == "webhook-reply" and answer.params["show_alert"] is True
        assert answer.params["callback_query_id"] == forged["callback_query"]["id"]
        wait_until(lambda: refusals(session), what="the worker audited the forgery")

        press = bot_api.press(bot_api.user(7001), 7001, message_id, data)
        edit = bot_api.wait_for(lambda a: a.calls_of("editMessageText"), what="the worker edited the page")[0]
        assert "Đã nhận xử lý:" in edit.params["text"]
        answers = bot_api.wait_for(
            lambda a: len(c := a.calls_of("answerCallbackQuery")) >= 2 and c, what="the press answered"
        )  # the reply is run after the response arrives
        assert [(a.via, a.params["show_alert"], a.params["text"]) for a in answers[1:]] == [
            ("webhook-reply", False, "Đã nhận xử lý.")
        ]
        assert set(page_states(session).values()) == {PAGE_ACKED}

        # Telegram delivers the same update again: stored once, processed once, not answered twice.
        bot_api.deliver_again(press)
        bot_api.wait_for(lambda a: not a.state.updates, what="the repeat delivered")
        assert count(session, TelegramUpdate) == 2
        assert len(events_of(session, "page.acknowledged")) == 1
        assert len(bot_api.calls_of("answerCallbackQuery")) == 2
        assert len(bot_api.calls_of("editMessageText")) == 1
        assert [r["reason"] for r in refusals(session)] == ["forged"]
        assert bot_api.calls_of("getUpdates") == []
    finally:
        server.stop()
