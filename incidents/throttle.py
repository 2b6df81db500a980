"""Password attempts counted per source address and account, with exponential backoff, in the shared database."""

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from incidents.base import utcnow
from incidents.models import SigninThrottle

ANY_ACCOUNT = ""  # the row that counts one address's attempts on every account (password spraying)
_PURGE_BATCH = 100


@dataclass(frozen=True)
class Rules:
    """Free attempts per address and account and per address overall, then waits of 1, 2, 4 … s up to `cap`."""

    free_per_account: int = 5
    free_per_address: int = 20
    cap: timedelta = timedelta(minutes=15)
    forget: timedelta = timedelta(hours=1)  # a count starts again after this long without an attempt


@dataclass(frozen=True)
class Claim:
    """`wait` > 0: refused unchecked, try again then; else the attempt is counted and `next_wait` follows it."""

    wait: timedelta
    next_wait: timedelta = timedelta(0)


def source_key(address: str | None) -> str:
    """The address attempts are counted against: an IPv6 client by its /64, which one host usually holds whole."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "")[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def backoff(attempts: int, free: int, cap: timedelta) -> timedelta:
    """The wait after `attempts` counted attempts: none while they are free, then doubling from one second."""
    if attempts < free:
        return timedelta(0)
    return min(cap, timedelta(seconds=2 ** min(attempts - free, 30)))


def _row(session: Session, source: str, account: str, now: datetime, rules: Rules) -> SigninThrottle:
    row = session.scalar(
        select(SigninThrottle)
        .where(SigninThrottle.source == source, SigninThrottle.account == account)
        .with_for_update()
    )
    if row is None:
        # Two first attempts at once: the unique index refuses one and in_transaction runs it again.
        row = SigninThrottle(source=source, account=account, attempts=0, next_at=now, last_at=now)
        session.add(row)
        session.flush()
    elif row.last_at <= now - rules.forget:
        row.attempts = 0
    return row


def _purge(session: Session, now: datetime, rules: Rules) -> None:
    # SKIP LOCKED: a row another attempt holds is left for later instead of waited for (no deadlock between purges).
    stale = (
        select(SigninThrottle.id)
        .where(SigninThrottle.last_at <= now - rules.forget, SigninThrottle.next_at <= now)
        .limit(_PURGE_BATCH)
        .with_for_update(skip_locked=True)
    )
    session.execute(delete(SigninThrottle).where(SigninThrottle.id.in_(stale)))


def claim(*, session: Session, source: str, account: str, rules: Rules) -> Claim:
    """Count an attempt before the password is checked, so parallel tries from one address cannot outrun the count.

    Runs in the caller's write transaction; the account's row is locked before the address's, always in that order.
    """
    now = utcnow()
    _purge(session, now, rules)
    rows = [(_row(session, source, account[:150], now, rules), rules.free_per_account)] if account else []
    rows.append((_row(session, source, ANY_ACCOUNT, now, rules), rules.free_per_address))
    # The time once the rows are ours: a try that waited for another's lock must not find that try's "now" ahead.
    now = utcnow()
    wait = max(row.next_at for row, _ in rows) - now
    if wait > timedelta(0):
        return Claim(wait)
    for row, free in rows:
        row.attempts += 1
        row.last_at = now
        row.next_at = now + backoff(row.attempts, free, rules.cap)
    return Claim(timedelta(0), max(row.next_at for row, _ in rows) - now)


def release(*, session: Session, source: str, account: str, rules: Rules, now: datetime) -> None:
    """A right password: the address's count for that account ends, and the attempt no longer counts as spraying."""
    if account:
        session.execute(
            delete(SigninThrottle).where(SigninThrottle.source == source, SigninThrottle.account == account[:150])
        )
    overall = _row(session, source, ANY_ACCOUNT, now, rules)
    overall.attempts = max(0, overall.attempts - 1)
    if overall.attempts < rules.free_per_address:
        overall.next_at = now
