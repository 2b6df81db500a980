"""Bearer tokens (with a short cache of verified digests), /live credentials, and per-token intake rate limits."""

import hashlib
import secrets
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, current_app, g, has_request_context, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app import db
from app.errors import ApiError, retry_after
from incidents import accounts, audit, signin, throttle
from incidents.access import Actor
from incidents.base import utcnow
from incidents.enums import Role
from incidents.models import ApiToken, BrowserSession, User
from incidents.uow import in_transaction

TOKEN_PREFIX = "ucsc_"  # noqa: S105 - a label that tokens start with, not a secret
# Routes for senders that cannot set a header (Wazuh's integratord, Splunk) take the token as `?key=`; the access
# logs redact it (app/observability.py).
QUERY_KEY_ENDPOINTS = frozenset({"api.post_source_alert"})
FAILURE_AUDIT_SECONDS = 10.0  # at most one login.failed row per source address in this window


def signin_policy() -> signin.Policy:
    """How browsers sign in here: lockout, throttling, session lifetime and the roles that need a second factor."""
    c = current_app.config
    roles = c["TOTP_REQUIRED_ROLES"]
    if isinstance(roles, str):
        roles = [r.strip() for r in roles.split(",") if r.strip()]
    return signin.Policy(
        max_failures=int(c["LOGIN_MAX_FAILURES"]),
        lockout=timedelta(seconds=float(c["LOGIN_LOCKOUT_SECONDS"])),
        throttle_rules=throttle.Rules(
            free_per_account=int(c["LOGIN_FREE_FAILURES"]),
            free_per_address=int(c["LOGIN_ADDRESS_FREE_FAILURES"]),
            cap=timedelta(seconds=float(c["LOGIN_BACKOFF_CAP_SECONDS"])),
            forget=timedelta(seconds=float(c["LOGIN_FORGET_SECONDS"])),
        ),
        session_lifetime=timedelta(seconds=float(c["WEB_SESSION_SECONDS"])),
        totp_required_roles=frozenset(roles),
    )


def new_token() -> tuple[str, str]:
    """A fresh random token and the digest that is stored in its place."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is as safe as a slow one and costs nothing per request.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Cached:
    actor: Actor
    until: float


class TokenCache:
    """Digests verified in the last few seconds, so a busy SIEM does not cost a query per request."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._items: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Actor | None:
        item = self._items.get(key)
        if item is None or item.until < time.monotonic():
            return None
        return item.actor

    def put(self, key: str, actor: Actor) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = _Cached(actor, time.monotonic() + self.seconds)


