"""Production concerns: /metrics, JSON logs with request ids, backup and restore, psycopg under gevent, upgrades."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app import db
from incidents.models import Incident, Job
from tests.conftest import PG_ADMIN_URL, ROOT, _worker, incident_payload
from tests.live import LiveServer
from tests.sockets import LiveClient

# v0.1 was cut when the foundation issue closed (docs/deploy.md); the commit stands in if the tag is absent.
V0_1 = ("v0.1", "47ac023")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_requests_intake_outcomes_and_read_jobs_and_incidents_from_the_database(
    app: Flask, client, make_token
) -> None:
    siem = make_token("intake", username="siem-metrics")
    created = client.post("/api/v1/incidents", json=incident_payload(dedup_key="rule-7"),
                          headers={**siem, "Idempotency-Key": "k1"})  # fmt: skip
    assert created.status_code == 201
    replay = client.post("/api/v1/incidents", json=incident_payload(dedup_key="rule-7"),
                         headers={**siem, "Idempotency-Key": "k1"})  # fmt: skip
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert client.post("/api/v1/incidents", json=incident_payload(dedup_key="rule-7"), headers=siem).status_code == 200
    assert client.post("/api/v1/incidents", json={"title": ""}, headers=siem).status_code == 422

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    got = samples(response.get_data(as_text=True))
    for outcome in ("created", "replayed", "deduplicated", "refused"):
        assert got[("ucsc_intake_total", (("outcome", outcome),))] == 1.0, outcome
    assert got[("ucsc_http_requests_total", (("endpoint", "api.create_incident"), ("method", "POST"),
                                              ("status", "422")))] == 1.0  # fmt: skip
    with app.app_context():
        session = db.session()
        by_status = dict(session.execute(select(Incident.status, func.count()).group_by(Incident.status)).all())
        jobs_by_state = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        queued_for = set(session.execute(select(Job.kind, Job.incident_id)).all())
    assert by_status == {"new": 1}
    assert got[("ucsc_incidents", (("status", "new"),))] == 1.0
    # The filing queued its one follow-up job (clocks, receipts, playbooks: the worker's), and the collector counts
    # jobs by state straight from the table.
    assert queued_for == {("incidents.filed", created.json["id"])}
    jobs_metric = {labels[0][1]: v for (name, labels), v in got.items() if name == "ucsc_jobs"}
    assert jobs_metric == {"queued": float(jobs_by_state["queued"])}
    assert set(jobs_by_state) == {"queued"}
    for name in ("ucsc_job_lag_seconds", "ucsc_worker_heartbeat_age_seconds", "ucsc_feed_lag_seconds",
                 "ucsc_socket_clients", "ucsc_feed_cursor"):  # fmt: skip
        assert (name, ()) in got, name


@pytest.mark.parametrize("app_config", [{"METRICS_TOKEN": "scrape-secret"}])
def test_metrics_behind_a_configured_token_refuse_anyone_else(client) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200


@pytest.mark.slow
def test_json_logs_are_one_object_per_line_with_the_request_id(app: Flask, database_url: str, tmp_path: Path,
                                                               operator) -> None:  # fmt: skip
    log_path = tmp_path / "json.log"
    server = LiveServer(database_url, log_path, {"UCSC_LOG_FORMAT": "json"}).start()
    try:
        requests.get(server.url + "/healthz", headers={"X-Request-ID": "req-4347"}, timeout=5)
        requests.post(server.url + "/api/v1/incidents", json={"title": ""}, headers=operator, timeout=5)
    finally:
        server.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert len(lines) == len([line for line in log_path.read_text().splitlines() if line.strip()])
    health = [entry for entry in lines if entry.get("path") == "/healthz" and entry.get("request_id") == "req-4347"]
    assert health and health[0]["status"] == 200 and health[0]["logger"] == "ucsc.access"
    refused = [entry for entry in lines if entry.get("path") == "/api/v1/incidents"]
    assert refused[0]["status"] == 422 and len(refused[0]["request_id"]) == 32
    assert {"time", "level", "logger", "message"} <= lines[0].keys()


def _flask(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "UCSC_SECRET_KEY": "test", **env}, input=stdin, timeout=120,
    )  # fmt: skip


def _file_many(server: LiveServer, headers: dict[str, str], stop: threading.Event, accepted: list[tuple[float, str]],
               errors: list[str]) -> None:  # fmt: skip
    with requests.Session() as http:
        n = 0
        while not stop.is_set():
            n += 1
            body = incident_payload(title=f"Sao lưu khi đang tải {threading.get_ident()}-{n}", observables=[])
            try:
                response = http.post(server.url + "/api/v1/incidents", json=body, headers=headers, timeout=10)
            except requests.RequestException as exc:
                errors.append(repr(exc))
                continue
            if response.status_code == 201:
                accepted.append((time.monotonic(), response.json()["ref"]))
            elif response.status_code != 503:
                errors.append(f"{response.status_code} {response.text[:200]}")


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_backup_under_load_restores_every_incident_acknowledged_before_it(
    app: Flask, database_url: str, live_server: LiveServer, make_token, tmp_path: Path
) -> None:
    headers = make_token("intake", username="siem-backup")
    stop, accepted, errors = threading.Event(), [], []
    threads = [threading.Thread(target=_file_many, args=(live_server, headers, stop, accepted, errors))
               for _ in range(3)]  # fmt: skip
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    before = time.monotonic()
    backup_file = tmp_path / "backups" / "ucsc-backup.db"
    run = _flask({"UCSC_DATABASE_URL": database_url}, "backup", str(backup_file))
    after = time.monotonic()
    time.sleep(0.5)  # more filings after the backup: they are not in it, and that is fine
    stop.set()
    for thread in threads:
        thread.join()
    assert run.returncode == 0, run.stdout + run.stderr
    assert errors == []
    acknowledged_before = {ref for at, ref in accepted if at < before}
    assert len(acknowledged_before) > 20

    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
    restore = _flask({"UCSC_DATABASE_URL": restored_url}, "restore", "--yes", str(backup_file))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    with sqlite3.connect(tmp_path / "restored.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        refs = {row[0] for row in conn.execute("SELECT ref FROM incidents")}
    conn.close()
    assert acknowledged_before <= refs
    assert refs <= {ref for _, ref in accepted}  # nothing invented
    # Filings acknowledged after the backup finished are not in it: the copy is a snapshot, not a mirror.
    assert not {ref for at, ref in accepted if at > after + 0.1} & refs
    verify = _flask({"UCSC_DATABASE_URL": restored_url}, "audit", "verify")
    assert verify.returncode == 0 and "audit trail intact" in verify.stdout
    assert "backup written to" in run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_backup_and_restore_round_trip_through_pg_dump(
    app: Flask, client, database_url: str, operator, tmp_path: Path
) -> None:
    kept = client.post("/api/v1/incidents", json=incident_payload(title="Có trong bản sao lưu"), headers=operator)
    assert kept.status_code == 201
    backup_file = tmp_path / "ucsc.dump"
    run = _flask({"UCSC_DATABASE_URL": database_url}, "backup", str(backup_file))
    assert run.returncode == 0, run.stdout + run.stderr
    later = client.post("/api/v1/incidents", json=incident_payload(title="Sau bản sao lưu"), headers=operator)
    assert later.status_code == 201
    with app.app_context():
        db.engine().dispose()  # pg_restore --clean needs the tables free of this process's idle connections

    restore = _flask({"UCSC_DATABASE_URL": database_url}, "restore", "--yes", str(backup_file))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        titles = {row[0] for row in conn.execute("SELECT title FROM incidents")}
    assert titles == {"Có trong bản sao lưu"}


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_two_second_pg_sleep_does_not_freeze_other_websockets(app: Flask, database_url: str, tmp_path: Path,
                                                                operator) -> None:  # fmt: skip
    server = LiveServer(database_url, tmp_path / "gunicorn.log", {"UCSC_BENCH_ROUTES": "1"}).start()
    client = LiveClient(server.url).connect(operator)
    try:
        client.wait_for("ready")
        window: dict[str, float] = {}

        def sleeper() -> None:
            window["start"] = time.monotonic()
            requests.post(server.url + "/_bench/pg-sleep", json={"seconds": 2}, timeout=10).raise_for_status()
            window["end"] = time.monotonic()

        thread = threading.Thread(target=sleeper)
        thread.start()
        time.sleep(0.3)  # the sleeping request now holds its PostgreSQL connection
        round_trips: list[tuple[float, float]] = []
        for seq in range(8):
            started = time.monotonic()
            requests.post(server.url + "/_bench/emit", json={"seq": seq}, timeout=5).raise_for_status()
            client.wait_for(lambda f, seq=seq: f.name == "bench.bare" and f.data.get("seq") == seq, timeout=5)
            round_trips.append((started, time.monotonic()))
            time.sleep(0.1)
        thread.join()
    finally:
        client.disconnect()
        server.stop()
    assert window["end"] - window["start"] >= 2.0
    # Every websocket round trip began and ended inside the 2 s query, and took a small part of it.
    assert all(window["start"] < began and ended < window["end"] for began, ended in round_trips), (window, round_trips)
    assert max(ended - began for began, ended in round_trips) < 0.5, round_trips


def _v0_1_tree(tmp_path: Path) -> Path:
    """The v0.1 source tree (git archive of the tag, or of its commit), unpacked beside the test."""
    tree = tmp_path / "v0.1"
    tree.mkdir()
    for ref in V0_1:
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=False)
        if archive.returncode == 0:
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
            return tree
    raise AssertionError(f"neither {V0_1} is in this clone's history: the upgrade path cannot be checked")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.db'}"
        return
    name = f"ucsc_upgrade_{_worker()}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


FILE_WITH_V0_1 = """
import json, sys
from app import create_app
app = create_app({"TESTING": True, "INTAKE_RATE_LIMIT": ""})
client = app.test_client()
headers = {"Authorization": "Bearer " + sys.argv[1]}
refs = []
for n in range(3):
    body = {"title": f"Sự cố từ bản v0.1 số {n}", "category": "malware", "priority": "P2", "tlp": "green",
            "detected_at": "2026-11-20T08:30:00+07:00",
            "observables": [{"type": "domain-name", "value": f"c2-{n}.example.net"}]}
    answer = client.post("/api/v1/incidents", json=body, headers=headers)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    refs.append(answer.get_json()["ref"])
