"""Finding 9: requests to URLs people supply never reach loopback, private, link-local or other internal targets.

These apps are built WITHOUT the loopback allowance the rest of the suite has (`OUTBOUND_ALLOW` is empty),
so every receiver here on 127.0.0.1 stands for an internal service an attacker wants the server to reach.
The DNS rebinding tests stand in for the DNS server by monkeypatching `socket.getaddrinfo` in this process
for one made-up name (every other name resolves as usual); the code under test calls it as it would the
system resolver.
"""

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from incidents import followup, jobs
from incidents.models import ApiToken
from incidents.stix.push import enqueue_push
from playbooks.delivery import DELIVER
from playbooks.models import Delivery
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.receivers import HttpReceiver

CONTACTS = "/api/v1/contacts"
# A public unicast address (nothing here connects to it unless a test says so).
PUBLIC = "93.184.215.14"
INTERNAL_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # cloud metadata (link-local)
    "http://127.0.0.1:8080/hook",  # loopback
    "http://localhost:9000/hook",  # a name that resolves to loopback
    "http://2130706433/hook",  # 127.0.0.1 written as one number
    "http://10.1.2.3/hook",  # RFC 1918
    "https://192.168.1.10/hook",  # RFC 1918
    "http://172.16.0.5/hook",  # RFC 1918
    "http://100.64.0.1/hook",  # CGNAT shared space
    "http://0.0.0.0/hook",  # unspecified
    "http://224.0.0.1/hook",  # multicast
    "http://[::1]/hook",  # IPv6 loopback
    "http://[fd12:3456::1]/hook",  # RFC 4193 unique local
    "http://[fe80::1]/hook",  # IPv6 link-local
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
    "http://[64:ff9b::a01:203]/hook",  # 10.1.2.3 through NAT64
]


@pytest.fixture
def app_config() -> dict:
    return {"OUTBOUND_ALLOW": "", "NOTIFY_TIMEOUT": 2.0}


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    hook = HttpReceiver().start()
    yield hook
    hook.close()