def _unauthorised(detail: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="ucsc"'})


def current_actor() -> Actor:
    """The caller of this request, from `Authorization: Bearer TOKEN`; 401 without a valid token."""
    if "actor" in g:
        return g.actor
    header = request.headers.get("Authorization", "")
    if not header and request.endpoint in QUERY_KEY_ENDPOINTS and request.args.get("key"):
        header = "Bearer " + request.args["key"]
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorised("send Authorization: Bearer TOKEN")
    actor, refusal = check_token(token.strip())
    if actor is None:
        raise _unauthorised(refusal)
    g.actor = actor
    return actor


class FailureGuard:
    """Failed logins per source address: admits one audit row per window, counting the ones it holds back."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def admit(self, source: str) -> int | None:
        """None within the window of the last admitted row; else how many failures went unrecorded since it."""
        now = time.monotonic()
        with self._lock:
            last, held_back = self._last.get(source, (-self.seconds, 0))
            if now - last < self.seconds:
                self._last[source] = (last, held_back + 1)
                return None
            if len(self._last) > 10_000:
                self._last.clear()
            self._last[source] = (now, 0)
            return held_back


def check_token(token: str, *, cached: bool = True) -> tuple[Actor | None, str]:
    """The actor a bearer token stands for, or None and why not (unknown, revoked, expired)."""
    actor, refusal = _lookup(token, cached)
    if actor is None:
        _audit_failure(token, refusal)
    return actor, refusal


def _audit_failure(token: str, refusal: str) -> None:
    """Record a refused token as `login.failed`, in a short write transaction of its own."""
    source_ip = request.remote_addr if has_request_context() else None
    guard: FailureGuard = current_app.extensions["ucsc.login_failures"]
    held_back = guard.admit(source_ip or "")
    if held_back is None:
        return  # a flood from one address: the rate limit answers it, one row per window records it
    data: dict[str, object] = {"reason": refusal}
    if held_back:
        data["unrecorded_before"] = held_back
    # A fresh session: the request's may be inside a transaction of its own that this must not commit.
    with current_app.extensions["ucsc.sessionmaker"]() as session:
        in_transaction(
            session,
            lambda: audit.append(session, action=audit.Action.LOGIN_FAILED, actor="token:" + token[:8],
                                 source_ip=source_ip, data=data),
        )  # fmt: skip


def _lookup(token: str, cached: bool) -> tuple[Actor | None, str]:
    key = digest(token)
    cache: TokenCache = current_app.extensions["ucsc.token_cache"]
    actor = cache.get(key) if cached else None
    if actor is not None:
        return actor, ""
    row = db.session().execute(select(ApiToken, User).join(User).where(ApiToken.digest == key)).first()
    if row is None:
        return None, "unknown token"
    api_token, user = row
    now = utcnow()
    if api_token.revoked_at is not None or (api_token.expires_at and api_token.expires_at <= now) or not user.active:
        return None, "token revoked or expired"
    if not accounts.token_role_allowed(api_token.role, user.role):
        return None, "the token's role is more than its user's role now"
    actor = Actor(
        user_id=user.id,
        username=user.username,
        role=Role(api_token.role),
        organisation_id=user.organisation_id,
        token_id=api_token.id,
    )
    cache.put(key, actor)
    return actor, ""


@dataclass(frozen=True)
class Credential:
    """What a live connection was opened with, by row id: an API token or a browser session."""

    kind: str  # "token" | "browser"
    id: int


@dataclass(frozen=True)
class Identity:
    """Who a credential stands for now; `as_self` unless it is a token acting with another role than its user's."""

    actor: Actor
    as_self: bool = True


def token_credential(token: str) -> tuple[Identity, Credential] | None:
    # Read afresh: a socket lives for hours, so the request cache's few seconds of grace do not apply to it.
    actor = check_token(token, cached=False)[0]
    if actor is None or actor.token_id is None:
        return None
    own_role = db.session().scalar(select(User.role).where(User.id == actor.user_id))
    return Identity(actor, str(own_role) == actor.role), Credential("token", actor.token_id)


def browser_credential(key: str) -> tuple[Identity, Credential] | None:
    """A Flask-Login session key's actor; only a live `browser_sessions` row counts, never a bare user id."""
    found = signin.load_session(db.session(), key)
    if found is None:
        return None
    browser, user = found
    if _owes_second_factor(str(user.role), bool(user.totp_secret)):
        return None  # no page and no feed until the second factor is set up
    return Identity(signin.actor_of(user)), Credential("browser", browser.id)


def _owes_second_factor(role: str, has_totp: bool) -> bool:
    return not has_totp and role in signin_policy().totp_required_roles


def valid_identities(session: Session, credentials: Collection[Credential]) -> dict[Credential, Identity]:
    """Who each credential stands for now, read from the database (never the cache); revoked, expired,
    deactivated or second-factor-owing ones are absent."""
    now = utcnow()
    tokens = {c.id for c in credentials if c.kind == "token"}
    browsers = {c.id for c in credentials if c.kind == "browser"}
    found: dict[Credential, Identity] = {}
    if tokens:
        rows = session.execute(
            select(ApiToken.id, ApiToken.role, User.id, User.username, User.organisation_id, User.role)
            .join(User)
            .where(ApiToken.id.in_(tokens), ApiToken.revoked_at.is_(None), User.active)
            .where(or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now))
        )
        for token_id, role, user_id, username, org, own_role in rows:
            if not accounts.token_role_allowed(role, own_role):
                continue
            actor = Actor(user_id, username, Role(role), org, token_id)
            found[Credential("token", token_id)] = Identity(actor, str(own_role) == str(role))
    if browsers:
        rows = session.execute(
            select(BrowserSession.id, User.id, User.username, User.role, User.organisation_id, User.totp_secret)
            .join(User)
            .where(BrowserSession.id.in_(browsers), BrowserSession.revoked_at.is_(None), User.active)
            .where(BrowserSession.expires_at > now)
        )
        for session_id, user_id, username, role, org, totp_secret in rows:
            if not _owes_second_factor(str(role), bool(totp_secret)):
                found[Credential("browser", session_id)] = Identity(Actor(user_id, username, Role(role), org))
    return found


class RateLimiter:
    """Per-token limits shared through Redis when UCSC_REDIS_URL is set, in memory otherwise."""

    def __init__(self, spec: str, redis_url: str | None) -> None:
        self.items: list[RateLimitItem] = parse_many(spec) if spec else []
        storage = storage_from_string(redis_url) if redis_url else MemoryStorage()
        self.strategy = SlidingWindowCounterRateLimiter(storage)

    def check(self, scope: str, key: str) -> None:
        for item in self.items:
            if not self.strategy.hit(item, scope, key):
                stats = self.strategy.get_window_stats(item, scope, key)
                wait = stats.reset_time - time.time()
                raise ApiError(
                    429, "Too Many Requests", f"rate limit {item} exceeded for this token",
                    headers={"Retry-After": retry_after(wait)},
                )  # fmt: skip


def limit_intake(actor: Actor) -> None:
    limiter: RateLimiter = current_app.extensions["ucsc.intake_limiter"]
    limiter.check("intake", str(actor.token_id or actor.user_id))


def init_app(app: Flask) -> None:
    app.extensions["ucsc.token_cache"] = TokenCache(float(app.config["TOKEN_CACHE_SECONDS"]))
    app.extensions["ucsc.login_failures"] = FailureGuard(FAILURE_AUDIT_SECONDS)
    app.extensions["ucsc.intake_limiter"] = RateLimiter(str(app.config["INTAKE_RATE_LIMIT"]), app.config["REDIS_URL"])
