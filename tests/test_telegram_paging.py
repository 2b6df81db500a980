"""An incident's playbook pages linked contacts on Telegram; presses acknowledge, or are refused and change nothing."""

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from incidents.models import AuditEntry
from notifiers import telegram as tg
from playbooks.models import PAGE_ACKED, PAGE_OPEN, Page
from tests.botapi import BotAPI
from tests.conftest import incident_payload
from tests.sockets import LiveClient
from tests.tgkit import (
    add_playbook,
    buttons,
    count,
    events_of,
    linked,
    message_ids,
    page_states,
    refusals,
    sign,
    stand_in,
    telegram_config,
    telegram_env,
    wait_until,
)

LABELS = ["Nhận xử lý", "Cần hỗ trợ", "Đã xử lý xong"]


@pytest.fixture
def bot_api() -> Iterator[BotAPI]:
    yield from stand_in()


@pytest.fixture
def app_config(bot_api: BotAPI) -> dict:
    return telegram_config(bot_api)


def test_incident_pages_each_linked_contact_with_three_buttons_and_only_the_addressee_acknowledges(
    app: Any, client: FlaskClient, session: Session, operator: dict, bot_api: BotAPI, start_worker: Any,
    live_server: Any,
) -> None:  # fmt: skip
    add_playbook(app, org="vnpt", category="phishing")
    alice = linked(app, bot_api, 2001, name="Nguyễn <Alice> & Co")
    linked(app, bot_api, 2002, name="Trần Bình")
    carol = linked(app, bot_api, 2003, org="viettel", name="Lê Carol")  # linked, but not paged
    bot_api.add_chat(2999)  # a Telegram user nobody linked
    live = LiveClient(live_server.url).connect(operator)
    start_worker(env=telegram_env(bot_api))

    filed = client.post("/api/v1/incidents", json=incident_payload(category="phishing", tlp="amber"),
                        headers=operator).get_json()  # fmt: skip
    sent = bot_api.wait_sent(2, timeout=20)
    assert sorted(int(c.params["chat_id"]) for c in sent) == [2001, 2002]
    for call in sent:
        assert [label for label, _ in buttons(call)] == LABELS
        assert all(len(data.encode()) <= 64 for _, data in buttons(call))
        assert call.params["parse_mode"] == "HTML"
        assert filed["ref"] in call.params["text"]
        assert "Đề nghị kiểm tra &lt;hệ thống&gt; &amp; báo cáo" in call.params["text"]  # escaped, in Vietnamese
    page = session.query(Page).one()
    to_alice = next(c for c in sent if int(c.params["chat_id"]) == 2001)
    (message_id,) = message_ids(bot_api, 2001)
    ack_data = dict(buttons(to_alice))["Nhận xử lý"]
    wait_until(lambda: len(events_of(session, "page.delivered")) == 2, what="both deliveries recorded")
    timeline_before = count(session, type(events_of(session, "page.sent")[0]))

    # Refused: an unlinked user in Alice's chat, Carol with a genuinely signed button that was not hers, a forgery.
    bot_api.press(bot_api.user(2999), 2001, message_id, ack_data)
    bot_api.press(bot_api.user(2003), 2003, message_id, sign(app, bot_api, tg.ACK, page.id, 2003))
    bot_api.press(bot_api.user(2001), 2001, message_id, ack_data[:-3] + "AAA")
    answers = bot_api.wait_for(lambda a: len(a.calls_of("answerCallbackQuery")) >= 3 and a.calls_of(
        "answerCallbackQuery"), what="three answers")  # fmt: skip
    assert all(a.params.get("show_alert") in (True, "true", "True") for a in answers)
    reasons = wait_until(lambda: len(r := refusals(session)) >= 3 and r, what="three audited refusals")
    assert sorted(r["reason"] for r in reasons) == ["forged", "not_addressee", "not_linked"]  # handled concurrently
    assert next(r for r in reasons if r["reason"] == "not_addressee")["contact_id"] == carol
    assert page_states(session) == {page.id: PAGE_OPEN}
    assert count(session, type(events_of(session, "page.sent")[0])) == timeline_before
    assert bot_api.calls_of("editMessageText") == []

    # Accepted: Alice's own press; the message says who and when, the timeline and the live feed have it.
    bot_api.press(bot_api.user(2001), 2001, message_id, ack_data)
    edit = bot_api.wait_for(lambda a: a.calls_of("editMessageText"), what="the message edit")[0]
    assert "Đã nhận xử lý:" in edit.params["text"] and "Nguyễn &lt;Alice&gt; &amp; Co" in edit.params["text"]
    assert [label for label, _ in buttons(edit)] == LABELS[1:]
    assert page_states(session) == {page.id: PAGE_ACKED}
    (acked,) = events_of(session, "page.acknowledged")
    assert (acked.data["contact_id"], acked.data["via"]) == (alice, "telegram")
    frame = live.wait_for(lambda f: f.name == "page.acknowledged", timeout=30)
    assert frame.data["ref"] == filed["ref"]

    # Replayed: the same button again is refused and changes nothing.
    bot_api.press(bot_api.user(2001), 2001, message_id, ack_data)
    wait_until(lambda: len(refusals(session)) == 4, what="the replay refused")
    assert refusals(session)[-1]["reason"] == "replayed"
    assert len(events_of(session, "page.acknowledged")) == 1
    assert len(bot_api.calls_of("editMessageText")) == 1
    assert count(session, AuditEntry, AuditEntry.action == "ack.refused") == 4

    # The buttons left on the edited message: ask for support (the next tier is paged), then report done.
    left = dict(buttons(edit))
    bot_api.press(bot_api.user(2001), 2001, message_id, left["Cần hỗ trợ"])
    (support,) = wait_until(lambda: events_of(session, "page.support_requested"), what="support requested")
    assert support.data["page_id"] == page.id
    bot_api.press(bot_api.user(2001), 2001, message_id, left["Đã xử lý xong"])
    (done,) = wait_until(lambda: events_of(session, "task.completed"), what="the task done")
    assert done.data["done_by"] == "Nguyễn <Alice> & Co"
    live.disconnect()
