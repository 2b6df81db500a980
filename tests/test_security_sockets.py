"""Finding 6: /live sockets follow their credentials, catch_up cannot stall filings, no cookie without a session row."""

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from flask import Flask
from sqlalchemy import select, update

from app import db
from incidents import signin
from incidents.access import Actor
from incidents.enums import Role
from incidents.models import Organisation, User
from tests.conftest import TokenFactory, incident_payload
from tests.live import ROOT, LiveServer
from tests.sockets import Frame, LiveClient
from tests.web import csrf, make_user, sign_in, user_row

pytestmark = pytest.mark.slow

TIMEOUT = 10.0
WITHIN = 1.0  # the finding's bound: a credential change reaches open sockets within a second
Headers = dict[str, str]
_SCRIPT = Path(sys.executable).with_name("flask")
FLASK = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "flask"]


class Watched(LiveClient):
    """A /live client that also records when the server closed it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.closed = threading.Event()
        self.closed_at = 0.0
        self.sio.on("disconnect", self._gone, namespace="/live")

    def _gone(self, *_reason: Any) -> None:
        self.closed_at = time.monotonic()
        self.closed.set()

    def with_cookie(self, cookie: str) -> "Watched":
        self.sio.connect(
            self.url, headers={"Cookie": f"session={cookie}"}, transports=["websocket"], namespaces=["/live"],
            wait_timeout=5,
        )  # fmt: skip
        return self

    def closed_within(self, since: float, limit: float = WITHIN) -> float:
        assert self.closed.wait(TIMEOUT), f"the server never closed the socket; frames: {self.frames[-5:]}"
        elapsed = self.closed_at - since
        assert elapsed < limit, f"closed {elapsed:.2f}s after the change"
        return elapsed


@pytest.fixture
def watched() -> Iterator[Any]:
    made: list[Watched] = []

    def factory(server: LiveServer) -> Watched:
        made.append(Watched(server.url))
        return made[-1]

    yield factory
    for c in made:
        if c.sio.connected:
            c.disconnect()


def file(server: LiveServer, headers: Headers, **overrides: object) -> dict[str, Any]:
    r = requests.post(f"{server.url}/api/v1/incidents", json=incident_payload(**overrides), headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def about(incident: dict[str, Any]):
    return lambda frame: isinstance(frame.data, dict) and frame.data.get("id") == incident["id"]


def browser_cookie(app: Flask, username: str) -> str:
    """Sign `username` in on the web (in this test process) and return the session cookie's value."""
    web = app.test_client()
    assert sign_in(web, username).status_code == 302
    return web.get_cookie("session").value


def admin_actor(app: Flask) -> Actor:
    make_user(app, "root", role="admin")
    root = user_row(app, "root")
    return Actor(user_id=root.id, username="root", role=Role.ADMIN, organisation_id=root.organisation_id)


