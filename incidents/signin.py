"""Web sign-in: throttled passwords, TOTP second factor, revocable browser sessions, user preferences."""

import hashlib
import math
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from incidents import audit, throttle
from incidents.access import Actor
from incidents.accounts import create_user
from incidents.base import utcnow
from incidents.enums import Role
from incidents.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from incidents.models import BrowserSession, Organisation, User
from incidents.policy import Capability, allows, require
from incidents.uow import in_transaction

LANGUAGES = ("vi", "en")
MIN_PASSWORD = 10
MAX_USERNAME = 150
# An unknown user name costs the same hash check as a known one, so timing does not reveal which exist.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Policy:
    """Sign-in and session rules an admin configures (UCSC_LOGIN_* and UCSC_TOTP_REQUIRED_ROLES)."""

    max_failures: int = 5  # wrong TOTP codes in a row that lock the second factor for `lockout`
    lockout: timedelta = timedelta(minutes=15)
    throttle_rules: throttle.Rules = field(default_factory=throttle.Rules)
    session_lifetime: timedelta = timedelta(hours=12)
    totp_required_roles: frozenset[str] = frozenset({Role.ADMIN.value})
    issuer: str = "UCSC"


class Throttled(ValidationFailed):
    """A password try refused unchecked: this address must first wait `retry_after` for this account."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__(
            "too many wrong passwords", errors=[FieldError("current_password", "too many wrong passwords")]
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class PasswordCheck:
    """The outcome of a password check: the user when it matched, else why not."""

    user: User | None
    refusal: str = ""  # "" | "invalid" | "throttled"
    retry_after: timedelta = timedelta(0)


def actor_of(user: User) -> Actor:
    return Actor(user_id=user.id, username=user.username, role=Role(user.role), organisation_id=user.organisation_id)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_password(
    *, session: Session, username: str, password: str, policy: Policy, source_ip: str | None
) -> PasswordCheck:
    """Verify a password unless this address must first wait for this account (or for any); audit each outcome.

    No wrong password locks an account: someone who merely knows a name could lock the real person out.
    """
    source = throttle.source_key(source_ip)
    rules = policy.throttle_rules
    # No account has such a name (and PostgreSQL text holds no NUL): counted against the address alone.
    account = username if 0 < len(username) <= MAX_USERNAME and username.isprintable() else ""
    claim = in_transaction(
        session, lambda: throttle.claim(session=session, source=source, account=account, rules=rules)
    )
    if claim.wait > timedelta(0):
        return PasswordCheck(None, "throttled", claim.wait)
    # The hash is checked between two short write transactions: on SQLite a write transaction holds the database.
    user = None
    if account:
        user = session.scalar(select(User).where(User.username == account, User.is_service.is_(False)))
    if user is None or not user.active or not user.password_hash:
        check_password_hash(_DUMMY_HASH, password)
        user, reason = None, "unknown or inactive user"
    elif check_password_hash(user.password_hash, password):
        reason = ""
    else:
        reason = "wrong password"

    def record() -> PasswordCheck:
        now = utcnow()
        if not reason:
            throttle.release(session=session, source=source, account=account, rules=rules, now=now)
            return PasswordCheck(user)
        data: dict[str, object] = {"reason": reason}
        if claim.next_wait > timedelta(0):
            data["wait_seconds"] = math.ceil(claim.next_wait.total_seconds())
        label = user.username if user is not None else "web:" + username[:100]
        audit.append(session, action=audit.Action.LOGIN_FAILED, actor=label, source_ip=source_ip, data=data)
        return PasswordCheck(None, "invalid")

    return in_transaction(session, record)


def totp_required(user: User, policy: Policy) -> bool:
    return str(user.role) in policy.totp_required_roles


def _accept_code(user: User, code: str, secret: str | None = None) -> bool:
    """A code of the current or an adjacent 30 s step, newer than the last one accepted (no replay)."""
    totp = pyotp.TOTP(secret or user.totp_secret or "")
    code = code.strip().replace(" ", "")
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return False
    now = utcnow()
    step_now = int(now.timestamp()) // totp.interval
    for step in (step_now, step_now - 1, step_now + 1):
        if secrets.compare_digest(totp.at(step * totp.interval), code):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return False
            user.totp_last_step = step
            return True
    return False


def _second_factor_locked(user: User) -> bool:
    return user.totp_locked_until is not None and user.totp_locked_until > utcnow()


def _second_factor_failed(session: Session, user: User, reason: str, source_ip: str | None, policy: Policy) -> str:
    """Count a failed proof of the second factor; enough in a row lock it. Only an accepted code clears the count."""
    user.totp_failures += 1
    data: dict[str, object] = {"reason": reason, "failures": user.totp_failures}
    if user.totp_failures < policy.max_failures:
        audit.append(session, action=audit.Action.LOGIN_FAILED, actor=user.username, source_ip=source_ip, data=data)
        return "invalid"
    user.totp_locked_until = utcnow() + policy.lockout
    user.totp_failures = 0
    data["locked_until"] = user.totp_locked_until.isoformat()
    audit.append(session, action=audit.Action.LOGIN_LOCKED, actor=user.username, source_ip=source_ip, data=data)
    return "locked"


def check_totp(*, session: Session, user_id: int, code: str, source_ip: str | None, policy: Policy) -> str:
    """The second step of signing in: "ok", "invalid", or "locked" after too many wrong codes in a row.

    The count is the second factor's own: passing the password step again does not reset it.
    """

    def work() -> str:
        user = session.scalar(select(User).where(User.id == user_id).with_for_update(key_share=True))
        if user is None or not user.active or not user.totp_secret:
            return "invalid"
        if _second_factor_locked(user):
            return "locked"
        if _accept_code(user, code):
            user.totp_failures = 0
            return "ok"
        return _second_factor_failed(session, user, "wrong TOTP code", source_ip, policy)

    return in_transaction(session, work)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(*, username: str, secret: str, policy: Policy) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=policy.issuer)


def enrol_totp(
    *,
    session: Session,
    user_id: int,
    secret: str,
    code: str,
    source_ip: str | None,
    policy: Policy,
    current_password: str = "",
    current_code: str = "",
) -> None:
    """Store a new TOTP secret once the user proves their authenticator shows its codes.

    Replacing a second factor also takes the password or a code of the current one: a session alone is not enough.
    """

    def work() -> list[FieldError]:
        user = session.scalar(select(User).where(User.id == user_id).with_for_update(key_share=True))
        if user is None:
            raise NotFound("no such user")
        if user.totp_secret:
            if _second_factor_locked(user):
                return [FieldError("current_code", "second factor locked")]
            proved = bool(current_code) and _accept_code(user, current_code)
            if not proved and current_password and user.password_hash:
                proved = check_password_hash(user.password_hash, current_password)
            if not proved:
                _second_factor_failed(session, user, "re-enrolment without the password or a current code",
                                      source_ip, policy)  # fmt: skip
                return [FieldError("current_password", "the password or a current code")]
        last_step, user.totp_last_step = user.totp_last_step, None
        if not _accept_code(user, code, secret):
            user.totp_last_step = last_step
            return [FieldError("code", "the code does not match")]
        user.totp_secret = secret
        user.totp_failures = 0
        audit.append(session, action=audit.Action.TOTP_ENROLLED, actor=user.username, source_ip=source_ip)
        return []

    # The refusal is raised after the commit, so a failed proof stays counted.
    errors = in_transaction(session, work)
    if errors:
        raise ValidationFailed("second factor not changed", errors=errors)


def start_session(
    *,
    session: Session,
    user_id: int,
    second_factor: bool,
    source_ip: str | None,
    user_agent: str | None,
    policy: Policy,
) -> str:
    """Open a browser session and audit the sign-in; returns the key the cookie carries (shown only here)."""
    key = secrets.token_urlsafe(32)

    def work() -> str:
        user = session.get(User, user_id)
        if user is None or not user.active:
            raise Forbidden("user inactive")
        now = utcnow()
        row = BrowserSession(
            user_id=user.id,
            digest=digest(key),
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.session_lifetime,
            second_factor=second_factor,
            source_ip=source_ip,
            user_agent=(user_agent or "")[:300] or None,
        )
        session.add(row)
        session.flush()
        audit.append(
            session,
            action=audit.Action.LOGIN_SUCCEEDED,
            actor=user.username,
            source_ip=source_ip,
            data={"via": "web", "second_factor": second_factor, "session": row.id},
        )
        return key

    return in_transaction(session, work)


def load_session(session: Session, key: str) -> tuple[BrowserSession, User] | None:
    """The live session and its user for a cookie key, or None when unknown, revoked, expired or inactive."""
    row = session.execute(select(BrowserSession, User).join(User).where(BrowserSession.digest == digest(key))).first()
    if row is None:
        return None
    browser, user = row
    if browser.revoked_at is not None or browser.expires_at <= utcnow() or not user.active:
        return None
    return browser, user


def touch_session(*, session: Session, session_id: int) -> None:
    """Record that a session was used (the caller throttles this to about once a minute)."""

    def work() -> None:
        row = session.get(BrowserSession, session_id)
        if row is not None:
            row.last_seen_at = utcnow()

    in_transaction(session, work)


def list_sessions(session: Session, user_id: int) -> list[BrowserSession]:
    now = utcnow()
    stmt = (
        select(BrowserSession)
        .where(BrowserSession.user_id == user_id, BrowserSession.revoked_at.is_(None), BrowserSession.expires_at > now)
        .order_by(BrowserSession.last_seen_at.desc())
    )
    return list(session.scalars(stmt))


def revoke_session(*, session: Session, actor: Actor, session_id: int, source_ip: str | None) -> None:
    """End a session: its owner may end their own, an admin anyone's."""

    def work() -> None:
        row = session.get(BrowserSession, session_id)
        if row is None or (row.user_id != actor.user_id and not allows(actor, Capability.MANAGE_USERS)):
            raise NotFound("no such session")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.append(
                session,
                action=audit.Action.SESSION_REVOKED,
                actor=actor,
                target=f"session:{row.id}",
                source_ip=source_ip,
                data={"user_id": row.user_id},
            )

    in_transaction(session, work)


