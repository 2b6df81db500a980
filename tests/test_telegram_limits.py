"""Telegram's limits hold at the stand-in's receive times; 429 storms and refused connections lose nothing."""

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from incidents.models import Job
from playbooks.models import Contact
from playbooks.telegram_models import TelegramChat
from tests.botapi import BotAPI
from tests.conftest import incident_payload
from tests.paging import add_contact
from tests.receivers import HttpReceiver
from tests.tgkit import (
    add_playbook,
    events_of,
    linked,
    stand_in,
    telegram_config,
    telegram_env,
    telegram_jobs,
    wait_until,
)


@pytest.fixture
def bot_api() -> Iterator[BotAPI]:
    yield from stand_in()


@pytest.fixture
def app_config(bot_api: BotAPI) -> dict:
    return telegram_config(bot_api)


def _many_contacts(app: Flask, api: BotAPI, n: int, first_chat: int = 10_000) -> list[int]:
    """`n` contacts of one organisation, each linked to their own private chat, added in one transaction."""
    from incidents.models import Organisation

    with app.app_context():
        session = db.session()
        with session.begin():
            org = session.scalar(select(Organisation).where(Organisation.code == "vnpt"))
            for i in range(n):
                api.add_chat(first_chat + i)
                session.add(Contact(organisation_id=org.id, name=f"Cán bộ {i}", telegram_chat_id=str(first_chat + i),
                                    channels=["telegram"], roles=[], language="vi", active=True))  # fmt: skip
    return [first_chat + i for i in range(n)]


def test_paging_120_contacts_at_once_keeps_the_limits_and_a_429_storm_delays_but_loses_nothing(
    app: Flask, client: FlaskClient, session: Session, operator: dict, bot_api: BotAPI, start_worker: Any
) -> None:
    add_playbook(app)
    chats = _many_contacts(app, bot_api, 120)
    start_worker(env=telegram_env(bot_api))
    # A storm: the first five sendMessage calls are refused with retry_after, which pauses every send. Two seconds,
    # so the pause shows beside the rate limit itself (which holds the next 30 sends for about a second anyway).
    bot_api.fail("sendMessage", 429, retry_after=2, count=5)
    client.post("/api/v1/incidents", json=incident_payload(category="phishing"), headers=operator)
    sent = bot_api.wait_sent(120, timeout=40)
    by_chat = Counter(int(c.params["chat_id"]) for c in sent)
    assert sorted(by_chat) == chats and set(by_chat.values()) == {1}, "every contact once, none twice"
    assert bot_api.limit_violations() == []
    refused = [c for c in bot_api.state.calls if c.method == "sendMessage" and c.status == 429]
    assert len(refused) == 5
    # After a 429 only what was already on the wire arrives (at most one second's worth), then sends pause.
    first_429 = min(c.mono for c in refused)
    assert len([c for c in sent if first_429 < c.mono < first_429 + 1.0]) <= 30
    after = sorted(c.mono for c in sent if c.mono > first_429)
    assert max(b - a for a, b in zip([first_429, *after], after, strict=False)) >= 1.0, "no pause after the 429"
    for call in refused:  # each refused page is sent again, once, no sooner than Telegram asked
        (again,) = [c for c in sent if c.params["chat_id"] == call.params["chat_id"]]
        assert again.mono - call.mono >= 2.0
    span = max(c.mono for c in sent) - min(c.mono for c in sent)
    assert span >= 3.0, "120 messages at 30 per second take at least three seconds"
    wait_until(lambda: {j.state for j in telegram_jobs(session)} == {"done"}, what="every send job done")
    assert len(telegram_jobs(session)) == 120


def test_refused_connections_lose_nothing_and_send_nothing_twice_and_a_blocked_chat_falls_through(
    app: Flask, client: FlaskClient, session: Session, operator: dict, bot_api: BotAPI, start_worker: Any
) -> None:
    add_playbook(app)
    for chat in (3001, 3002, 3003):
        linked(app, bot_api, chat)
    receiver = HttpReceiver().start()
    try:
        blocked = add_contact(app, organisation="vnpt", name="Phạm Chặn", telegram_chat_id="3009",
                              webhook_url=receiver.url, channels=["telegram", "webhook"])  # fmt: skip
        bot_api.add_chat(3009)
        bot_api.block(3009)
        worker = start_worker(env=telegram_env(bot_api, UCSC_TELEGRAM_RETRY_SECONDS="0.1"))
        wait_until(lambda: "telegram ready" in worker.log(), what="the worker leads and polls")
        # Refused until every send has failed three times (three retry intervals), then listening again.
        bot_api.stop()
        client.post("/api/v1/incidents", json=incident_payload(category="phishing"), headers=operator)
        wait_until(lambda: len(js := telegram_jobs(session)) == 4 and all(j.attempts >= 3 for j in js), timeout=30,
                   what="three failed attempts of every send")  # fmt: skip
        assert bot_api.calls_of("sendMessage") == []
        bot_api.start()
        sent = bot_api.wait_sent(3, timeout=30)
        assert Counter(int(c.params["chat_id"]) for c in sent) == {3001: 1, 3002: 1, 3003: 1}

        # The blocked chat: marked undeliverable, the page goes to the contact's next channel (their webhook).
        (post,) = receiver.wait_for(1, timeout=30)
        assert post.json["page_id"] == events_of(session, "page.sent")[0].data["page_id"]
        session.rollback()
        assert session.get(TelegramChat, 3009).undeliverable_at is not None
        (failed,) = [e for e in events_of(session, "page.failed") if e.data.get("contact_id") == blocked]
        assert (failed.data["channel"], failed.data["next_channel"]) == ("telegram", "webhook")
        assert len(events_of(session, "telegram.undeliverable")) == 1
        time.sleep(0.5)
        assert len(bot_api.calls_of("sendMessage")) == 3, "nothing was sent twice"
        assert session.scalar(select(Job.state).where(Job.kind == "telegram.send", Job.payload["chat_id"].as_integer()
                                                      == 3009)) == "dead"  # fmt: skip
    finally:
        receiver.close()
