"""The unit of work: every use case runs as one write transaction, run again when a race settled it."""

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

_RETRIES = 5
_RETRY_SQLSTATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure

T = TypeVar("T")
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
