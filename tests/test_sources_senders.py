"""Real senders into a real server: Debian's prometheus-alertmanager, the project's Wazuh integratord script,
thehive4py, the Kibana connector body rendered as Kibana renders it, and Splunk's webhook body."""

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pystache
import pytest
import requests
from flask import Flask
from sqlalchemy import func, select
from thehive4py import TheHiveApi

from app import create_app, db
from app.auth import new_token
from app.cli import migrate
from incidents import accounts
from incidents.enums import Role
from incidents.models import Event, Incident, Observable, Occurrence
from incidents.sources.models import Source
from tests.conftest import BACKENDS, PG_ADMIN_URL, _seed, _worker
from tests.live import LOOPBACK, LiveServer, free_port

ROOT = Path(__file__).resolve().parent.parent
INTEGRATOR = ROOT / "integrations" / "wazuh" / "custom-ucsc"
KIBANA_BODY = ROOT / "integrations" / "kibana" / "webhook-body.mustache"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


@dataclass
class Stack:
    app: Flask
    server: LiveServer
    token: str
    tmp: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def url(self, kind: str) -> str:
        return f"{self.server.url}/api/v1/sources/{kind}"

    def read(self, query: Callable[[Any], Any]) -> Any:
        with self.app.app_context():
            session = db.session()
            try:
                return query(session)
            finally:
                session.close()


