"""The jobs table (the outbox) in-process on both backends: keys, leases, stale holders, backoff, dead jobs."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from incidents import jobs, receipts
from incidents.base import utcnow
from incidents.models import Event, Job, WorkerHeartbeat
from tests.conftest import incident_payload

KIND = "test.echo"
ONE, TWO = "host:1", "host:2"


def _nothing(_ctx: jobs.JobContext, _job: jobs.ClaimedJob) -> None:
    """A handler the in-process tests never call: they play the worker's part themselves."""


@pytest.fixture(autouse=True)
def echo_kind(monkeypatch: pytest.MonkeyPatch) -> jobs.JobKind:
    """A job kind of this module's own: three attempts, a 30 s lease."""
    kind = jobs.JobKind(KIND, _nothing, max_attempts=3, lease=timedelta(seconds=30))
    monkeypatch.setitem(jobs.KINDS, KIND, kind)
    return kind


@contextmanager
def write(session: Session) -> Iterator[Session]:
    """One write transaction (BEGIN IMMEDIATE on SQLite), after ending whatever read the session had open."""
    session.rollback()
    with session.begin():
        session.connection(execution_options={"ucsc_write": True})
        yield session


def enqueue(
    session: Session, *, run_at: datetime | None = None, key: str | None = None, incident_id: int | None = None
) -> None:
    """Queue one job of the test kind in its own transaction."""
    with write(session):
        jobs.enqueue(session, KIND, {"n": 1}, run_at=run_at, key=key, incident_id=incident_id)


def claim(session: Session, worker: str = ONE, limit: int = 10) -> list[jobs.ClaimedJob]:
    session.rollback()
    return jobs.claim(session, worker, limit, kinds=[KIND])


def rows(session: Session) -> list[Job]:
    session.rollback()
    return list(session.scalars(select(Job).where(Job.kind == KIND).order_by(Job.id)))


def expire_leases(session: Session) -> None:
    """Make every lease run out, as time would."""
    with write(session):
        session.execute(
            update(Job).where(Job.state == jobs.RUNNING).values(lease_until=utcnow() - timedelta(seconds=1))
        )


def make_due(session: Session) -> None:
    with write(session):
        session.execute(update(Job).where(Job.state == jobs.QUEUED).values(run_at=utcnow() - timedelta(seconds=1)))


def around(value: datetime | None, expected: datetime, slack: float = 2.0) -> bool:
    return value is not None and abs((value - expected).total_seconds()) <= slack


def test_enqueue_with_the_same_key_twice_makes_one_row(session: Session) -> None:
    enqueue(session, key="receipt:1")
    enqueue(session, key="receipt:1")
    with write(session):
        jobs.enqueue_many(session, [jobs.job_values(KIND, {"n": 2}, key="receipt:1")] * 2)
    enqueue(session)
    enqueue(session)  # without a key nothing is deduplicated
    assert [(j.idempotency_key, j.payload, j.state, j.attempts, j.max_attempts) for j in rows(session)] == [
        ("receipt:1", {"n": 1}, jobs.QUEUED, 0, 3),
        (None, {"n": 1}, jobs.QUEUED, 0, 3),
        (None, {"n": 1}, jobs.QUEUED, 0, 3),
    ]


def test_an_unknown_kind_is_refused_at_enqueue(session: Session) -> None:
    with pytest.raises(ValueError, match="unknown job kind"):
        jobs.job_values("no.such.kind")


def test_claim_leases_due_jobs_only_and_not_while_the_lease_is_valid(session: Session) -> None:
    enqueue(session, key="due")
    enqueue(session, key="later", run_at=utcnow() + timedelta(minutes=5))
    before = utcnow()

    [job] = claim(session)
    assert (job.kind, job.payload, job.attempts, job.max_attempts, job.idempotency_key) == (KIND, {"n": 1}, 1, 3, "due")
    due, later = rows(session)
    assert (due.state, due.attempts, due.leased_by) == (jobs.RUNNING, 1, ONE)
    assert around(due.lease_until, before + timedelta(seconds=30)) and around(due.started_at, before)
    assert (later.state, later.attempts, later.leased_by) == (jobs.QUEUED, 0, None)

    assert claim(session, TWO) == []
    assert claim(session, ONE) == []  # not even its holder takes it twice


