"""Durable jobs (the outbox): enqueued in the causing transaction, leased by a worker, recorded in a second one.

A claim leases due jobs in one short transaction (PostgreSQL `FOR UPDATE SKIP LOCKED`; SQLite `BEGIN
IMMEDIATE`, where the lock clause is not rendered: one code path). The job's network call happens with no
transaction open; its outcome is written in another transaction that only counts while the lease is ours.
An expired lease is claimed again, so a job is run at least once; never twice while a lease is valid.
"""

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from incidents.base import utcnow
from incidents.events import notify_at_commit, record_event
from incidents.models import IdempotencyKey, Incident, Job, WorkerHeartbeat

log = logging.getLogger("ucsc.jobs")

QUEUED, RUNNING, DONE, DEAD = "queued", "running", "done", "dead"
# Set in session.info by `enqueue`, so a worker that commits new jobs runs them without waiting for a poll.
JOBS_WRITTEN = "wrote_jobs"
JOBS_CHANNEL = "ucsc_jobs"  # PostgreSQL NOTIFY channel: a hint to idle workers, the table is the truth


@dataclass(frozen=True)
class JobContext:
    """What a job's handler may use: a session factory (one session per call), settings and channels."""

    sessions: Callable[[], Session]
    config: dict[str, Any]
    notifiers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Callable[[JobContext, "ClaimedJob"], None]
    max_attempts: int = 8
    lease: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class ClaimedJob:
    """A leased job, detached from any session: the handler runs with no transaction open."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    idempotency_key: str | None
    incident_id: int | None
    run_at: datetime
    started_at: datetime
    worker: str = ""
    # Set by `finish`: the handler marked the job done in its own transaction (True), or found its lease gone.
    finished: list[bool] = field(default_factory=list, compare=False, repr=False)


# The kinds this process runs, filled by app/wiring.py: a kind must be known to be queued.
KINDS: dict[str, JobKind] = {}


def register(name: str, handler: Callable[[JobContext, ClaimedJob], None], *, max_attempts: int = 8,
             lease_seconds: float = 60) -> None:  # fmt: skip
    """Run jobs of `name` with `handler` in this process (app/wiring.py registers every kind)."""
    KINDS[name] = JobKind(name, handler, max_attempts, timedelta(seconds=lease_seconds))


class PermanentError(Exception):
    """A failure that no retry can mend (a malformed address, a receiver that refuses for good): dead at once."""


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    key: str | None = None,
    incident_id: int | None = None,
) -> None:
    """Add a job in the caller's transaction; a job whose `key` exists already is not added again."""
    enqueue_many(session, [job_values(kind, payload, run_at=run_at, key=key, incident_id=incident_id)])


def job_values(
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    key: str | None = None,
    incident_id: int | None = None,
) -> dict[str, Any]:
    """One row for `enqueue_many`."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    now = utcnow()
    return {
        "kind": kind,
        "payload": payload or {},
        "run_at": run_at or now,
        "state": QUEUED,
        "attempts": 0,
        "max_attempts": KINDS[kind].max_attempts,
        "idempotency_key": key,
        "incident_id": incident_id,
        "created_at": now,
    }


def enqueue_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Add jobs (rows from `job_values`) with one INSERT in the caller's transaction."""
    if not rows:
        return
    session.execute(_insert_job(session.get_bind().dialect.name), list(rows))
    notify_at_commit(session, JOBS_CHANNEL)  # wakes the workers when this commits
    session.info[JOBS_WRITTEN] = True