def _database(backend: str, tmp: Path, template: Path) -> Iterator[str]:
    if backend == "sqlite":
        shutil.copy(template, tmp / "ucsc.db")
        yield f"sqlite:///{tmp / 'ucsc.db'}"
        return
    name = f"ucsc_senders_{_worker()}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrating = create_app({"DATABASE_URL": url, "TESTING": True})
    with migrating.app_context():
        migrate()
        db.engine().dispose()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One gunicorn per backend for the whole module, and an intake token the senders post with."""
    tmp = tmp_path_factory.mktemp(f"senders-{request.param}")
    databases = _database(request.param, tmp, request.getfixturevalue("sqlite_template"))
    url = next(databases)
    app = create_app({"DATABASE_URL": url, "TESTING": True, "SECRET_KEY": "test", "INTAKE_RATE_LIMIT": "",
                      "REDIS_URL": None, "OUTBOUND_ALLOW": LOOPBACK,
                      "AUDIT_ANCHOR_FILE": str(tmp / "audit_anchor")})  # fmt: skip
    _seed(app)
    with app.app_context():
        session = db.session()
        with session.begin():
            accounts.create_user(session=session, username="siem", role=Role.INTAKE, organisation="dic",
                                 password_hash=None)  # fmt: skip
    token = intake_token(app, "soc-siem")
    server = LiveServer(url, tmp / "gunicorn.log").start()
    yield Stack(app, server, token, tmp)
    server.stop()
    with app.app_context():
        db.engine().dispose()
    next(databases, None)


def intake_token(app: Flask, name: str) -> str:
    """A new intake token of the user `siem`: a sender of its own, so its first alert registers a source."""
    token, digest = new_token()
    with app.app_context():
        session = db.session()
        with session.begin():
            accounts.create_token(session=session, name=name, role=Role.INTAKE, digest=digest, user="siem")
    return token


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def incident_titled(stack: Stack, title: str) -> Incident | None:
    return stack.read(lambda s: s.scalars(select(Incident).where(Incident.title == title)).one_or_none())


def occurrences(stack: Stack, incident_id: int) -> int:
    return stack.read(lambda s: s.scalar(select(func.count()).where(Occurrence.incident_id == incident_id)))


def events(stack: Stack, incident_id: int, kind: str) -> list[Event]:
    return stack.read(
        lambda s: list(s.scalars(select(Event).where(Event.incident_id == incident_id, Event.kind == kind)))
    )


# ---------------------------------------------------------------------------------------------- alertmanager


@pytest.fixture
def alertmanager(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Debian's Alertmanager on loopback, its one receiver UCSC's intake, with timers short enough for a test."""
    if not os.path.exists(ALERTMANAGER):
        pytest.fail("Debian's prometheus-alertmanager is not installed (make alertmanager)")
    port = free_port()
    config = {
        "route": {"receiver": "ucsc", "group_by": ["alertname"], "group_wait": "100ms", "group_interval": "500ms",
                  "repeat_interval": "1s"},
        "receivers": [{"name": "ucsc", "webhook_configs": [{
            "url": stack.url("alertmanager"), "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials": stack.token}},
        }]}],
    }  # fmt: skip
    (tmp_path / "alertmanager.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base), 15, "Alertmanager ready")
        yield base
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/-/ready", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_alertmanager_fires_into_ucsc_repeats_as_occurrences_and_resolves_as_a_notice(stack, alertmanager):
    started = datetime.now(UTC) - timedelta(seconds=5)
    alert = {
        "labels": {"alertname": "PortalDown", "instance": "203.0.113.30:443", "severity": "critical",
                   "job": "blackbox", "category": "dos", "backend": stack.server.url},
        "annotations": {"summary": "Cổng thông tin không truy cập được"},
        "startsAt": started.isoformat(),
        "generatorURL": "http://prometheus.local/graph?g0.expr=probe_success+%3D%3D+0",
    }  # fmt: skip
    assert requests.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=5).status_code == 200
    title = "PortalDown: Cổng thông tin không truy cập được"
    incident = wait_for(lambda: incident_titled(stack, title), 15, "Alertmanager's first notification filed")
    assert (incident.priority, incident.category, incident.status) == ("P1", "dos", "new")
    assert incident.dedup_key.startswith("alertmanager:")
    wait_for(lambda: occurrences(stack, incident.id) >= 2, 15, "a repeat notification grouped as an occurrence")

    ended = alert | {"endsAt": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    assert requests.post(f"{alertmanager}/api/v2/alerts", json=[ended], timeout=5).status_code == 200
    notice = wait_for(lambda: events(stack, incident.id, "source.resolved"), 15, "the resolved notification")
    assert notice[0].actor == "siem"
    assert stack.read(lambda s: s.get_one(Incident, incident.id).status) == "new"  # recovery is a person's call
    assert stack.read(lambda s: s.scalar(select(func.count()).where(Incident.title == title))) == 1


# ---------------------------------------------------------------------------------------------- wazuh


WAZUH_ALERT = {
    "timestamp": "2026-12-06T10:20:00.000+0700",
    "rule": {"level": 10, "description": "sshd: brute force trying to get access to the system.", "id": "5712",
             "mitre": {"id": ["T1110"], "tactic": ["Credential Access"], "technique": ["Brute Force"]},
             "groups": ["syslog", "sshd", "authentication_failures"]},
    "agent": {"id": "007", "name": "vpn-gw-02", "ip": "203.0.113.41"},
    "manager": {"name": "wazuh"},
    "data": {"srcip": "198.51.100.23", "srcuser": "root"},
    "full_log": "Dec  6 10:20:00 vpn-gw-02 sshd[811]: Failed password for root from 198.51.100.23 port 52814",
    "location": "/var/log/auth.log",
}  # fmt: skip


def run_integrator(stack: Stack, tmp: Path, alert: dict, *extra: str, key: str | None = None) -> int:
    alert_file = tmp / f"alert-{alert['id']}.json"
    alert_file.write_text(json.dumps(alert))
    env = {**os.environ, "UCSC_INTEGRATION_LOG": str(tmp / "integrations.log")}
    result = subprocess.run(
        [str(INTEGRATOR), str(alert_file), key if key is not None else stack.token, stack.url("wazuh"), *extra],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return result.returncode


def test_the_wazuh_integration_script_run_as_integratord_runs_it_files_and_groups(stack, tmp_path):
    assert run_integrator(stack, tmp_path, WAZUH_ALERT | {"id": "1733455200.100"}, "debug") == 0
    assert run_integrator(stack, tmp_path, WAZUH_ALERT | {"id": "1733455260.200"}) == 0
    assert run_integrator(stack, tmp_path, WAZUH_ALERT | {"id": "1733455260.200"}) == 0  # integratord retried
    incident = incident_titled(stack, WAZUH_ALERT["rule"]["description"])
    assert incident is not None and incident.dedup_key == "wazuh:5712:vpn-gw-02"
    assert (incident.priority, incident.category) == ("P2", "unauthorized_access")
    assert occurrences(stack, incident.id) == 2
    assert events(stack, incident.id, "incident.attack_techniques_added")[0].data["techniques"] == ["T1110"]
    values = stack.read(lambda s: set(s.scalars(select(Observable.value).where(Observable.incident_id == incident.id))))
    assert values == {"198.51.100.23", "203.0.113.41"}
    log = (tmp_path / "integrations.log").read_text()
    assert "1733455200.100" in log and stack.token not in log
    # A refused alert (no rule id) is reported by its exit code, never retried into a loop.
    broken = {"id": "1733455300.300", "agent": {"name": "x"}, "rule": {"description": "no id"}}
    assert run_integrator(stack, tmp_path, broken) == 8
    assert run_integrator(stack, tmp_path, WAZUH_ALERT | {"id": "1733455300.400"}, key="ucsc_not_a_token") == 8


# ---------------------------------------------------------------------------------------------- thehive4py


def test_thehive4py_alert_create_files_with_ucsc_as_its_thehive(stack):
    hive = TheHiveApi(url=f"{stack.server.url}/api/v1/sources/thehive", apikey=stack.token, max_retries=0)
    alert = {
        "type": "wazuh", "source": "wazuh-to-thehive", "sourceRef": "wz-4242",
        "title": "Ransomware note dropped on file server", "description": "README_DECRYPT.txt in 300 shares",
        "severity": 4, "date": int(time.time() * 1000), "tags": ["ransomware", "T1486"], "tlp": 2, "pap": 2,
        "observables": [{"dataType": "ip", "data": "198.51.100.66"},
                        {"dataType": "hash", "data": "e3b0c44298fc1c149afbf4c8996fb924" * 2},
                        {"dataType": "filename", "data": "README_DECRYPT.txt"}],
    }  # fmt: skip
    created = hive.alert.create(alert=alert)
    assert created["_id"] == f"~{created['id']}" and created["created"] is True
    again = hive.alert.create(alert=alert)  # a script's retry: the first answer again, nothing filed twice
    assert again["id"] == created["id"]
    incident = stack.read(lambda s: s.get_one(Incident, created["id"]))
    assert (incident.priority, incident.category, incident.tlp) == ("P1", "ransomware", "amber")
    assert "filename=README_DECRYPT.txt" in incident.description
    assert events(stack, incident.id, "incident.attack_techniques_added")[0].data["techniques"] == ["T1486"]


# ---------------------------------------------------------------------------------------------- kibana, splunk


def kibana_render(template: str, variables: dict) -> str:
    """Mustache as Kibana's webhook connector renders a body: values escaped for JSON strings."""
    renderer = pystache.Renderer(escape=lambda s: json.dumps(str(s), ensure_ascii=False)[1:-1],
                                 missing_tags="ignore")  # fmt: skip
    return renderer.render(template, variables)


def test_the_kibana_connector_body_from_the_docs_files_a_detection_rules_alerts(stack):
    template = KIBANA_BODY.read_text()
    assert template in (ROOT / "docs" / "sources.md").read_text()  # the docs give exactly this body
    variables = {
        "date": "2026-12-06T03:30:00.000Z",
        "rule": {"tags": ["phishing", "email"]},
        "context": {
            "results_link": "https://kibana.local/app/security/detections/rules/id/r-9?timerange=x&y=1",
            "rule": {"id": "r-9", "name": 'Mail "urgent invoice" with macro', "severity": "critical",
                     "risk_score": 91, "description": "Office macro from a first-seen sender",
                     "threat": [{"technique": [{"id": "T1566", "subtechnique": [{"id": "T1566.001"}]}]}]},
            "alerts": [
                {"_id": "k1", "@timestamp": "2026-12-06T03:29:00Z", "host": {"name": "mail-01"},
                 "user": {"name": "ketoan@tinh.gov.vn"}, "source": {"ip": "198.51.100.77"},
                 "url": {"full": "https://examp1e-invoice.vn/i.docm"}},
                {"_id": "k2", "@timestamp": "2026-12-06T03:29:30Z", "host": {"name": "mail-01"},
                 "file": {"path": "i.docm", "hash": {"sha256": "a" * 64}}},
            ],
        },
    }  # fmt: skip
    body = kibana_render(template, variables)
    r = requests.post(stack.url("kibana"), data=body.encode(), timeout=10,
                      headers={**stack.headers, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 201, r.text
    incident = stack.read(lambda s: s.get_one(Incident, r.json()["id"]))
    assert (incident.title, incident.priority, incident.category) == (
        'Mail "urgent invoice" with macro',
        "P1",
        "phishing",
    )
    assert incident.dedup_key == "kibana:r-9:mail-01"
    kinds = stack.read(
        lambda s: {o.type for o in s.scalars(select(Observable).where(Observable.incident_id == incident.id))}
    )
    assert kinds == {"ipv4-addr", "url", "file"}
    assert events(stack, incident.id, "incident.attack_techniques_added")[0].data["techniques"] == [
        "T1566",
        "T1566.001",
    ]


def test_a_splunk_webhook_with_the_key_in_its_url_leaves_no_key_in_logs_or_metrics(stack):
    body = {
        "result": {"src_ip": "198.51.100.88", "dest": "portal.tinh.gov.vn", "count": "311", "severity": "medium",
                   "_time": "1733455800"},
        "sid": "rt_scheduler__admin__search__RMD5_1733455800.77",
        "results_link": "https://splunk.local:8000/app/search/search?q=%7Cloadjob%20rt_scheduler",
        "search_name": "Web DoS threshold",
        "owner": "admin",
        "app": "search",
    }  # fmt: skip
    r = requests.post(f"{stack.url('splunk')}?key={stack.token}", json=body, timeout=10)
    assert r.status_code == 201, r.text
    assert requests.post(f"{stack.url('splunk')}?key={stack.token}", json=body, timeout=10).status_code == 201
    wrong = requests.post(f"{stack.url('splunk')}?key={stack.token[:-4]}xxxx", json=body, timeout=10)
    assert wrong.status_code == 401
    incident = stack.read(lambda s: s.get_one(Incident, r.json()["id"]))
    assert (incident.priority, incident.category) == ("P3", "dos")
    resolved = {
        "version": "4",
        "status": "resolved",
        "alerts": [
            {
                "status": "resolved",
                "fingerprint": "0badc0de",
                "labels": {"alertname": "Gone"},
                "startsAt": "2026-12-06T03:00:00Z",
                "endsAt": "2026-12-06T03:01:00Z",
            }
        ],
    }
    assert requests.post(f"{stack.url('alertmanager')}?key={stack.token}", json=resolved, timeout=10).status_code == 202
    metrics = requests.get(f"{stack.server.url}/metrics", timeout=10).text
    log = wait_for(lambda: (text := stack.server.log()).count("?key=[redacted]") >= 4 and text,
                   10, "gunicorn's access lines")  # fmt: skip
    assert stack.token not in log and stack.token[:-4] not in log
    assert stack.token not in metrics and stack.token[:-4] not in metrics
    assert 'endpoint="api.post_source_alert"' in metrics
    assert 'ucsc_intake_total{outcome="replayed"}' in metrics and 'ucsc_intake_total{outcome="noticed"}' in metrics


def test_parallel_first_alerts_of_a_new_sender_register_one_source_and_group_into_one_incident(stack):
    token = intake_token(stack.app, "wazuh-parallel")
    alert = WAZUH_ALERT | {"rule": WAZUH_ALERT["rule"] | {"id": "5763", "description": "Parallel brute force"}}

    def post(n: int) -> int:
        body = alert | {"id": f"1733456000.{n}"}
        return requests.post(stack.url("wazuh"), json=body, headers={"Authorization": f"Bearer {token}"},
                             timeout=30).status_code  # fmt: skip

    with ThreadPoolExecutor(12) as pool:
        codes = sorted(pool.map(post, range(24)))
    assert codes == [200] * 23 + [201]
    incident = incident_titled(stack, "Parallel brute force")
    assert occurrences(stack, incident.id) == 24
    sources = stack.read(lambda s: s.scalars(select(Source).where(Source.name == "wazuh:wazuh-parallel")).all())
    assert len(sources) == 1
    counted = stack.read(lambda s: s.scalar(select(func.count()).where(Occurrence.source_id == sources[0].id)))
    assert counted == 24
