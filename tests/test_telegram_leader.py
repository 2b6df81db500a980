"""One Telegram leader per bot token: on PostgreSQL exactly one worker polls; killing it moves the leadership."""

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from playbooks.telegram_models import TelegramLeader
from tests.botapi import BotAPI
from tests.conftest import incident_payload
from tests.tgkit import (
    add_playbook,
    linked,
    settings,
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


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_on_postgresql_one_polls_and_killing_it_moves_the_leadership_losing_nothing(
    app: Any, client: FlaskClient, session: Session, operator: dict, bot_api: BotAPI, start_worker: Any
) -> None:
    add_playbook(app)
    chats = [5001, 5002, 5003]
    for chat in chats:
        linked(app, bot_api, chat)
    env = telegram_env(bot_api)
    workers = [start_worker(env=env), start_worker(env=env)]
    leader = wait_until(lambda: next((w for w in workers if "telegram ready" in w.log()), None), what="a leader")
    other = next(w for w in workers if w is not leader)
    time.sleep(2.5)  # the other keeps trying for the lock every second meanwhile
    assert "telegram leader" not in other.log()
    polls = len(bot_api.calls_of("getUpdates"))
    assert polls >= 2 and bot_api.state.conflicts == 0, "one process polls, never two at once"
    session.rollback()
    row = session.get(TelegramLeader, settings(app, bot_api).bot)
    assert row is not None and row.worker.endswith(f":{leader.pid}")

    # Pages queued while Telegram cannot be reached, then the leader dies holding their leases.
    bot_api.stop()
    client.post("/api/v1/incidents", json=incident_payload(category="phishing"), headers=operator)
    wait_until(lambda: len(js := telegram_jobs(session)) == 3 and all(j.attempts >= 1 for j in js),
               what="the leader tried the sends")  # fmt: skip
    leader.kill()
    bot_api.start()
    wait_until(lambda: "telegram ready" in other.log(), timeout=20, what="the leadership moved")
    sent = bot_api.wait_sent(3, timeout=20)
    assert Counter(int(c.params["chat_id"]) for c in sent) == dict.fromkeys(chats, 1)
    wait_until(lambda: {j.state for j in telegram_jobs(session)} == {"done"}, what="the sends recorded")
    session.rollback()
    assert session.get(TelegramLeader, settings(app, bot_api).bot).worker.endswith(f":{other.pid}")
    assert bot_api.state.conflicts == 0