def end_session(*, session: Session, key: str) -> None:
    """Sign out: the session's key stops working at once."""

    def work() -> None:
        row = session.scalar(select(BrowserSession).where(BrowserSession.digest == digest(key)))
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()

    in_transaction(session, work)


def _password_errors(new: str, repeat: str) -> list[FieldError]:
    errors = []
    if len(new) < MIN_PASSWORD:
        errors.append(FieldError("new_password", f"at least {MIN_PASSWORD} characters"))
    if new != repeat:
        errors.append(FieldError("repeat_password", "does not match"))
    return errors


def change_password(
    *,
    session: Session,
    user_id: int,
    current: str,
    new: str,
    repeat: str,
    keep_session_id: int | None,
    source_ip: str | None,
    policy: Policy,
) -> None:
    """Set a new password after checking the current one; every other session of the user ends.

    Guesses of the current password are throttled like sign-ins: a session alone must not be a way to find it.
    """
    username = session.scalar(select(User.username).where(User.id == user_id))
    if username is None:
        raise NotFound("no such user")
    source, rules = throttle.source_key(source_ip), policy.throttle_rules
    claim = in_transaction(
        session, lambda: throttle.claim(session=session, source=source, account=username, rules=rules)
    )
    if claim.wait > timedelta(0):
        raise Throttled(claim.wait)

    def work() -> list[FieldError]:
        user = session.scalar(select(User).where(User.id == user_id).with_for_update(key_share=True))
        if user is None:
            raise NotFound("no such user")
        errors = _password_errors(new, repeat)
        if user.password_hash and check_password_hash(user.password_hash, current):
            throttle.release(session=session, source=source, account=username, rules=rules, now=utcnow())
        else:
            errors.insert(0, FieldError("current_password", "wrong password"))
            audit.append(session, action=audit.Action.LOGIN_FAILED, actor=user.username, source_ip=source_ip,
                         data={"reason": "wrong current password", "via": "password change"})  # fmt: skip
        if errors:
            return errors
        now = utcnow()
        user.password_hash = generate_password_hash(new)
        user.password_changed_at = now
        for row in session.scalars(
            select(BrowserSession).where(BrowserSession.user_id == user.id, BrowserSession.revoked_at.is_(None))
        ):
            if row.id != keep_session_id:
                row.revoked_at = now
        audit.append(session, action=audit.Action.PASSWORD_CHANGED, actor=user.username, source_ip=source_ip)
        return []

    # Raised after the commit, so a wrong guess stays counted and audited.
    errors = in_transaction(session, work)
    if errors:
        raise ValidationFailed("password not changed", errors=errors)


