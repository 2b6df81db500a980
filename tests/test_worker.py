"""The worker process for real: receipts delivered once, leases reclaimed after SIGKILL, SIGTERM drains."""

import hashlib
import hmac
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.base import utcnow
from incidents.models import Job, WorkerHeartbeat
from tests.conftest import TokenFactory, incident_payload
from tests.receivers import Delivery, HttpReceiver, eventually, give_webhook

URL = "/api/v1/incidents"
BASE_URL = "https://ucsc.example.vn"
SECRET = "khoá-bí-mật"
WORKER_ENV = {"UCSC_BASE_URL": BASE_URL, "UCSC_NOTIFY_TIMEOUT": "60"}


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., HttpReceiver]]:
    """Start HTTP receivers (`make_receiver(statuses=..., delays=...)`); all are closed at the end."""
    started: list[HttpReceiver] = []

    def factory(**kwargs: Any) -> HttpReceiver:
        started.append(HttpReceiver(**kwargs).start())
        return started[-1]

    yield factory
    for server in started:
        server.close()


@pytest.fixture
def receiver(make_receiver: Callable[..., HttpReceiver]) -> HttpReceiver:
    """A receiver that answers 200 at once."""
    return make_receiver()


def _jobs(session: Session, kind: str = "receipt.webhook") -> list[Job]:
    """The jobs of `kind` as committed now (a fresh transaction: SQLite readers keep their snapshot)."""
    session.rollback()
    return list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def _write(session: Session, statement: Any, rows: list[dict] | None = None) -> None:
    """Run one write statement in its own (SQLite: BEGIN IMMEDIATE) transaction."""
    session.rollback()
    with session.begin():
        session.connection(execution_options={"ucsc_write": True})
        session.execute(statement, rows)


def _heartbeats(session: Session) -> list[WorkerHeartbeat]:
    session.rollback()
    return list(session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.started_at)))


def _file(client: FlaskClient, headers: dict[str, str], n: int) -> list[dict]:
    """File `n` incidents, one request each; their 201 bodies."""
    bodies = []
    for i in range(n):
        r = client.post(URL, json=incident_payload(title=f"Sự cố thử số {i}"), headers=headers)
        assert r.status_code == 201, r.json
        bodies.append(r.json)
    return bodies


def _assert_signed(delivery: Delivery, secret: str) -> None:
    """X-UCSC-Signature is `t=TS,v1=HMAC-SHA256(secret, "TS.BODY")` with a fresh timestamp."""
    fields = dict(part.split("=", 1) for part in delivery.headers["X-UCSC-Signature"].split(","))
    assert set(fields) == {"t", "v1"}
    assert abs(time.time() - int(fields["t"])) < 60
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)


def test_worker_posts_each_receipt_signed_with_its_reference_and_idempotency_key(
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    receiver: HttpReceiver,
    start_worker: Callable[..., Any],
) -> None:
    siem = make_token("intake")
    give_webhook(session, siem, receiver.url, SECRET)
    filed = _file(client, siem, 3)
    start_worker(env=WORKER_ENV)

    deliveries = receiver.wait_for(3)
    by_key = {d.key: d for d in deliveries}
    assert len(deliveries) == 3
    assert set(by_key) == {f"receipt.webhook:{f['id']}" for f in filed}
    for incident in filed:
        delivery = by_key[f"receipt.webhook:{incident['id']}"]
        _assert_signed(delivery, SECRET)
        assert delivery.headers["Content-Type"] == "application/json"
        body = delivery.json
        assert body["type"] == "incident.received"
        assert (body["id"], body["ref"], body["status"]) == (incident["id"], incident["ref"], "new")
        assert body["title"].startswith("Sự cố thử số")
        assert body["status_url"] == f"{BASE_URL}/api/v1/incidents/{incident['id']}"
    done = eventually(lambda: all(j.state == jobs.DONE for j in rows) and rows if (rows := _jobs(session)) else None)
    assert [(j.attempts, j.lease_until, j.last_error) for j in done] == [(1, None, None)] * 3