def test_claim_takes_at_most_limit_jobs_oldest_first(session: Session) -> None:
    now = utcnow()
    for n in range(5):
        enqueue(session, key=f"k{n}", run_at=now - timedelta(seconds=n))
    first = claim(session, ONE, limit=2)
    second = claim(session, TWO, limit=10)
    assert [j.idempotency_key for j in first] == ["k4", "k3"]
    assert [j.idempotency_key for j in second] == ["k2", "k1", "k0"]


def test_an_expired_lease_is_claimed_again_and_only_the_new_holder_may_record(session: Session) -> None:
    enqueue(session, key="once")
    session.rollback()
    jobs.beat(session, ONE)
    jobs.beat(session, TWO)
    [stale] = claim(session, ONE)
    expire_leases(session)

    [fresh] = claim(session, TWO)
    assert (fresh.id, fresh.attempts) == (stale.id, 2)
    [row] = rows(session)
    assert (row.state, row.attempts, row.leased_by) == (jobs.RUNNING, 2, TWO)

    session.rollback()
    assert jobs.complete(session, stale, ONE) is False
    assert jobs.fail(session, stale, ONE, "late failure") is None
    assert jobs.release(session, [stale], ONE) == 0
    [row] = rows(session)
    assert (row.state, row.leased_by, row.last_error) == (jobs.RUNNING, TWO, None)

    session.rollback()
    assert jobs.complete(session, fresh, TWO) is True
    [row] = rows(session)
    assert (row.state, row.attempts, row.lease_until, row.last_error) == (jobs.DONE, 2, None, None)
    assert row.finished_at is not None
    session.rollback()
    for worker in (ONE, TWO):
        jobs.beat(session, worker)  # a beat adds the runs whose outcomes committed since the last one
    runs = dict(session.execute(select(WorkerHeartbeat.name, WorkerHeartbeat.jobs_run)).all())
    assert runs == {ONE: 0, TWO: 1}  # only a recorded outcome counts


def test_a_stale_holder_cannot_record_over_its_own_reclaimed_job(session: Session) -> None:
    """The same worker name claiming again (a restarted process reusing a pid) is told apart by attempts."""
    enqueue(session)
    [stale] = claim(session, ONE)
    expire_leases(session)
    [fresh] = claim(session, ONE)
    session.rollback()
    assert jobs.complete(session, stale, ONE) is False
    assert jobs.complete(session, fresh, ONE) is True


def test_a_failure_requeues_the_job_after_a_backoff(session: Session) -> None:
    enqueue(session)
    [job] = claim(session)
    before = utcnow()
    session.rollback()
    assert jobs.fail(session, job, ONE, "ConnectError: refused") == jobs.QUEUED
    [row] = rows(session)
    assert (row.state, row.attempts, row.lease_until, row.last_error) == (jobs.QUEUED, 1, None, "ConnectError: refused")
    # The first retry waits between 1 and 2 seconds (full jitter in the upper half of base·2^0).
    assert before + timedelta(seconds=1) <= row.run_at <= utcnow() + timedelta(seconds=2)
    assert claim(session) == []  # not due yet

    make_due(session)
    [again] = claim(session)
    assert again.attempts == 2
    session.rollback()
    jobs.fail(session, again, ONE, "HTTP 503")
    [row] = rows(session)
    assert row.run_at - utcnow() > timedelta(seconds=1.5)  # the second retry waits 2 to 4 s


