"""The unit of work: every use case runs as one write transaction, run again when a race settled it."""

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

_RETRIES = 5
_RETRY_SQLSTATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure

T = TypeVar("T")
J = TypeVar("J")
R = TypeVar("R")
_MEMO = "ucsc.transaction_memo"


def in_transaction(session: Session, work: Callable[[], T]) -> T:
    """Run `work` in one transaction, retrying when a unique index settled a race against us."""
    if session.in_transaction():
        session.commit()  # end the caller's read-only transaction (token lookup) before the write begins
    for attempt in range(_RETRIES):
        try:
            with session.begin():
                # SQLite: make this a BEGIN IMMEDIATE write transaction (app/db.py reads the option).
                session.connection(execution_options={"ucsc_write": True})
                # PostgreSQL: the feed lock is taken at commit, when the events are written (events.write_pending).
                return work()
        except IntegrityError:
            if attempt == _RETRIES - 1:
                raise
        except DBAPIError as exc:
            # A deadlock or serialisation failure (PostgreSQL) rolled the whole transaction back: run it again.
            if getattr(exc.orig, "sqlstate", None) not in _RETRY_SQLSTATES or attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def transaction_memo(session: Session, name: str) -> dict[Any, Any]:
    """A dict named `name` that lasts as long as the session's current transaction: what a batch reads once (the
    worker starting the playbooks of 500 filings reads each organisation's on-call once), gone with the commit."""
    tx = session.get_transaction()
    held = session.info.get(_MEMO)
    if held is None or held[0] is not tx:
        held = (tx, {})
        session.info[_MEMO] = held
    return held[1].setdefault(name, {})


class GroupCommit(Generic[J, R]):
    """Group commit: the requests of a process that arrive while one write transaction runs share the next.

    A request comes in as a job. With no transaction of the group running, it leads: it yields once (under gevent
    the requests already read reach the queue meanwhile), takes the jobs queued (at most `most`), runs them in one
    write transaction on its own session, hands each its outcome and the lead to the first job still queued. A
    request alone runs at once, in a transaction of its own; a storm of them pays one BEGIN, one source read and
    one COMMIT per transaction instead of per request.

    `run_batch(session, jobs)` runs inside the transaction and gives one outcome per job: a result, or an exception
    that is that job's alone (raised to its request). If the transaction fails as a whole, each of its jobs runs
    again alone through `run_alone(session, job)` on its own session, as does a job whose outcome is RunAlone:
    one bad request costs the others time, never their answers.
    """

    def __init__(
        self,
        run_batch: Callable[[Any, Sequence[J]], Sequence[R | Exception]],
        run_alone: Callable[[Any, J], R],
        *,
        most: int = 64,
    ) -> None:
        self._run_batch = run_batch
        self._run_alone = run_alone
        self._most = most
        self._lock = threading.Lock()
        self._queue: list[_Job[J, R]] = []
        self._leading = False
        self.transactions = 0  # shared transactions run, and the jobs they carried: how much was shared
        self.jobs = 0

    def submit(self, session: Callable[[], Session], job: J) -> R:
        """`job`'s result, run in the group's next transaction (or alone); its exception raised. `session` gives the
        caller's session, asked for only if this job leads a transaction or runs alone: a job another one carries
        needs none (an ORM session costs 4 % of an alert repeat's CPU to make and close)."""
        mine = _Job[J, R](job)
        with self._lock:
            self._queue.append(mine)
            mine.leads, self._leading = not self._leading, True
        if not mine.leads:
            mine.ready.wait()
        if mine.leads:
            self._lead(session())
        outcome = mine.outcome
        if isinstance(outcome, RunAlone):
            return self._run_alone(session(), job)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]

    def _lead(self, session: Session) -> None:
        time.sleep(0)  # the requests ready to run queue their jobs before the batch is taken
        with self._lock:
            batch, self._queue = self._queue[: self._most], self._queue[self._most :]
            self.transactions += 1
            self.jobs += len(batch)
        outcomes: Sequence[Any] = [_RUN_ALONE] * len(batch)
        try:
            outcomes = in_transaction(session, lambda: self._run_batch(session, [j.job for j in batch]))
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [exc]
        finally:
            for job, outcome in zip(batch, outcomes, strict=True):
                job.outcome = outcome
                job.ready.set()
            with self._lock:
                if self._queue:
                    self._queue[0].leads = True
                    self._queue[0].ready.set()
                else:
                    self._leading = False


class RunAlone(Exception):
    """The outcome of a job that cannot share its transaction (it repeats an idempotency key another job of it
    claims), or whose shared transaction failed: it runs in a transaction of its own once that one is over."""


_RUN_ALONE = RunAlone()


class _Job(Generic[J, R]):
    def __init__(self, job: J) -> None:
        self.job = job
        self.ready = threading.Event()
        self.leads = False
        self.outcome: R | Exception = _RUN_ALONE
