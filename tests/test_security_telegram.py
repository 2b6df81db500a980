"""TLP history on Telegram: a board post never quotes, after a lowering, what was asked under a stricter level."""

import signal
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.botapi import BotAPI
from tests.conftest import incident_payload
from tests.tgkit import stand_in, telegram_config, telegram_env, wait_until

BOARD = -5002
QUESTION = "Có cô lập máy chủ của Ban Cơ yếu không?"


@pytest.fixture
def bot_api() -> Iterator[BotAPI]:
    yield from stand_in()


@pytest.fixture
def app_config(bot_api: BotAPI) -> dict:
    return telegram_config(bot_api)


def test_finding_2_a_board_post_keeps_a_question_asked_while_red_out_of_the_group_after_a_lowering(
    app: Flask, client: FlaskClient, make_token: Any, bot_api: BotAPI, start_worker: Any
) -> None:
    bot_api.add_chat(BOARD, title="Ban Chỉ đạo")
    desk = make_token("operator", "dic", username="desk")
    env = telegram_env(bot_api, UCSC_TELEGRAM_BOARD_CHAT_ID=str(BOARD))
    first = start_worker(env=env)  # elected once, so the board's cursor stands before the incident
    wait_until(lambda: "telegram ready" in first.log(), what="the bot polls")
    first.kill(signal.SIGTERM)
    red = client.post("/api/v1/incidents", headers=desk,
                      json=incident_payload(tlp="red", participants=[{"user": "desk"}])).get_json()  # fmt: skip
    asked = client.post(f"/api/v1/incidents/{red['id']}/direction-requests", headers=desk,
                        json={"question_vi": QUESTION})  # fmt: skip
    assert asked.status_code == 201, asked.get_json()
    lowered = client.patch(f"/api/v1/incidents/{red['id']}", headers=desk, json={"tlp": "amber"})
    assert lowered.status_code == 200, lowered.get_json()

    start_worker(env=env)  # the post is made now, after the lowering
    posts = wait_until(
        lambda: [c.params["text"] for c in bot_api.calls_of("sendMessage") if int(c.params["chat_id"]) == BOARD],
        what="the board post",
    )
    assert red["ref"] in posts[0]
    assert QUESTION not in posts[0], "a question asked under TLP:RED reached the board's group"
    assert "TLP:RED" in posts[0]