def test_a_job_of_a_killed_worker_is_rerun_by_another_only_after_its_lease(
    make_receiver: Callable[..., HttpReceiver],
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    start_worker: Callable[..., Any],
) -> None:
    receiver = make_receiver(delays=(30.0, 0.0))
    siem = make_token("intake")
    give_webhook(session, siem, receiver.url, SECRET)
    [incident] = _file(client, siem, 1)
    first = start_worker(env=WORKER_ENV)
    receiver.wait_for(1)  # the first worker is inside the POST, waiting for the slow answer
    first_pid = first.pid
    first.kill(signal.SIGKILL)

    [job] = _jobs(session)
    assert (job.state, job.attempts) == (jobs.RUNNING, 1)
    assert job.leased_by.endswith(f":{first_pid}")
    assert job.lease_until > utcnow() + timedelta(seconds=45)  # the receipt kinds lease for 60 s
    killed_by = job.leased_by

    second = start_worker(env=WORKER_ENV)
    second_pid = second.pid
    time.sleep(1.0)  # ten polls of the second worker: the lease is still valid, so nobody may run the job
    [job] = _jobs(session)
    assert (job.state, job.attempts, job.leased_by) == (jobs.RUNNING, 1, killed_by)
    assert len(receiver.deliveries) == 1

    # Skip the rest of the 60 s lease: the row now looks as it will once the lease has run out.
    _write(session, update(Job).where(Job.id == job.id).values(lease_until=utcnow() - timedelta(seconds=1)))

    deliveries = receiver.wait_for(2)
    assert [d.key for d in deliveries] == [f"receipt.webhook:{incident['id']}"] * 2
    assert deliveries[0].body == deliveries[1].body
    [job] = eventually(lambda: [j for j in _jobs(session) if j.state == jobs.DONE])
    assert job.attempts == 2
    assert job.leased_by != killed_by and job.leased_by.endswith(f":{second_pid}")
    time.sleep(0.3)
    assert len(receiver.deliveries) == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_deliver_500_receipts_exactly_once(
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    receiver: HttpReceiver,
    start_worker: Callable[..., Any],
) -> None:
    siem = make_token("intake")
    give_webhook(session, siem, receiver.url, SECRET)
    start_worker(env=WORKER_ENV)
    start_worker(env=WORKER_ENV)
    items = [incident_payload(title=f"Cảnh báo {n}", observables=[]) for n in range(500)]
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=siem)
    assert r.status_code == 201, r.json
    ids = [item["id"] for item in r.json["items"]]

    receiver.wait_for(500, timeout=120)  # beside the receipts the workers also run each filing's playbook jobs
    rows = eventually(lambda: all(j.state == jobs.DONE for j in rows) and rows if (rows := _jobs(session)) else None)
    time.sleep(0.3)  # a repeat, were there one, would arrive now
    keys = Counter(receiver.keys())
    assert len(keys) == 500
    assert keys.most_common(1)[0][1] == 1
    assert set(keys) == {f"receipt.webhook:{i}" for i in ids}
    assert len(rows) == 500 and all(j.attempts == 1 for j in rows)
    beats = _heartbeats(session)
    assert len(beats) == 2
    shares = Counter(j.leased_by for j in rows)
    assert set(shares) == {b.name for b in beats}, "both workers took a share of the receipts"
    assert sum(shares.values()) == 500


def test_sigterm_releases_a_job_still_running_after_the_grace_and_exits_0(
    make_receiver: Callable[..., HttpReceiver],
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    start_worker: Callable[..., Any],
) -> None:
    receiver = make_receiver(delays=(30.0,))
    siem = make_token("intake")
    give_webhook(session, siem, receiver.url, SECRET)
    _file(client, siem, 1)
    worker = start_worker(env={**WORKER_ENV, "UCSC_WORKER_SHUTDOWN_GRACE": "0.5", "UCSC_WORKER_THREADS": "1"})
    receiver.wait_for(1)
    [job] = _jobs(session)
    assert job.state == jobs.RUNNING
    time.sleep(1.2)  # the one job thread is stuck in the POST; the heartbeat (every 0.5 s) must go on
    [beat] = _heartbeats(session)
    assert utcnow() - beat.beat_at < timedelta(seconds=1)

    started = time.monotonic()
    code = worker.kill(signal.SIGTERM, timeout=10)
    took = time.monotonic() - started
    assert code == 0, worker.log()
    assert took < 3.0, f"exit took {took:.1f}s with a 0.5s grace"
    [job] = _jobs(session)
    assert (job.state, job.attempts, job.leased_by, job.lease_until) == (jobs.QUEUED, 0, None, None)
    assert job.run_at <= utcnow()
    [beat] = _heartbeats(session)
    assert beat.stopped_at is not None and beat.stopped_at >= beat.beat_at - timedelta(seconds=1)
    assert "released 1 lease(s)" in worker.log()


def test_sigterm_lets_a_job_finish_within_the_grace(
    make_receiver: Callable[..., HttpReceiver],
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    start_worker: Callable[..., Any],
) -> None:
    receiver = make_receiver(delays=(1.0,))
    siem = make_token("intake")
    give_webhook(session, siem, receiver.url, SECRET)
    _file(client, siem, 1)
    worker = start_worker(env={**WORKER_ENV, "UCSC_WORKER_SHUTDOWN_GRACE": "10"})
    receiver.wait_for(1)
    assert worker.kill(signal.SIGTERM, timeout=10) == 0
    [job] = _jobs(session)
    assert (job.state, job.attempts) == (jobs.DONE, 1)
    [beat] = _heartbeats(session)
    # The filing's other jobs (its playbook, its deadline clocks) may have run too; the receipt was this worker's.
    assert beat.stopped_at is not None and beat.jobs_run >= 1 and job.leased_by == beat.name


def test_healthz_reports_the_heartbeat_age_and_job_lag(
    session: Session, live_server: Any, start_worker: Callable[..., Any]
) -> None:
    _write(session, insert(Job), [jobs.job_values("idempotency.expire", run_at=utcnow() - timedelta(seconds=90))])
    before = requests.get(f"{live_server.url}/healthz", timeout=5).json()
    assert before["worker_heartbeat_age"] is None and before["worker_stale"] is True
    assert 90 <= before["job_lag"] < 120

    start_worker(env=WORKER_ENV)

    def healthy() -> dict | None:
        body = requests.get(f"{live_server.url}/healthz", timeout=5).json()
        return body if body["job_lag"] == 0 else None

    after = eventually(healthy)
    assert after["worker_heartbeat_age"] is not None and 0 <= after["worker_heartbeat_age"] < 2.0
    assert after["worker_stale"] is False and after["dead_jobs"] == 0
    time.sleep(1.2)  # the heartbeat (every 0.5 s here) keeps the age small
    again = requests.get(f"{live_server.url}/healthz", timeout=5).json()
    assert again["worker_heartbeat_age"] < 2.0