@cache
def _insert_job(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(Job.__table__).on_conflict_do_nothing(index_elements=["idempotency_key"])


def _due(now: datetime) -> Any:
    return or_(
        (Job.state == QUEUED) & (Job.run_at <= now),
        (Job.state == RUNNING) & (Job.lease_until < now),  # a worker died holding it
    )


def next_due_at(session: Session, kinds: Sequence[str] | None = None) -> datetime | None:
    """When the next job (of `kinds`, default all) falls due: a read, checked before any write lock is taken."""
    queued = select(func.min(Job.run_at)).where(Job.state == QUEUED)
    expired = select(func.min(Job.lease_until)).where(Job.state == RUNNING)
    if kinds is not None:
        queued, expired = queued.where(Job.kind.in_(kinds)), expired.where(Job.kind.in_(kinds))
    times = [t for t in (session.scalar(queued), session.scalar(expired)) if t is not None]
    session.rollback()
    return min(times) if times else None


def claim(session: Session, worker: str, limit: int, kinds: Sequence[str] | None = None) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs to `worker` in one short write transaction, and return them."""
    now = utcnow()
    known = list(kinds or KINDS)
    with session.begin():
        session.connection(execution_options={"ucsc_write": True})
        ids = select(Job.id).where(_due(now), Job.kind.in_(known)).order_by(Job.run_at, Job.id).limit(limit)
        ids = ids.with_for_update(skip_locked=True)
        chosen = list(session.scalars(ids))
        if not chosen:
            return []
        rows = session.execute(
            select(Job).where(Job.id.in_(chosen)).execution_options(populate_existing=True)
        ).scalars()
        claimed = []
        for job in rows:
            lease = KINDS[job.kind].lease
            job.state, job.attempts, job.leased_by = RUNNING, job.attempts + 1, worker
            job.lease_until, job.started_at = now + lease, now
            claimed.append(
                ClaimedJob(
                    job.id, job.kind, dict(job.payload), job.attempts, job.max_attempts, job.idempotency_key,
                    job.incident_id, job.run_at, now, worker,
                )
            )  # fmt: skip
    return sorted(claimed, key=lambda j: (j.run_at, j.id))


def _mine(job: ClaimedJob, worker: str) -> Any:
    """The lease is still ours: a job whose lease expired and went to another worker is theirs to record."""
    return (Job.id == job.id) & (Job.state == RUNNING) & (Job.leased_by == worker) & (Job.attempts == job.attempts)


def complete(session: Session, job: ClaimedJob, worker: str) -> bool:
    """Record success; False when the lease had already passed to another worker."""
    with session.begin():
        session.connection(execution_options={"ucsc_write": True})
        return _done(session, job, worker)


def finish(session: Session, job: ClaimedJob) -> bool:
    """Mark `job` done inside the handler's own last write transaction, so its outcome and the job's end commit
    together (one write transaction instead of two); the worker then does not complete it again."""
    ok = _done(session, job, job.worker)
    job.finished[:] = [ok]  # a retried transaction runs this again: the last attempt's answer stands
    return ok


def absorb(session: Session, job: ClaimedJob, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` more due jobs of `job`'s kind, marked done in the caller's write transaction, their payloads
    oldest first: a handler that does several jobs' work in one transaction takes them along (`job` itself is
    ended by `finish`). They commit or roll back with that work; a rolled-back batch leaves them queued, and a
    retried job takes none along, so one that keeps failing does not hold back the others."""
    if limit <= 0 or job.attempts > 1:
        return []
    now = utcnow()
    rows = session.execute(
        select(Job.id, Job.payload)
        .where(Job.kind == job.kind, Job.state == QUEUED, Job.run_at <= now, Job.id != job.id)
        .order_by(Job.run_at, Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    session.execute(
        update(Job)
        .where(Job.id.in_([row.id for row in rows]))
        .values(state=DONE, attempts=Job.attempts + 1, leased_by=job.worker, started_at=now, finished_at=now)
    )
    _count_run(session, job.worker, len(rows))
    return [dict(row.payload) for row in rows]


def _done(session: Session, job: ClaimedJob, worker: str) -> bool:
    done = session.execute(
        update(Job)
        .where(_mine(job, worker))
        .values(state=DONE, lease_until=None, finished_at=utcnow(), last_error=None)
    )
    if done.rowcount != 1:
        return False
    _count_run(session, worker)
    return True


def fail(session: Session, job: ClaimedJob, worker: str, error: str, *, permanent: bool = False) -> str | None:
    """Record a failure: retry later with backoff and jitter, or `dead` after the last attempt (an alarm event)."""
    error = error[:2000]
    dead = permanent or job.attempts >= job.max_attempts
    with session.begin():
        session.connection(execution_options={"ucsc_write": True})
        if dead:
            values: dict[str, Any] = {"state": DEAD, "lease_until": None, "finished_at": utcnow()}
        else:
            values = {"state": QUEUED, "lease_until": None, "run_at": utcnow() + backoff(job.attempts)}
        changed = session.execute(update(Job).where(_mine(job, worker)).values(last_error=error, **values))
        if changed.rowcount != 1:
            return None
        _count_run(session, worker)
        if dead:
            incident = None
            if job.incident_id is not None:
                incident = session.get(Incident, job.incident_id)
            record_event(
                session,
                kind="job.dead",
                actor=None,
                incident=incident,
                note=f"{job.kind} failed {job.attempts} time(s): {error}"[:1000],
                data={"job_id": job.id, "job_kind": job.kind, "attempts": job.attempts, "error": error},
            )
    return values["state"]


def release(session: Session, jobs: Sequence[ClaimedJob], worker: str) -> int:
    """Give back leases of jobs that did not run (a worker stopping): they are due again at once."""
    if not jobs:
        return 0
    with session.begin():
        session.connection(execution_options={"ucsc_write": True})
        released = 0
        for job in jobs:
            result = session.execute(
                update(Job)
                .where(_mine(job, worker))
                .values(state=QUEUED, lease_until=None, leased_by=None, attempts=Job.attempts - 1, run_at=utcnow())
            )
            released += result.rowcount
    return released


def backoff(attempts: int, *, base: float = 2.0, cap: float = 900.0) -> timedelta:
    """Exponential backoff with full jitter: a random wait up to base·2^(attempts-1) seconds, at most `cap`."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not a secret


# The jobs a process's workers ran whose outcomes committed, not yet added to their heartbeat rows: each job's
# transaction adding one to its worker's row made that row the worker's hottest lock (PostgreSQL: its threads and
# the Telegram leader queued on it for seconds under load, bench/telegram.py), so the beat adds them instead.
_RUNS_IN_TRANSACTION = "ucsc.jobs_run"
_runs_committed: Counter[str] = Counter()
_runs_lock = threading.Lock()


def _count_run(session: Session, worker: str, runs: int = 1) -> None:
    """Count `runs` for `worker` if this transaction commits (`_runs_kept`); its next beat records them."""
    session.info.setdefault(_RUNS_IN_TRANSACTION, Counter())[worker] += runs


def install() -> None:
    """Have every Session keep the runs it counted when it commits and drop them when it rolls back (registered by
    app/wiring.py)."""
    for name, listener in (("after_commit", _runs_kept), ("after_rollback", _runs_dropped)):
        if not sa_event.contains(Session, name, listener):
            sa_event.listen(Session, name, listener)


def _runs_kept(session: Session) -> None:
    counted = session.info.pop(_RUNS_IN_TRANSACTION, None)
    if counted:
        with _runs_lock:
            _runs_committed.update(counted)


def _runs_dropped(session: Session) -> None:
    session.info.pop(_RUNS_IN_TRANSACTION, None)


def beat(session: Session, worker: str, *, started: datetime | None = None, stopped: bool = False) -> None:
    """Stamp this worker's heartbeat row (created on first beat) and add the jobs it ran since the last beat."""
    now = utcnow()
    with _runs_lock:
        runs = _runs_committed.pop(worker, 0)
    try:
        with session.begin():
            session.connection(execution_options={"ucsc_write": True})
            row = session.get(WorkerHeartbeat, worker)
            if row is None:
                session.add(WorkerHeartbeat(name=worker, started_at=started or now, beat_at=now, jobs_run=runs))
            else:
                row.beat_at = now
                row.stopped_at = now if stopped else None
                row.jobs_run += runs
    except BaseException:
        with _runs_lock:
            _runs_committed[worker] += runs  # the next beat adds them
        raise


def health(engine: Engine) -> dict[str, Any]:
    """The worker's heartbeat age and the job lag (how long the oldest due job has waited), for /healthz."""
    now = utcnow()
    with Session(engine) as session:
        last_beat = session.scalar(
            select(func.max(WorkerHeartbeat.beat_at)).where(WorkerHeartbeat.stopped_at.is_(None))
        )
        oldest_due = session.scalar(select(func.min(Job.run_at)).where(Job.state == QUEUED, Job.run_at <= now))
        dead = session.scalar(select(func.count()).select_from(Job).where(Job.state == DEAD))
    return {
        "worker_heartbeat_age": round((now - last_beat).total_seconds(), 3) if last_beat else None,
        "job_lag": round((now - oldest_due).total_seconds(), 3) if oldest_due else 0.0,
        "dead_jobs": dead or 0,
    }


# --- job kinds of the platform ----------------------------------------------------------------------------------

EXPIRE = "idempotency.expire"
EXPIRE_EVERY = timedelta(hours=1)


def expire_idempotency_keys(ctx: JobContext, job: ClaimedJob) -> None:
    """Delete Idempotency-Keys past their 24 hours, and schedule the next sweep."""
    with ctx.sessions() as session, session.begin():
        session.connection(execution_options={"ucsc_write": True})
        gone = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < utcnow())).rowcount
        schedule_sweep(session, after=job.run_at)
    log.info("expired %d idempotency key(s)", gone)


def schedule_sweep(session: Session, *, after: datetime | None = None) -> None:
    """Make sure the next hourly sweep is queued (one per hour slot, whoever asks)."""
    slot = (after or utcnow()) + EXPIRE_EVERY
    slot = slot.replace(minute=0, second=0, microsecond=0)
    enqueue(session, EXPIRE, run_at=slot, key=f"{EXPIRE}:{slot:%Y-%m-%dT%H}")
