"""/live against a real gunicorn: who may connect, what reaches whom, replay after a reconnect, heartbeats."""

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from incidents.models import ApiToken, Event
from tests.conftest import TokenFactory, incident_payload
from tests.live import LiveServer
from tests.sockets import Frame, LiveClient

TIMEOUT = 10.0
Headers = dict[str, str]


def file(server: LiveServer, headers: Headers, **overrides: object) -> dict[str, Any]:
    """File an incident through the server's API; its body (id, ref, status)."""
    r = requests.post(f"{server.url}/api/v1/incidents", json=incident_payload(**overrides), headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def post(server: LiveServer, headers: Headers, path: str, body: dict[str, Any]) -> None:
    r = requests.post(f"{server.url}/api/v1/incidents/{path}", json=body, headers=headers, timeout=10)
    assert r.status_code in (200, 201), r.text


def about(incident: dict[str, Any]) -> Callable[[Frame], bool]:
    """Matches a frame carrying `incident` (by id)."""
    return lambda frame: isinstance(frame.data, dict) and frame.data.get("id") == incident["id"]


def event_ids(frames: list[Frame]) -> list[int]:
    return [f.data["event_id"] for f in frames if f.name not in ("ready", "resync", "heartbeat")]


Clients = Callable[[LiveServer], LiveClient]


@pytest.fixture
def clients() -> Iterator[Clients]:
    """Make /live clients of a server; every one still connected is disconnected at the end."""
    made: list[LiveClient] = []

    def factory(server: LiveServer) -> LiveClient:
        made.append(LiveClient(server.url))
        return made[-1]

    yield factory
    for c in made:
        c.disconnect()


def tuned_server(database_url: str, tmp_path: Path, **env: str) -> Iterator[LiveServer]:
    """gunicorn with extra settings, on the database the `app` fixture seeded."""
    server = LiveServer(database_url, tmp_path / "gunicorn-tuned.log", env=env).start()
    yield server
    server.stop()


@pytest.fixture
def short_replay_server(app: Flask, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server that replays at most 5 missed events; more than that answers `resync`."""
    yield from tuned_server(database_url, tmp_path, UCSC_FEED_REPLAY_LIMIT="5")


@pytest.fixture
def heartbeat_server(app: Flask, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose feed sends a heartbeat every half second."""
    yield from tuned_server(database_url, tmp_path, UCSC_FEED_HEARTBEAT_SECONDS="0.5")


class _Gone(BaseHTTPRequestHandler):
    """A webhook receiver that answers every POST with 410 Gone: a permanent failure."""

    posts: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posts.append(self.path)
        self.send_response(410)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def gone_receiver() -> Iterator[tuple[str, list[str]]]:
    """A 127.0.0.1 URL answering 410 to every POST, and the paths it was posted."""
    posts: list[str] = []
    handler = type("Gone", (_Gone,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/receipts", posts
    server.shutdown()
    server.server_close()


def test_client_with_a_token_gets_ready_then_incident_created(
    live_server: LiveServer, clients: Clients, operator: Headers
) -> None:
    c = clients(live_server).connect(operator)
    ready = c.wait_for("ready", TIMEOUT)
    incident = file(live_server, operator)
    got = c.wait_for("incident.created", TIMEOUT).data
    assert (got["id"], got["ref"], got["status"]) == (incident["id"], incident["ref"], incident["status"])
    assert isinstance(got["event_id"], int)
    assert got["event_id"] > ready.data["event_id"]


def test_event_written_by_the_worker_reaches_the_client(
    live_server: LiveServer,
    clients: Clients,
    operator: Headers,
    make_token: TokenFactory,
    session: Session,
    start_worker: Callable[..., Any],
    gone_receiver: tuple[str, list[str]],
) -> None:
    url, posts = gone_receiver
    siem = make_token("intake", "dic", username="siem")
    session.execute(update(ApiToken).where(ApiToken.name == "t-siem").values(webhook_url=url, webhook_secret="s"))
    session.commit()
    c = clients(live_server).connect(operator)
    c.wait_for("ready", TIMEOUT)
    incident = file(live_server, siem)
    c.wait_for(about(incident), TIMEOUT)
    start_worker()
    dead = c.wait_for(lambda f: f.name == "job.dead" and about(incident)(f), TIMEOUT).data
    assert posts == ["/receipts"], "the worker posted the receipt once and got 410"
    assert (dead["ref"], dead["data"]["job_kind"]) == (incident["ref"], "receipt.webhook")
    assert "410" in dead["data"]["error"]


def test_reconnect_replays_exactly_the_missed_events_then_ready(
    short_replay_server: LiveServer, clients: Clients, operator: Headers, session: Session
) -> None:
    server = short_replay_server
    first = clients(server).connect(operator)
    first.wait_for("ready", TIMEOUT)
    for _ in range(2):
        file(server, operator)
    last = first.wait_count("incident.created", 2, TIMEOUT)[-1]["event_id"]
    first.disconnect()
    missed = [file(server, operator) for _ in range(3)]
    post(server, operator, f"{missed[0]['id']}/transitions", {"to": "triage"})
    expected = list(session.scalars(select(Event.id).where(Event.id > last).order_by(Event.id)))
    assert 4 <= len(expected) <= 5, expected

    again = clients(server).connect(operator, last_event_id=last)
    ready = again.wait_for("ready", TIMEOUT)
    before_ready = again.frames[: again.frames.index(ready)]
    assert event_ids(before_ready) == expected, before_ready
    assert ready.data["event_id"] == expected[-1]
    assert {f.data["id"] for f in before_ready} == {i["id"] for i in missed}
    assert [f.name for f in before_ready].count("incident.updated") == 1
    later = file(server, operator)
    again.wait_for(about(later), TIMEOUT)
    ids = event_ids(again.frames)
    assert ids == sorted(set(ids)), "strictly increasing: no duplicate between the replay and the live tail"
    assert ids[: len(expected)] == expected
    again.disconnect()

    for _ in range(6):
        file(server, operator)
    behind = clients(server).connect(operator, last_event_id=ids[-1])
    ready = behind.wait_for("ready", TIMEOUT)
    assert [f.name for f in behind.frames[: behind.frames.index(ready)]] == ["resync"]
    assert behind.named("resync")[0]["event_id"] == ready.data["event_id"]


def test_connect_without_credentials_a_wrong_token_or_a_foreign_origin_is_refused(
    live_server: LiveServer, clients: Clients, operator: Headers
) -> None:
    for auth in (None, {}, {"token": "not-a-token"}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(socketio.exceptions.ConnectionError):
            clients(live_server).connect(auth, timeout=3)
    with pytest.raises(socketio.exceptions.ConnectionError):
        clients(live_server).connect(operator, origin="https://evil.example", timeout=3)
    for origin in (live_server.url, ""):  # its own site, and a non-browser client that sends no Origin
        clients(live_server).connect(operator, origin=origin, timeout=3).wait_for("ready", TIMEOUT)


def test_red_incident_reaches_only_its_named_participants(
    live_server: LiveServer, clients: Clients, operator: Headers, make_token: TokenFactory
) -> None:
    named = make_token("responder", "police", username="named")
    outsiders = {
        "operator not named": make_token("operator", "dic", username="colleague"),
        "admin not named": make_token("admin", "dic", username="root"),
        "responder of a participant org": make_token("responder", "dic", username="dic-responder"),
        "committee": make_token("committee", "ppc", username="chair"),
    }
    insider = clients(live_server).connect(named)
    watchers = {who: clients(live_server).connect(headers) for who, headers in outsiders.items()}
    for c in (insider, *watchers.values()):
        c.wait_for("ready", TIMEOUT)

    red = file(live_server, operator, tlp="red", title="Tài liệu mật bị lộ", participants=[{"user": "named"}])
    post(live_server, operator, f"{red['id']}/transitions", {"to": "triage"})
    post(live_server, named, f"{red['id']}/comments", {"body": "đã xác minh"})
    # A clear incident every client may see, filed last: once it arrives, every earlier event has been emitted.
    barrier = file(live_server, operator, tlp="clear", participants=[{"organisation": "police"}])

    insider.wait_for(about(barrier), TIMEOUT)
    names = [f.name for f in insider.frames if about(red)(f)]
    assert names == ["incident.created", "incident.updated", "comment.created"], insider.frames
    for who, c in watchers.items():
        c.wait_for(about(barrier), TIMEOUT)
        leaked = [f for f in c.frames if f.mentions(red["id"], red["ref"])]
        assert leaked == [], f"{who} received the red incident: {leaked}"

    replaying = clients(live_server).connect(outsiders["operator not named"], last_event_id=0)
    ready = replaying.wait_for("ready", TIMEOUT)
    replayed = replaying.frames[: replaying.frames.index(ready)]
    assert any(about(barrier)(f) for f in replayed)
    assert not any(f.mentions(red["id"], red["ref"]) for f in replayed), "replay honours TLP as well"


def test_amber_strict_reaches_participant_organisations_only(
    live_server: LiveServer, clients: Clients, operator: Headers, make_token: TokenFactory
) -> None:
    inside = clients(live_server).connect(make_token("responder", "doh", username="doh-responder"))
    outsiders = {
        "responder of another org": make_token("responder", "police", username="police-responder"),
        "operator of another org": make_token("operator", "police", username="police-operator"),
    }
    watchers = {who: clients(live_server).connect(headers) for who, headers in outsiders.items()}
    for c in (inside, *watchers.values()):
        c.wait_for("ready", TIMEOUT)

    strict = file(live_server, operator, tlp="amber+strict", participants=[{"organisation": "doh"}])
    post(live_server, operator, f"{strict['id']}/transitions", {"to": "triage"})
    everyone = [{"organisation": "doh"}, {"organisation": "police"}]
    barrier = file(live_server, operator, tlp="clear", participants=everyone)

    inside.wait_for(about(barrier), TIMEOUT)
    assert [f.name for f in inside.frames if about(strict)(f)] == ["incident.created", "incident.updated"]
    for who, c in watchers.items():
        c.wait_for(about(barrier), TIMEOUT)
        leaked = [f for f in c.frames if f.mentions(strict["id"], strict["ref"])]
        assert leaked == [], f"{who} received the amber+strict incident: {leaked}"


def test_heartbeat_frames_arrive_on_schedule(heartbeat_server: LiveServer, clients: Clients, operator: Headers) -> None:
    c = clients(heartbeat_server).connect(operator)
    ready = c.wait_for("ready", TIMEOUT)
    beats = c.wait_count("heartbeat", 2, timeout=3.0)
    assert all(set(b) == {"at", "event_id"} for b in beats)
    assert beats[-1]["event_id"] >= ready.data["event_id"]