def set_language(*, session: Session, user_id: int, language: str) -> None:
    if language not in LANGUAGES:
        raise ValidationFailed("unknown language", errors=[FieldError("language", "vi or en")])

    def work() -> None:
        user = session.get(User, user_id)
        if user is not None:
            user.language = language

    in_transaction(session, work)


def _require_admin(actor: Actor) -> None:
    require(actor, Capability.MANAGE_USERS, "only an admin manages users and organisations")


def admin_create_user(
    *,
    session: Session,
    actor: Actor,
    username: str,
    display_name: str | None,
    role: str,
    organisation: str,
    password: str,
    source_ip: str | None,
) -> User:
    """An admin adds a person who signs in on the web."""
    _require_admin(actor)
    errors = []
    if not username or len(username) > MAX_USERNAME or not username.isprintable() or " " in username:
        errors.append(FieldError("username", "1–150 characters without spaces"))
    if role not in {r.value for r in Role} or role == Role.INTAKE:
        errors.append(FieldError("role", "admin, operator, responder or committee"))
    errors += _password_errors(password, password)
    if errors:
        raise ValidationFailed("user not created", errors=errors)

    def work() -> User:
        user = create_user(
            session=session,
            username=username,
            role=Role(role),
            organisation=organisation,
            password_hash=generate_password_hash(password),
            display_name=display_name or None,
        )
        audit.append(
            session,
            action=audit.Action.USER_CREATED,
            actor=actor,
            target=f"user:{username}",
            source_ip=source_ip,
            data={"role": role, "organisation": organisation, "via": "web"},
        )
        return user

    return in_transaction(session, work)