print(json.dumps(refs))
"""


@pytest.mark.slow
def test_a_v0_1_database_with_incidents_upgrades_to_head_and_keeps_them(empty_url: str, tmp_path: Path) -> None:
    tree = _v0_1_tree(tmp_path)
    env = {**os.environ, "UCSC_DATABASE_URL": empty_url, "UCSC_SECRET_KEY": "test", "PYTHONPATH": str(tree)}

    def run(cwd: Path, *argv: str) -> str:
        done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
        return done.stdout

    run(tree, "-m", "flask", "--app", "wsgi", "init-db")
    token = run(tree, "-m", "flask", "--app", "wsgi", "create-token", "old-siem", "--role", "intake").strip()
    token = token.splitlines()[-1]
    refs = json.loads(run(tree, "-c", FILE_WITH_V0_1, token).strip().splitlines()[-1])

    env["PYTHONPATH"] = str(ROOT)
    run(ROOT, "-m", "flask", "--app", "wsgi", "init-db")
    from app import create_app

    app = create_app({"DATABASE_URL": empty_url, "TESTING": True, "SECRET_KEY": "test", "INTAKE_RATE_LIMIT": ""})
    try:
        client = app.test_client()
        listed = client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200, listed.get_data(as_text=True)
        assert sorted(item["ref"] for item in listed.get_json()["items"]) == sorted(refs)
        one = client.get(f"/api/v1/incidents/{listed.get_json()['items'][0]['id']}",
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert one.get_json()["observables"][0]["type"] == "domain-name"
        # The upgraded database takes new filings with the old token and keeps counting references.
        filed = client.post("/api/v1/incidents", json=incident_payload(), headers={"Authorization": f"Bearer {token}"})
        assert filed.status_code == 201
        assert int(filed.get_json()["ref"].rsplit("-", 1)[1]) == max(int(r.rsplit("-", 1)[1]) for r in refs) + 1
    finally:
        with app.app_context():
            db.engine().dispose()
    shutil.rmtree(tree)


@pytest.mark.slow
def test_wheelhouse_installs_with_no_registry_and_the_installed_server_answers(tmp_path: Path) -> None:
    wheelhouse, venv = tmp_path / "wheelhouse", tmp_path / "offline-venv"
    built = subprocess.run(["make", "wheelhouse", f"WHEELHOUSE={wheelhouse}"], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert (wheelhouse / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    # No index, no find-links but the bundle, no pip configuration of this machine's.
    offline = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    offline.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_INDEX_URL="http://127.0.0.1:9/unreachable")
    # An empty venv filled by this pip (`--python`), without byte-compiling: the same wheels, a third of the time.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=offline, timeout=120)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-compile",
         "--no-index", "--find-links", str(wheelhouse), "-r", str(wheelhouse / "requirements.txt")],
        capture_output=True, text=True, env=offline, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    url = f"sqlite:///{tmp_path / 'offline.db'}"
    env = {**offline, "UCSC_DATABASE_URL": url, "UCSC_SECRET_KEY": "test"}
    python = str(venv / "bin" / "python")
    init = subprocess.run([python, "-m", "flask", "--app", "wsgi", "init-db"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    from tests.live import free_port

    port = free_port()
    with (tmp_path / "gunicorn.log").open("wb") as log:
        server = subprocess.Popen([python, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"], cwd=ROOT,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline, answer = time.monotonic() + 30, None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            except requests.RequestException:
                time.sleep(0.2)
        assert answer is not None and answer.status_code == 200, (tmp_path / "gunicorn.log").read_text()
        assert answer.json()["database"] == "sqlite"
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
