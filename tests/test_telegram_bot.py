"""Linking by `/start <code>`, the bot's commands in Vietnamese and English, and the board's group."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from playbooks.models import PAGE_ACKED, Contact, Page
from playbooks.telegram_links import create_link_code, revoke_link
from playbooks.telegram_models import TelegramMessage
from tests.botapi import BotAPI
from tests.conftest import incident_payload
from tests.paging import add_contact
from tests.tgkit import (
    add_playbook,
    events_of,
    linked,
    message_ids,
    refusals,
    stand_in,
    telegram_config,
    telegram_env,
    user_for,
    wait_until,
)

BOARD = -5001


@pytest.fixture
def bot_api() -> Iterator[BotAPI]:
    yield from stand_in()


@pytest.fixture
def app_config(bot_api: BotAPI) -> dict:
    return telegram_config(bot_api)


def _replies(api: BotAPI, chat_id: int) -> list[str]:
    return [c.params["text"] for c in api.calls_of("sendMessage") if int(c.params["chat_id"]) == chat_id]


def _code(app: Flask, contact_id: int) -> str:
    with app.app_context():
        return create_link_code(session=db.session(), contact_id=contact_id, actor="admin", ttl=timedelta(hours=1))


def test_start_code_links_an_account_once_and_commands_answer_in_the_contacts_language(
    app: Flask, client: FlaskClient, session: Session, operator: dict, bot_api: BotAPI, start_worker: Any
) -> None:
    add_playbook(app, org="dic")
    dung = add_contact(app, organisation="dic", name="Đỗ Dũng", channels=["telegram"])
    user_for(app, dung, "dung", role="operator", org="dic")
    code = _code(app, dung)
    for chat in (4001, 4002):
        bot_api.add_chat(chat)
    worker = start_worker(env=telegram_env(bot_api))
    wait_until(lambda: "telegram ready" in worker.log(), what="the bot polls")
    assert [c["command"] for c in bot_api.state.commands[""]] == ["mine", "status", "ack", "help", "start"]
    assert bot_api.state.commands[""][0]["description"] == "Các việc đang chờ tôi"
    assert bot_api.state.commands["en"][0]["description"] == "My open pages and tasks"

    bot_api.say(bot_api.user(4001), 4001, f"/start {code}")
    wait_until(lambda: _replies(bot_api, 4001), what="the link answered")
    assert "đã được liên kết với Đỗ Dũng" in _replies(bot_api, 4001)[0]
    session.rollback()
    assert session.get(Contact, dung).telegram_chat_id == "4001"
    bot_api.say(bot_api.user(4002, language_code="en"), 4002, f"/start {code}")  # a code works once
    wait_until(lambda: _replies(bot_api, 4002), what="the second use answered")
    assert "not valid, was used already" in _replies(bot_api, 4002)[0]
    bot_api.say(bot_api.user(4002, language_code="en"), 4002, "/mine")
    wait_until(lambda: len(_replies(bot_api, 4002)) == 2, what="an unlinked /mine answered")
    assert "Link your Telegram account first" in _replies(bot_api, 4002)[1]

    filed = client.post("/api/v1/incidents", json=incident_payload(category="phishing", tlp="green"),
                        headers=operator).get_json()  # fmt: skip
    wait_until(lambda: len(_replies(bot_api, 4001)) == 2, what="the page to the linked account")
    bot_api.say(bot_api.user(4001), 4001, "/mine")
    wait_until(lambda: len(_replies(bot_api, 4001)) == 3, what="/mine answered")
    assert (
        filed["ref"] in _replies(bot_api, 4001)[2] and "Đang trực" in _replies(bot_api, 4001)[2]
    )  # no schedule: all active
    bot_api.say(bot_api.user(4001), 4001, f"/status {filed['ref']}")
    wait_until(lambda: len(_replies(bot_api, 4001)) == 4, what="/status answered")
    assert "Trạng thái" in _replies(bot_api, 4001)[3] and filed["ref"] in _replies(bot_api, 4001)[3]
    bot_api.say(bot_api.user(4001), 4001, "/status TH-1999-99999")
    wait_until(lambda: len(_replies(bot_api, 4001)) == 5, what="/status of an unknown ref answered")
    assert "Không có sự cố TH-1999-99999" in _replies(bot_api, 4001)[4]

    bot_api.say(bot_api.user(4001), 4001, f"/ack {filed['ref']}")
    wait_until(lambda: [p for p in _pages(session) if p.state == PAGE_ACKED], what="/ack acknowledged the page")
    (acked,) = events_of(session, "page.acknowledged")
    assert (acked.data["contact_id"], acked.data["via"]) == (dung, "telegram")
    edit = bot_api.wait_for(lambda a: a.calls_of("editMessageText"), what="the page message edited")[0]
    assert int(edit.params["message_id"]) == message_ids(bot_api, 4001)[1]
    # As a press does, /ack keeps the edited text: a later press adds its line to it.
    session.rollback()
    stored = session.scalar(select(TelegramMessage.text).where(
        TelegramMessage.chat_id == 4001, TelegramMessage.message_id == message_ids(bot_api, 4001)[1]))  # fmt: skip
    assert stored == edit.params["text"] and "Đỗ Dũng" in stored

    # Revoked: the account's presses are refused from now on.
    with app.app_context():
        revoke_link(session=db.session(), contact_id=dung, actor="admin")
    page_message = message_ids(bot_api, 4001)[1]
    data = bot_api.state.messages[(4001, page_message)]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    bot_api.press(bot_api.user(4001), 4001, page_message, data)
    wait_until(lambda: refusals(session), what="the press after revocation refused")
    assert refusals(session)[-1]["reason"] == "not_linked"


def _pages(session: Session) -> list[Page]:
    session.rollback()
    return list(session.query(Page))


def test_the_board_group_sees_serious_incidents_and_requests_for_direction_and_a_member_answers_from_it(
    app: Flask, client: FlaskClient, session: Session, operator: dict, make_token: Any, bot_api: BotAPI,
    start_worker: Any,
) -> None:  # fmt: skip
    bot_api.add_chat(BOARD, title="Ban Chỉ đạo")
    member = linked(app, bot_api, 6001, org="dic", name="Lê Chỉ Đạo")
    user_for(app, member, "board-member", role="committee", org="dic")
    outsider = linked(app, bot_api, 6002, org="vnpt", name="Người ngoài")
    user_for(app, outsider, "outsider", role="responder")
    admin = make_token("admin", "dic")  # before the worker runs: SQLite has one writer at a time
    worker = start_worker(env=telegram_env(bot_api, UCSC_TELEGRAM_BOARD_CHAT_ID=str(BOARD)))
    wait_until(lambda: "telegram ready" in worker.log(), what="the bot polls")

    filed = client.post("/api/v1/incidents", json=incident_payload(tlp="amber"), headers=operator).get_json()
    with app.app_context():  # a fresh `g`: the session fixture's context would keep the first caller
        decided = client.post(f"/api/v1/incidents/{filed['id']}/classification", headers=admin,
                              json={"action": "decide", "class": "serious"})  # fmt: skip
    assert decided.status_code == 200, decided.get_json()
    asked = client.post(f"/api/v1/incidents/{filed['id']}/direction-requests", headers=operator,
                        json={"question_vi": "Có ngắt kết nối Internet của Cổng không?"})  # fmt: skip
    assert asked.status_code == 201, asked.get_json()
    posts = wait_until(lambda: len(r := _replies(bot_api, BOARD)) >= 2 and r, what="two board posts")
    assert "Sự cố nghiêm trọng" in posts[0] and "Xin ý kiến chỉ đạo" in posts[1]
    assert all(filed["ref"] in p and "TLP: AMBER" in p for p in posts)
    direction_post = message_ids(bot_api, BOARD)[1]

    # Not a board member: refused, nothing on the timeline; then a member's directive.
    bot_api.say(bot_api.user(6002), BOARD, "Cứ ngắt luôn", reply_to=direction_post)
    bot_api.say(bot_api.user(6001), BOARD, "Đồng ý ngắt kết nối, báo cáo trước 17 giờ.", reply_to=direction_post)
    wait_until(lambda: events_of(session, "direction.answered"), what="the directive on the timeline")
    (answered,) = events_of(session, "direction.answered")
    assert answered.data["directive"] == "Đồng ý ngắt kết nối, báo cáo trước 17 giờ."
    assert answered.actor == "board-member"
    wait_until(lambda: any(r.get("reason") == "not_board_member" for r in refusals(session)), what="refusal audited")