def admin_update_user(
    *, session: Session, actor: Actor, user_id: int, role: str, active: bool, reset_totp: bool, source_ip: str | None
) -> User:
    """An admin changes a user's role, (de)activates them or clears their second factor."""
    _require_admin(actor)
    if role not in {r.value for r in Role} or role == Role.INTAKE:
        raise ValidationFailed("bad role", errors=[FieldError("role", "admin, operator, responder or committee")])

    def work() -> User:
        user = session.scalar(
            select(User).where(User.id == user_id, User.is_service.is_(False)).with_for_update(key_share=True)
        )
        if user is None:
            raise NotFound("no such user")
        if user.id == actor.user_id and (role != Role.ADMIN or not active):
            raise Conflict("an admin cannot demote or deactivate themselves")
        changes: dict[str, object] = {}
        if str(user.role) != role:
            changes["role"] = [str(user.role), role]
            user.role = Role(role)
        if user.active != active:
            changes["active"] = [user.active, active]
            user.active = active
        if reset_totp and user.totp_secret:
            user.totp_secret = None
            user.totp_last_step = None
            user.totp_failures = 0
            user.totp_locked_until = None
            changes["totp"] = "reset"
        if changes:
            audit.append(
                session,
                action=audit.Action.ROLE_CHANGED,
                actor=actor,
                target=f"user:{user.username}",
                source_ip=source_ip,
                data=changes,
            )
        return user

    return in_transaction(session, work)


def admin_create_organisation(
    *, session: Session, actor: Actor, code: str, name_vi: str, name_en: str | None
) -> Organisation:
    """An admin adds a member organisation of the response network."""
    _require_admin(actor)
    errors = []
    if not code or len(code) > 64 or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in code):
        errors.append(FieldError("code", "1–64 letters, digits, _ - ."))
    if not name_vi or len(name_vi) > 300:
        errors.append(FieldError("name_vi", "1–300 characters"))
    if errors:
        raise ValidationFailed("organisation not created", errors=errors)

    def work() -> Organisation:
        if session.scalar(select(Organisation.id).where(Organisation.code == code)) is not None:
            raise Conflict("organisation exists", errors=[FieldError("code", "already taken")])
        org = Organisation(code=code, name_vi=name_vi, name_en=name_en or None)
        session.add(org)
        session.flush()
        return org

    return in_transaction(session, work)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).where(User.is_service.is_(False)).order_by(User.username)))