def flask_cli(database_url: str, *args: str) -> None:
    env = {**os.environ, "UCSC_DATABASE_URL": database_url, "UCSC_SECRET_KEY": "test"}
    env.pop("FLASK_APP", None)
    result = subprocess.run(
        [*FLASK, "--app", "wsgi", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"


def test_finding_6_a_token_revoked_by_another_process_closes_its_socket_within_a_second(
    app: Flask, database_url: str, live_server: LiveServer, watched: Any, make_token: TokenFactory
) -> None:
    revoked = make_token("operator", "dic", username="leaked")
    kept = make_token("operator", "dic", username="kept")
    victim = watched(live_server).connect(revoked)
    other = watched(live_server).connect(kept)
    for c in (victim, other):
        c.wait_for("ready", TIMEOUT)

    flask_cli(database_url, "revoke-token", "t-leaked")  # the CLI: a process other than the one holding the socket
    victim.closed_within(time.monotonic())

    after = file(live_server, kept)
    other.wait_for(about(after), TIMEOUT)
    assert not any(about(after)(f) for f in victim.frames)
    assert not other.closed.is_set(), "a live credential keeps its socket"
    with pytest.raises(socketio.exceptions.ConnectionError):
        watched(live_server).connect(revoked, timeout=3)


def test_finding_6_logout_and_a_password_change_close_the_browsers_sockets_within_a_second(
    app: Flask, live_server: LiveServer, watched: Any
) -> None:
    make_user(app, "op")
    # Signed in against the gunicorn itself: the logout is handled by the process that holds the socket.
    web = requests.Session()
    page = web.get(f"{live_server.url}/login", timeout=10)
    form = {"username": "op", "password": "correct horse battery", "csrf_token": csrf(page.text)}
    assert web.post(f"{live_server.url}/login", data=form, allow_redirects=False, timeout=10).status_code == 302
    same_process = watched(live_server).with_cookie(web.cookies["session"])
    # Two more sessions signed in by this test process: one changes the password, the other must end.
    changer = app.test_client()
    assert sign_in(changer, "op").status_code == 302
    other_session = watched(live_server).with_cookie(browser_cookie(app, "op"))
    changer_socket = watched(live_server).with_cookie(changer.get_cookie("session").value)
    for c in (same_process, other_session, changer_socket):
        c.wait_for("ready", TIMEOUT)

    token = csrf(web.get(f"{live_server.url}/incidents", timeout=10).text)
    assert web.post(f"{live_server.url}/logout", data={"csrf_token": token}, timeout=10).status_code == 200
    same_process.closed_within(time.monotonic())

    page = changer.get("/account/password")
    new = "another horse battery staple"
    form = {"current_password": "correct horse battery", "new_password": new, "repeat_password": new}
    response = changer.post("/account/password", data={**form, "csrf_token": csrf(page.text)})
    assert response.status_code == 302
    other_session.closed_within(time.monotonic())
    time.sleep(WITHIN)
    assert changer_socket.sio.connected, "the session that changed the password stays signed in"


def test_finding_6_deactivation_closes_token_and_browser_sockets_within_a_second(
    app: Flask, live_server: LiveServer, watched: Any, make_token: TokenFactory
) -> None:
    make_user(app, "gone", role="responder")
    root = admin_actor(app)
    browser = watched(live_server).with_cookie(browser_cookie(app, "gone"))
    with app.app_context():
        s = db.session()
        with s.begin():
            from app.auth import new_token
            from incidents import accounts

            token, digest = new_token()
            accounts.create_token(session=s, name="t-gone", role=Role.RESPONDER, digest=digest, user="gone")
    api = watched(live_server).connect({"token": token})
    for c in (browser, api):
        c.wait_for("ready", TIMEOUT)

    gone = user_row(app, "gone")
    with app.app_context():
        signin.admin_update_user(
            session=db.session(), actor=root, user_id=gone.id, role="responder", active=False, reset_totp=False,
            source_ip=None,
        )  # fmt: skip
    changed = time.monotonic()
    browser.closed_within(changed)
    api.closed_within(changed)


def test_finding_6_role_and_organisation_changes_recompute_the_rooms_of_open_sockets_within_a_second(
    app: Flask, live_server: LiveServer, watched: Any, make_token: TokenFactory
) -> None:
    operator = make_token("operator", "dic", username="desk-op")
    make_user(app, "demoted", role="operator", organisation="doh")
    moved = make_token("responder", "doh", username="moved")
    root = admin_actor(app)
    desk = watched(live_server).connect(operator)
    demoted = watched(live_server).with_cookie(browser_cookie(app, "demoted"))
    mover = watched(live_server).connect(moved)
    for c in (desk, demoted, mover):
        c.wait_for("ready", TIMEOUT)
    before = file(live_server, operator, tlp="amber", participants=[{"organisation": "doh"}])
    for c in (demoted, mover):
        c.wait_for(about(before), TIMEOUT)

    with app.app_context():
        s = db.session()
        signin.admin_update_user(
            session=s, actor=root, user_id=user_row(app, "demoted").id, role="responder", active=True,
            reset_totp=False, source_ip=None,
        )  # fmt: skip
        police = s.scalar(select(Organisation.id).where(Organisation.code == "police"))
        s.execute(update(User).where(User.username == "moved").values(organisation_id=police))
        s.commit()
    time.sleep(WITHIN)

    desk_only = file(live_server, operator, tlp="amber")  # the filer's organisation (dic) and the desk's
    for_doh = file(live_server, operator, tlp="amber", participants=[{"organisation": "doh"}])
    for_police = file(live_server, operator, tlp="amber", participants=[{"organisation": "police"}])
    desk.wait_for(about(for_police), TIMEOUT)
    demoted.wait_for(about(for_doh), TIMEOUT)
    mover.wait_for(about(for_police), TIMEOUT)
    assert not any(about(desk_only)(f) for f in demoted.frames), "a demoted operator left the desk's room"
    assert not any(about(for_police)(f) for f in demoted.frames)
    assert not any(about(for_doh)(f) for f in mover.frames), "a responder moved to police left doh's room"
    assert demoted.sio.connected and mover.sio.connected, "a changed role or organisation keeps the socket"


def test_finding_6_raising_the_tlp_or_removing_a_participant_stops_that_incidents_events(
    live_server: LiveServer, watched: Any, make_token: TokenFactory
) -> None:
    operator = make_token("operator", "dic", username="op")
    named = make_token("responder", "police", username="named")
    org_member = make_token("responder", "doh", username="doh-responder")
    removed = make_token("responder", "police", username="removed")
    desk = watched(live_server).connect(make_token("operator", "dic", username="watcher"))
    insider = watched(live_server).connect(named)
    member = watched(live_server).connect(org_member)
    dropped = watched(live_server).connect(removed)
    for c in (desk, insider, member, dropped):
        c.wait_for("ready", TIMEOUT)
    people = [{"organisation": "doh"}, {"user": "named"}, {"user": "removed"}]
    incident = file(live_server, operator, tlp="amber", participants=people)
    for c in (desk, member, dropped):
        c.wait_for(about(incident), TIMEOUT)
    base = f"{live_server.url}/api/v1/incidents/{incident['id']}"

    r = requests.patch(base, json={"tlp": "red"}, headers=operator, timeout=10)
    assert r.status_code == 200, r.text
    listed = requests.get(f"{base}/participants", headers=operator, timeout=10).json()["items"]
    gone = [p["id"] for p in listed if p["user"] == "removed"]
    assert len(gone) == 1, "the participant to remove"
    assert requests.delete(f"{base}/participants/{gone[0]}", headers=operator, timeout=10).status_code == 204
    r = requests.post(f"{base}/comments", json={"body": "chỉ người được nêu tên"}, headers=named, timeout=10)
    assert r.status_code == 201, r.text
    barrier = file(
        live_server, operator, tlp="clear", participants=[{"organisation": "doh"}, {"organisation": "police"}]
    )

    insider.wait_for(lambda f: f.name == "comment.created" and about(incident)(f), TIMEOUT)
    for who, c in {"desk": desk, "organisation member": member, "removed participant": dropped}.items():
        c.wait_for(about(barrier), TIMEOUT)
        after = [f for f in c.frames if about(incident)(f) and f.name == "comment.created"]
        assert after == [], f"the {who} still receives the red incident: {after}"


def test_finding_6_a_catch_up_flood_is_rate_limited_and_does_not_stall_filings(
    live_server: LiveServer, watched: Any, make_token: TokenFactory
) -> None:
    operator = make_token("operator", "dic", username="op")
    flooder = watched(live_server).connect(make_token("operator", "dic", username="flooder"))
    flooder.wait_for("ready", TIMEOUT)

    def filing() -> float:
        started = time.monotonic()
        file(live_server, operator)
        return time.monotonic() - started

    baseline = [filing() for _ in range(20)]  # also gives every catch-up 20+ events to replay
    stop = threading.Event()
    sent = 0

    def flood() -> None:
        # About twice the rate of the reported attack (1,500 in 8 s), each asking for everything from the start.
        nonlocal sent
        while not stop.is_set():
            flooder.sio.emit("catch_up", {"last_event_id": 0}, namespace="/live")
            sent += 1
            time.sleep(0.0025)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        during = [filing() for _ in range(10)]
    finally:
        stop.set()
        thread.join(10)
    bound = max(10 * max(baseline), 0.5)
    assert max(during) < bound, f"filings took {during} under a flood of {sent} catch_up; baseline {baseline}"
    refused = flooder.wait_for(lambda f: f.name == "error", TIMEOUT).data
    assert refused["code"] == "rate_limited" and refused["retry_after"] > 0, refused
    replays = len([f for f in flooder.frames if f.name == "ready"])
    assert replays < sent / 10, f"{replays} catch-ups of {sent} did work"
    assert statistics.median(during) < bound


def test_finding_6_a_signed_cookie_with_only_a_user_id_authenticates_neither_a_page_nor_a_socket(
    app: Flask, live_server: LiveServer, watched: Any
) -> None:
    make_user(app, "op")
    op = user_row(app, "op")
    serializer = app.session_interface.get_signing_serializer(app)
    forged = {
        "bare user id": serializer.dumps({"user_id": op.id}),
        "Flask-Login's key as a user id": serializer.dumps({"_user_id": str(op.id), "_fresh": True}),
    }
    for what, cookie in forged.items():
        page = requests.get(f"{live_server.url}/incidents", cookies={"session": cookie}, allow_redirects=False,
                            timeout=10)  # fmt: skip
        assert page.status_code == 302 and "/login" in page.headers["Location"], f"{what}: {page.status_code}"
        with pytest.raises(socketio.exceptions.ConnectionError):
            watched(live_server).with_cookie(cookie)
    real = watched(live_server).with_cookie(browser_cookie(app, "op"))  # the same check passes a real session
    assert isinstance(real.wait_for("ready", TIMEOUT), Frame)


def test_finding_6_a_token_acting_with_another_role_than_its_user_gets_only_what_that_role_may_see(
    app: Flask, live_server: LiveServer, watched: Any, make_token: TokenFactory
) -> None:
    operator = make_token("operator", "dic", username="op")
    make_user(app, "chief", role="admin")
    with app.app_context():
        s = db.session()
        with s.begin():
            from app.auth import new_token
            from incidents import accounts

            token, digest = new_token()
            accounts.create_token(session=s, name="siem-as-chief", role=Role.INTAKE, digest=digest, user="chief")
    intake = {"Authorization": f"Bearer {token}"}
    siem = watched(live_server).connect(intake)
    desk = watched(live_server).connect(operator)
    for c in (siem, desk):
        c.wait_for("ready", TIMEOUT)

    red = file(live_server, operator, tlp="red", participants=[{"user": "chief"}], title="Chỉ người được nêu tên")
    read = requests.get(f"{live_server.url}/api/v1/incidents/{red['id']}", headers=intake, timeout=10)
    assert read.status_code == 404, "the API does not let the token read it"
    own = file(live_server, intake, tlp="amber")
    siem.wait_for(about(own), TIMEOUT)  # its own filing reaches it, as the API lets it read it
    desk.wait_for(about(own), TIMEOUT)
    assert not [f for f in siem.frames if f.mentions(red["id"], red["ref"])], "an intake token saw what its user may"


def test_finding_6_a_demoted_users_token_stops_acting_with_the_old_role_on_the_api_and_its_socket(
    app: Flask, live_server: LiveServer, watched: Any, make_token: TokenFactory
) -> None:
    """A token acts with its user's role or as intake, judged now: a demotion reaches tokens already issued."""
    desk = make_token("operator", "dic", username="was-desk")
    root = admin_actor(app)
    socket = watched(live_server).connect(desk)
    socket.wait_for("ready", TIMEOUT)
    assert requests.get(f"{live_server.url}/api/v1/incidents", headers=desk, timeout=10).status_code == 200

    with app.app_context():
        signin.admin_update_user(
            session=db.session(), actor=root, user_id=user_row(app, "was-desk").id, role="responder", active=True,
            reset_totp=False, source_ip=None,
        )  # fmt: skip
    since = time.monotonic()
    socket.closed_within(since)
    time.sleep(max(0.0, since + WITHIN + 0.1 - time.monotonic()))  # past the request cache's second
    refused = requests.get(f"{live_server.url}/api/v1/incidents", headers=desk, timeout=10)
    assert refused.status_code == 401, refused.text


def test_a_token_may_not_be_issued_with_more_than_its_users_role(app: Flask) -> None:
    from app.auth import new_token
    from incidents import accounts
    from incidents.errors import ValidationFailed

    make_user(app, "plain", role="responder")
    with app.app_context():
        s = db.session()
        with pytest.raises(ValidationFailed) as refused, s.begin():
            accounts.create_token(session=s, name="too-much", role=Role.OPERATOR, digest=new_token()[1], user="plain")
        assert [e.field for e in refused.value.errors] == ["role"]
        with s.begin():
            accounts.create_token(session=s, name="siem", role=Role.INTAKE, digest=new_token()[1], user="plain")
