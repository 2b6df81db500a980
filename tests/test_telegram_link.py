"""The directory hands out one-time Telegram links (API and directory page) and revokes them; both audited."""

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import db
from incidents.base import utcnow
from incidents.models import AuditEntry
from playbooks.models import Contact
from playbooks.telegram_links import link_account
from tests.paging import add_contact
from tests.tgkit import TOKEN

BOT = "ucsc_test_bot"


@pytest.fixture
def app_config() -> dict:
    # No worker here: the web side only needs to know Telegram is on, and the bot's name for the deep link.
    return {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": "http://127.0.0.1:9/bot", "TELEGRAM_BOT_USERNAME": BOT}


# No `session` fixture here: its app context would outlive each request, and with it `g` (the first caller's
# actor and signed-in user) and a session whose snapshot the pages would read.


def _audit(app: Flask, action: str) -> list[tuple[str, str, dict]]:
    with app.app_context():
        rows = db.session().scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [(r.actor, r.target, dict(r.data)) for r in rows]


def _chat_of(app: Flask, contact_id: int) -> str | None:
    with app.app_context():
        return db.session().get(Contact, contact_id).telegram_chat_id


def _links(app: Flask, code: str, chat_id: int) -> int | None:
    """`/start <code>` from a private chat, as the leader runs it for an update: the contact linked, or None."""
    with app.app_context():
        contact = link_account(session=db.session(), code=code, chat_id=chat_id, user_id=chat_id, chat_type="private")
        return None if contact is None else contact.id


def test_the_api_makes_one_time_links_for_the_desk_only_and_revokes_them_audited(
    app: Flask, client: FlaskClient, operator: dict, make_token: Any
) -> None:
    contact = add_contact(app, organisation="vnpt", name="Trần Liên Kết", channels=["telegram"])
    responder = make_token("responder", "vnpt")
    url = f"/api/v1/contacts/{contact}/telegram-link"

    made = client.post(url, headers=operator)
    assert made.status_code == 201, made.get_json()
    assert made.headers["Cache-Control"] == "no-store"
    link = made.get_json()
    code = link["code"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", code)
    assert (link["contact_id"], link["start"], link["url"]) == (contact, f"/start {code}",
                                                                 f"https://t.me/{BOT}?start={code}")  # fmt: skip
    assert datetime.fromisoformat(link["expires_at"]) > utcnow() + timedelta(hours=167)
    second = client.post(url, headers=operator).get_json()["code"]

    for refused, headers, status in ((url, responder, 403), ("/api/v1/contacts/999999/telegram-link", operator, 404)):
        answer = client.post(refused, headers=headers)
        assert (answer.status_code, answer.mimetype) == (status, "application/problem+json")
    made_rows = _audit(app, "telegram.link_created")
    assert [(actor, target) for actor, target, _ in made_rows] == [("op1", f"contact:{contact}")] * 2
    assert all(code not in str(data) for *_, data in made_rows), "the code itself is never written down"

    assert _links(app, code, 7001) is None, "a newer code voids the older"
    assert _links(app, second, 7001) == contact
    assert _links(app, second, 7002) is None, "a code links once"
    assert _chat_of(app, contact) == "7001"

    assert client.delete(url, headers=responder).status_code == 403
    gone = client.delete(url, headers=operator)
    assert gone.status_code == 200 and gone.get_json()["telegram_chat_id"] is None
    assert _chat_of(app, contact) is None
    assert _audit(app, "telegram.unlinked") == [("op1", f"contact:{contact}", {"chat_id": "7001"})]

    app.config["TELEGRAM_TOKEN"] = None  # Telegram off in this deployment: nothing to link to
    off = client.post(url, headers=operator)
    assert (off.status_code, off.mimetype) == (409, "application/problem+json")


def test_the_directory_page_shows_a_link_once_to_operators_and_unlinks(app: Flask, client: FlaskClient) -> None:
    from tests.web import csrf, make_user, sign_in, text_of

    contact = add_contact(app, organisation="vnpt", name="Lê Trang Liên Kết", channels=["telegram"])
    make_user(app, "op-web")
    make_user(app, "responder-web", role="responder", organisation="vnpt")
    sign_in(client, "op-web")
    page = client.get("/directory")
    action = f"/directory/contacts/{contact}/telegram-link"
    assert f'action="{action}"' in page.text and "Liên kết Telegram" in page.text
    shown = client.post(action, data={"csrf_token": csrf(page.text)})
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    code = re.search(rf"https://t\.me/{BOT}\?start=([A-Za-z0-9_-]{{32}})", shown.text).group(1)
    assert f"/start {code}" in text_of(shown.text) and "Liên kết Telegram dùng một lần" in text_of(shown.text)
    assert client.get("/directory").text.count(code) == 0, "shown once, on the answer only"

    assert _links(app, code, 7101) == contact
    page = client.get("/directory")
    unlink = f"/directory/contacts/{contact}/telegram-unlink"
    assert f'action="{unlink}"' in page.text
    done = client.post(unlink, data={"csrf_token": csrf(page.text)}, follow_redirects=True)
    assert "Đã huỷ liên kết tài khoản Telegram" in text_of(done.text)
    assert _chat_of(app, contact) is None
    assert [actor for actor, *_ in _audit(app, "telegram.link_created")] == ["op-web"]
    assert [actor for actor, *_ in _audit(app, "telegram.unlinked")] == ["op-web"]

    other = app.test_client()
    sign_in(other, "responder-web")
    page = other.get("/directory")
    assert action not in page.text, "a responder sees no contacts and no link button"
    assert other.post(action, data={"csrf_token": csrf(page.text)}).status_code == 403