@pytest.fixture
def redirector(receiver: HttpReceiver) -> Iterator[tuple[int, list[bytes]]]:
    """A server on loopback that answers every POST with 307 to `receiver`: its port and the bodies it got."""
    hits: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, list[str]], None]:
    """The DNS server for made-up names: `answer(name, [addresses])` sets what each later lookup of `name` gets."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[name]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def answer(name: str, addresses: list[str]) -> None:
        answers[name] = list(addresses)

    return answer


def _contact(client: FlaskClient, headers: dict[str, str], url: str) -> Any:
    body = {"organisation": "dic", "name": "Webhook SIEM", "webhook_url": url, "channels": ["webhook"]}
    return client.post(CONTACTS, json=body, headers=headers)


def _page_dic(app: Flask, client: FlaskClient, operator: dict[str, str]) -> int:
    """File an incident whose playbook pages the standing body; run the playbook and the deliveries here."""
    incident_id = client.post("/api/v1/incidents", json=incident_payload(category="other"), headers=operator).json["id"]
    paging.run_jobs(app)
    paging.run_jobs(app, (DELIVER,), send=True)
    return incident_id


def test_finding_9_contact_webhook_url_naming_an_internal_address_is_refused_with_422(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    admin = make_token("admin")
    for url in INTERNAL_URLS:
        r = _contact(client, admin, url)
        assert r.status_code == 422, (url, r.status_code, r.json)
        assert r.mimetype == "application/problem+json"
        assert [e["field"] for e in r.json["errors"]] == ["webhook_url"], (url, r.json)
    listed = client.get(f"{CONTACTS}?limit=500", headers=admin).json["items"]
    assert not [c for c in listed if c["name"] == "Webhook SIEM"]  # nothing half-written

    created = _contact(client, admin, f"https://{PUBLIC}/ucsc")
    assert created.status_code == 201, created.json
    changed = client.patch(
        f"{CONTACTS}/{created.json['id']}", json={"webhook_url": "http://169.254.169.254/"}, headers=admin
    )
    assert changed.status_code == 422 and changed.json["errors"][0]["field"] == "webhook_url", changed.json
    assert client.get(f"{CONTACTS}/{created.json['id']}", headers=admin).json["webhook_url"] == f"https://{PUBLIC}/ucsc"


def test_finding_9_outbound_allow_lets_the_listed_networks_and_names_through_and_nothing_else(
    database_url: str, app_config: dict, request: pytest.FixtureRequest, resolver: Callable[[str, list[str]], None]
) -> None:
    app_config["OUTBOUND_ALLOW"] = "127.0.0.0/8, siem.internal"
    client: FlaskClient = request.getfixturevalue("client")
    admin = request.getfixturevalue("make_token")("admin")
    resolver("siem.internal", ["10.20.30.40"])
    resolver("other.internal", ["10.20.30.41"])
    assert _contact(client, admin, "http://127.0.0.1:8080/hook").status_code == 201
    assert _contact(client, admin, "http://siem.internal/hook").status_code == 201
    for url in ("http://10.20.30.40/hook", "http://other.internal/hook", "http://[::1]/hook"):
        r = _contact(client, admin, url)
        assert r.status_code == 422 and r.json["errors"][0]["field"] == "webhook_url", (url, r.json)


def test_finding_9_create_token_refuses_a_webhook_to_an_internal_address(app: Flask, session: Session) -> None:
    runner = app.test_cli_runner()
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/", "http://10.0.0.7/siem"):
        result = runner.invoke(args=["create-token", "siem", "--role", "intake", "--webhook", url])
        assert result.exit_code != 0, (url, result.output)
        assert "webhook" in result.output and "Traceback" not in result.output, result.output
        assert session.scalar(select(ApiToken).where(ApiToken.name == "siem")) is None
        session.rollback()
    ok = runner.invoke(args=["create-token", "siem", "--role", "intake", "--webhook", f"https://{PUBLIC}/ucsc"])
    assert ok.exit_code == 0, ok.output
    assert session.scalar(select(ApiToken.webhook_url).where(ApiToken.name == "siem")) == f"https://{PUBLIC}/ucsc"


def test_finding_9_a_stored_webhook_to_an_internal_address_is_refused_when_sent(
    app: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str], receiver: HttpReceiver
) -> None:
    # A row saved before the rule existed (or written by another path) is still refused at send time.
    paging.load_shipped(app, demo=False)
    paging.add_contact(app, organisation="dic", name="Old hook", webhook_url=receiver.url, channels=["webhook"])
    incident_id = _page_dic(app, client, operator)
    [failed] = [e for e in paging.events(dbs, "page.failed", incident_id) if e.data.get("channel") == "webhook"]
    assert "127.0.0.1" in (failed.note or "") and "loopback" in (failed.note or ""), failed.note
    assert receiver.deliveries == []


def test_finding_9_dns_rebinding_after_save_is_refused_at_send_time(
    app: Flask,
    client: FlaskClient,
    dbs: Session,
    make_token: TokenFactory,
    operator: dict[str, str],
    receiver: HttpReceiver,
    resolver: Callable[[str, list[str]], None],
) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    resolver("hooks.rebind.test", [PUBLIC])
    saved = _contact(client, make_token("admin"), f"http://hooks.rebind.test:{port}/hook")
    assert saved.status_code == 201, saved.json  # public when saved
    paging.load_shipped(app, demo=False)
    resolver("hooks.rebind.test", ["127.0.0.1"])  # and loopback by the time it is used
    incident_id = _page_dic(app, client, operator)
    [failed] = [e for e in paging.events(dbs, "page.failed", incident_id) if e.data.get("channel") == "webhook"]
    assert "127.0.0.1" in (failed.note or "") and "loopback" in (failed.note or ""), failed.note
    assert receiver.deliveries == []


def test_finding_9_the_send_connects_only_to_the_address_it_checked(
    database_url: str,
    app_config: dict,
    request: pytest.FixtureRequest,
    receiver: HttpReceiver,
    resolver: Callable[[str, list[str]], None],
) -> None:
    # The resolver answers 127.0.0.2 (allowed here, and nothing listens there) once, then 127.0.0.1 (where the
    # receiver listens, not allowed) ever after: checking one answer and connecting by a second lookup would
    # reach the receiver. No packet leaves the machine.
    app_config["OUTBOUND_ALLOW"] = "127.0.0.2/32"
    app: Flask = request.getfixturevalue("app")
    port = receiver.url.split(":")[2].split("/")[0]
    paging.load_shipped(app, demo=False)
    paging.add_contact(
        app, organisation="dic", name="Flip", webhook_url=f"http://flip.rebind.test:{port}/hook", channels=["webhook"]
    )
    resolver("flip.rebind.test", ["127.0.0.2", "127.0.0.1"])
    _page_dic(app, request.getfixturevalue("client"), request.getfixturevalue("operator"))
    dbs: Session = request.getfixturevalue("dbs")
    [tried] = dbs.scalars(select(Delivery).where(Delivery.channel == "webhook"))
    assert tried.attempts == 1 and tried.state != "delivered", tried.last_error
    assert "127.0.0.2" in (tried.last_error or "") and "refused" in tried.last_error.lower(), tried.last_error
    assert receiver.deliveries == []


def test_finding_9_a_webhook_reaches_an_allowed_name_but_never_follows_its_redirect_to_an_internal_target(
    database_url: str,
    app_config: dict,
    request: pytest.FixtureRequest,
    receiver: HttpReceiver,
    redirector: tuple[int, list[bytes]],
    resolver: Callable[[str, list[str]], None],
) -> None:
    port, hits = redirector
    app_config["OUTBOUND_ALLOW"] = "relay.internal"  # a name, trusted whatever it resolves to
    resolver("relay.internal", ["127.0.0.1"])
    app: Flask = request.getfixturevalue("app")
    paging.load_shipped(app, demo=False)
    paging.add_contact(
        app, organisation="dic", name="Relay", webhook_url=f"http://relay.internal:{port}/hook", channels=["webhook"]
    )
    _page_dic(app, request.getfixturevalue("client"), request.getfixturevalue("operator"))
    assert len(hits) == 1  # the allowed name was reached
    dbs: Session = request.getfixturevalue("dbs")
    [tried] = dbs.scalars(select(Delivery).where(Delivery.channel == "webhook"))
    assert tried.state != "delivered" and "HTTP 307" in (tried.last_error or ""), tried.last_error
    assert receiver.deliveries == []  # the redirect to 127.0.0.1 was not followed


def test_finding_9_receipts_to_a_token_webhook_are_refused_when_it_now_resolves_internal(
    app: Flask,
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    receiver: HttpReceiver,
    resolver: Callable[[str, list[str]], None],
) -> None:
    from incidents import receipts
    from tests.receivers import give_webhook

    port = receiver.url.split(":")[2].split("/")[0]
    siem = make_token("intake")
    give_webhook(session, siem, f"http://siem.rebind.test:{port}/hook", "s")
    resolver("siem.rebind.test", ["10.9.8.7"])
    assert client.post("/api/v1/incidents", json=incident_payload(), headers=siem).status_code == 201
    assert paging.run_jobs(app, (followup.FILED,)) == 1  # the filing's follow-up queues the receipt
    with pytest.raises(jobs.PermanentError, match=r"10\.9\.8\.7.*private"):
        paging.run_jobs(app, (receipts.WEBHOOK,), send=True)
    assert receiver.deliveries == []


def test_finding_9_taxii_push_to_an_internal_collection_is_refused(
    app: Flask, client: FlaskClient, operator: dict[str, str], receiver: HttpReceiver
) -> None:
    incident = client.post("/api/v1/incidents", json=incident_payload(), headers=operator).json
    assert client.get(f"/api/v1/incidents/{incident['id']}/stix", headers=operator).status_code == 200
    config = {**app.config, "STIX_PUSH_URL": receiver.url.removesuffix("/hook") + "/national/collections/c1/"}
    with app.app_context():
        session = db.session()
        with session.begin():
            enqueue_push(session)
        ctx = jobs.JobContext(app.extensions["ucsc.sessionmaker"], config, {})
        [job] = jobs.claim(session, "test", 1, ["stix.push"])
        with pytest.raises(jobs.PermanentError, match="loopback"):
            jobs.KINDS["stix.push"].handler(ctx, job)
    assert receiver.deliveries == []


def test_a_malformed_outbound_allowance_stops_the_app_at_start(tmp_path):
    """A typo in UCSC_OUTBOUND_ALLOW is refused when the app is built, not at the first webhook."""
    from app import create_app

    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        create_app({"DATABASE_URL": url, "OUTBOUND_ALLOW": "127.0.0.0/8,10.0.0.0/33"})
    assert create_app({"DATABASE_URL": url, "OUTBOUND_ALLOW": "127.0.0.0/8, relay.internal"})