def test_after_max_attempts_the_job_is_dead_and_an_event_names_its_incident(
    client: FlaskClient, operator: dict[str, str], session: Session
) -> None:
    filed = client.post("/api/v1/incidents", json=incident_payload(tlp="green"), headers=operator)
    assert filed.status_code == 201
    incident_id = filed.json["id"]
    enqueue(session, incident_id=incident_id, key="linked")

    states = []
    for _ in range(3):
        make_due(session)
        [job] = claim(session)
        session.rollback()
        states.append(jobs.fail(session, job, ONE, f"HTTP 500 on attempt {job.attempts}"))
    assert states == [jobs.QUEUED, jobs.QUEUED, jobs.DEAD]
    [row] = rows(session)
    assert (row.state, row.attempts, row.lease_until, row.last_error) == (jobs.DEAD, 3, None, "HTTP 500 on attempt 3")
    make_due(session)
    assert claim(session) == []  # dead stays dead

    [event] = session.scalars(select(Event).where(Event.kind == "job.dead"))
    assert (event.incident_id, event.tlp, event.actor, event.actor_id) == (incident_id, "green", "system", None)
    assert event.data == {"job_id": row.id, "job_kind": KIND, "attempts": 3, "error": "HTTP 500 on attempt 3"}
    assert "test.echo failed 3 time(s)" in event.note
    timeline = client.get(f"/api/v1/incidents/{incident_id}/events", headers=operator).json["items"]
    assert "job.dead" in [e["kind"] for e in timeline]


def test_a_dead_job_without_an_incident_still_raises_its_event(session: Session) -> None:
    enqueue(session)
    [job] = claim(session)
    session.rollback()
    assert jobs.fail(session, job, ONE, "boom", permanent=True) == jobs.DEAD
    [event] = session.scalars(select(Event).where(Event.kind == "job.dead"))
    assert event.incident_id is None and event.data["job_id"] == job.id


def test_a_permanent_error_makes_the_job_dead_at_its_first_attempt(session: Session, app: Flask) -> None:
    # A real handler that no retry can help: the receipt of an incident that does not exist.
    with write(session):
        jobs.enqueue(session, receipts.WEBHOOK, {"incident_id": 10**9, "token_id": 10**9}, key="gone")
    session.rollback()
    [job] = jobs.claim(session, ONE, 10, kinds=[receipts.WEBHOOK])
    context = jobs.JobContext(app.extensions["ucsc.sessionmaker"], dict(app.config))
    with pytest.raises(jobs.PermanentError) as refused:
        jobs.KINDS[receipts.WEBHOOK].handler(context, job)

    session.rollback()
    assert jobs.fail(session, job, ONE, f"PermanentError: {refused.value}", permanent=True) == jobs.DEAD
    session.rollback()
    row = session.scalars(select(Job).where(Job.idempotency_key == "gone")).one()
    assert (row.state, row.attempts, row.max_attempts) == (jobs.DEAD, 1, 8)
    assert row.last_error == "PermanentError: the token has no webhook any more"
    [event] = session.scalars(select(Event).where(Event.kind == "job.dead"))
    assert event.data["attempts"] == 1 and event.data["job_kind"] == receipts.WEBHOOK


def test_release_gives_leases_back_due_at_once_with_attempts_restored(session: Session) -> None:
    enqueue(session, key="a")
    enqueue(session, key="b")
    enqueue(session, key="c", run_at=utcnow() + timedelta(minutes=1))
    held = claim(session, ONE)
    assert [j.attempts for j in held] == [1, 1]
    session.rollback()
    assert jobs.release(session, [], ONE) == 0
    assert jobs.release(session, held, TWO) == 0  # not theirs to give back
    assert jobs.release(session, held, ONE) == 2
    a, b, c = rows(session)
    for row in (a, b):
        assert (row.state, row.attempts, row.leased_by, row.lease_until) == (jobs.QUEUED, 0, None, None)
        assert row.run_at <= utcnow()
    assert (c.state, c.attempts) == (jobs.QUEUED, 0)
    assert [j.idempotency_key for j in claim(session, TWO)] == ["a", "b"]


