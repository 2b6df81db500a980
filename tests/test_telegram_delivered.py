"""A Telegram page is delivered when the Bot API accepted its send, not when the leader was handed it."""

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.models import Job
from playbooks.models import Delivery, Page
from tests.botapi import BotAPI
from tests.conftest import incident_payload
from tests.tgkit import (
    add_playbook,
    events_of,
    linked,
    message_ids,
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


def _deliveries(session: Session) -> dict[int, Delivery]:
    session.rollback()
    return {d.contact_id: d for d in session.scalars(select(Delivery).where(Delivery.channel == "telegram"))}


def _deliver_job_states(session: Session) -> set[str]:
    session.rollback()
    return set(session.scalars(select(Job.state).where(Job.kind == "page.deliver")))


def test_a_telegram_page_is_delivered_when_the_bot_api_accepts_its_send_and_only_failed_when_it_refuses(
    app: Flask, client: FlaskClient, session: Session, operator: dict, bot_api: BotAPI, start_worker: Any
) -> None:
    add_playbook(app)
    first, second = linked(app, bot_api, 4001), linked(app, bot_api, 4002)
    refused = linked(app, bot_api, 4009)
    bot_api.block(4009)
    worker = start_worker(env=telegram_env(bot_api, UCSC_TELEGRAM_RETRY_SECONDS="0.1"))
    wait_until(lambda: "telegram ready" in worker.log(), what="the worker leads and polls")

    # The Bot API refuses connections: every page reaches the leader, and nothing reaches Telegram.
    bot_api.stop()
    client.post("/api/v1/incidents", json=incident_payload(category="phishing"), headers=operator)
    wait_until(lambda: len(js := telegram_jobs(session)) == 3 and all(j.attempts >= 2 for j in js), timeout=30,
               what="every send tried twice")  # fmt: skip
    # Each page.deliver job ends once the leader has its send: the worker completes it in a transaction after the
    # handler's, which under load may commit after the leader's second try (0.1 s apart), so it is waited for.
    wait_until(lambda: _deliver_job_states(session) == {"done"}, what="every page.deliver job done, Bot API down")
    assert events_of(session, "page.delivered") == []
    assert {d.state for d in _deliveries(session).values()} == {"queued"}
    assert session.scalars(select(Page)).one().first_delivered_at is None

    bot_api.start()
    received = {int(c.params["chat_id"]): c.at for c in bot_api.wait_sent(2, timeout=30)}
    assert sorted(received) == [4001, 4002]
    wait_until(lambda: len(events_of(session, "page.delivered")) == 2, what="both accepted sends recorded")
    wait_until(lambda: events_of(session, "page.failed"), what="the refused send recorded")

    delivered = {e.data["contact_id"]: e for e in events_of(session, "page.delivered")}
    assert sorted(delivered) == sorted([first, second])
    deliveries = _deliveries(session)
    for contact, chat in ((first, 4001), (second, 4002)):
        (message_id,) = message_ids(bot_api, chat)
        delivery = deliveries[contact]
        assert delivery.state == "delivered" and delivery.message_id == f"telegram:{chat}:{message_id}"
        assert delivered[contact].data["message_id"] == delivery.message_id
        assert delivery.delivered_at.timestamp() >= received[chat], "recorded before the Bot API had the send"
        assert delivered[contact].at.timestamp() >= received[chat]
    page = session.scalars(select(Page)).one()
    assert page.first_delivered_at == min(d.delivered_at for d in deliveries.values() if d.delivered_at)

    (failed,) = events_of(session, "page.failed")
    assert failed.data["contact_id"] == refused and failed.data["channel"] == "telegram"
    assert deliveries[refused].state == "failed" and deliveries[refused].delivered_at is None
