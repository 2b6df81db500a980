"""/live with a browser's Flask-Login session against a real gunicorn, on SQLite and PostgreSQL."""

import pytest
import socketio
from flask import Flask

from incidents.changes import transition
from incidents.schemas.incidents import ParticipantIn, TransitionIn
from tests.live import LiveServer
from tests.sockets import LiveClient
from tests.test_web import file_as
from tests.web import make_user, sign_in, user_row

pytestmark = pytest.mark.slow


def browser_client(app: Flask, server: LiveServer, username: str) -> LiveClient:
    """A /live client carrying the session cookie that signing in on the web gave `username`."""
    web = app.test_client()
    assert sign_in(web, username).status_code == 302
    cookie = web.get_cookie("session")
    assert cookie is not None
    client = LiveClient(server.url)
    client.sio.connect(
        server.url,
        headers={"Cookie": f"session={cookie.value}"},
        transports=["websocket"],
        namespaces=["/live"],
        wait_timeout=5,
    )
    client.wait_for("ready")
    return client


def test_a_committee_member_never_receives_a_red_incident_they_are_not_named_on(
    app: Flask, live_server: LiveServer
) -> None:
    make_user(app, "op")
    make_user(app, "member", role="committee")
    make_user(app, "named", role="committee")
    member = browser_client(app, live_server, "member")
    named = browser_client(app, live_server, "named")
    try:
        red = file_as(app, "op", title="Bí mật đỏ", tlp="red", participants=[ParticipantIn(user="named").model_dump()])
        with app.app_context():
            from app import db
            from incidents.access import Actor
            from incidents.enums import Role

            op = user_row(app, "op")
            actor = Actor(user_id=op.id, username="op", role=Role.OPERATOR, organisation_id=op.organisation_id)
            transition(session=db.session(), incident_id=red, data=TransitionIn(to="triage"), actor=actor)
        amber = file_as(app, "op", title="Sự cố chung", tlp="amber")
        # Events reach clients in commit order, so once the later amber filing arrived, the red ones would have too.
        member.wait_for(lambda f: isinstance(f.data, dict) and f.data.get("ref") == amber, timeout=30)
        named.wait_for(lambda f: isinstance(f.data, dict) and f.data.get("ref") == amber, timeout=30)
        assert not [f for f in member.frames if f.mentions(red, "Bí mật đỏ")]
        got = [f.data.get("kind") for f in named.frames if isinstance(f.data, dict) and f.data.get("ref") == red]
        assert {"incident.created", "incident.status_changed"} <= set(got), got
    finally:
        member.disconnect()
        named.disconnect()


def test_a_revoked_forged_or_second_factor_owing_session_cannot_connect(app: Flask, live_server: LiveServer) -> None:
    make_user(app, "member", role="committee")
    web = app.test_client()
    sign_in(web, "member")
    cookie = web.get_cookie("session").value
    page = web.get("/account/sessions")
    from tests.web import csrf

    sid = page.text.split("/account/sessions/")[1].split("/")[0]
    web.post(f"/account/sessions/{sid}/revocation", data={"csrf_token": csrf(page.text)})
    make_user(app, "boss", role="admin")  # admins must set up TOTP first: until then the feed refuses them too
    owes = app.test_client()
    assert sign_in(owes, "boss").status_code == 302
    for value in (cookie, "forged." + cookie[7:], owes.get_cookie("session").value):
        client = LiveClient(live_server.url)
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.sio.connect(
                live_server.url,
                headers={"Cookie": f"session={value}"},
                transports=["websocket"],
                namespaces=["/live"],
                wait_timeout=5,
            )