def test_absorb_takes_due_queued_jobs_of_the_kind_along_in_the_callers_transaction(session: Session) -> None:
    now = utcnow()
    for n in range(4):
        enqueue(session, key=f"k{n}", run_at=now - timedelta(seconds=10 - n))
    enqueue(session, key="later", run_at=now + timedelta(minutes=5))
    [job] = claim(session, ONE, limit=1)
    assert job.idempotency_key == "k0"

    # Rolled back with the work that took them: still queued, untouched.
    with pytest.raises(RuntimeError), write(session):
        assert len(jobs.absorb(session, job, 2)) == 2
        raise RuntimeError("the batch failed")
    assert [(r.state, r.attempts) for r in rows(session)][1:] == [(jobs.QUEUED, 0)] * 4

    with write(session):
        taken = jobs.absorb(session, job, 2)
    assert taken == [{"n": 1}, {"n": 1}]
    k0, k1, k2, k3, later = rows(session)
    for row in (k1, k2):  # the oldest two, done with the job that took them, by its worker
        assert (row.state, row.attempts, row.leased_by) == (jobs.DONE, 1, ONE) and row.finished_at is not None
    assert (k0.state, k3.state, later.state) == (jobs.RUNNING, jobs.QUEUED, jobs.QUEUED)
    # A job on a retry takes none along: a batch that keeps failing does not hold the others back.
    retried = jobs.ClaimedJob(**{**job.__dict__, "attempts": 2})
    with write(session):
        assert jobs.absorb(session, retried, 10) == []
    assert rows(session)[3].state == jobs.QUEUED


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    for attempts in range(1, 16):
        ceiling = min(900.0, 2.0 * 2 ** (attempts - 1))
        waits = [jobs.backoff(attempts).total_seconds() for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), attempts
        assert len(set(waits)) > 150  # jittered, so a crowd of retries does not arrive together
    assert max(jobs.backoff(30).total_seconds() for _ in range(200)) <= 900
    assert min(jobs.backoff(30).total_seconds() for _ in range(200)) >= 450
    assert jobs.backoff(0) <= timedelta(seconds=2)
    assert jobs.backoff(3, base=1, cap=3) <= timedelta(seconds=3)


def test_next_due_at_is_the_earliest_queued_run_or_lease_expiry(session: Session) -> None:
    assert jobs.next_due_at(session) is None
    now = utcnow()
    enqueue(session, key="late", run_at=now + timedelta(minutes=10))
    assert around(jobs.next_due_at(session), now + timedelta(minutes=10), 0.01)
    enqueue(session, key="soon", run_at=now + timedelta(minutes=1))
    assert around(jobs.next_due_at(session), now + timedelta(minutes=1), 0.01)

    with write(session):
        session.execute(update(Job).where(Job.idempotency_key == "soon").values(run_at=now - timedelta(seconds=5)))
    [held] = claim(session)
    # A running job falls due again when its 30 s lease runs out, before the queued one at +10 min.
    lease_until = rows(session)[1].lease_until
    assert jobs.next_due_at(session) == lease_until
    session.rollback()
    jobs.complete(session, held, ONE)
    assert around(jobs.next_due_at(session), now + timedelta(minutes=10), 0.01)
    assert not session.in_transaction()  # an idle poll leaves no read transaction open


def test_health_reports_the_live_heartbeat_age_the_job_lag_and_dead_jobs(session: Session, app: Flask) -> None:
    engine = app.extensions["ucsc.engine"]
    assert jobs.health(engine) == {"worker_heartbeat_age": None, "job_lag": 0.0, "dead_jobs": 0}

    enqueue(session, key="doomed")
    [doomed] = claim(session)
    session.rollback()
    jobs.fail(session, doomed, ONE, "no", permanent=True)
    enqueue(session, key="waiting", run_at=utcnow() - timedelta(seconds=30))
    enqueue(session, key="future", run_at=utcnow() + timedelta(minutes=5))
    session.rollback()
    jobs.beat(session, ONE, started=utcnow() - timedelta(hours=1))

    health = jobs.health(engine)
    assert 0 <= health["worker_heartbeat_age"] < 2
    assert 30 <= health["job_lag"] < 35  # the oldest due job; one not yet due is no lag
    assert health["dead_jobs"] == 1

    # A worker that stopped cleanly no longer counts as alive; one that went quiet shows its age.
    session.rollback()
    jobs.beat(session, ONE, stopped=True)
    assert jobs.health(engine)["worker_heartbeat_age"] is None
    session.rollback()
    jobs.beat(session, TWO)
    assert jobs.health(engine)["worker_heartbeat_age"] < 2
    with write(session):
        session.execute(
            update(WorkerHeartbeat).where(WorkerHeartbeat.name == TWO).values(beat_at=utcnow() - timedelta(seconds=40))
        )
    assert 40 <= jobs.health(engine)["worker_heartbeat_age"] < 45
