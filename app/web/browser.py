"""The web blueprint and the signed-in browser it serves: the user, its language, CSRF and the security headers."""

from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Request, Response, redirect, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask_babel import Babel
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect
from itsdangerous import URLSafeTimedSerializer

from app import db
from app.auth import signin_policy
from incidents import signin
from incidents.access import Actor
from incidents.base import utcnow
from incidents.enums import Role
from incidents.policy import Capability, allows

bp = Blueprint("web", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()
ANONYMOUS_FORM_BYTES = 64 * 1024
babel = Babel()


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once per set of keys instead of at every
    request: an API call with a bearer token carries no cookie, yet Flask built one for it each time (2 % of an
    alert repeat's CPU, sampled by py-spy under bench/sources.py). A request without a cookie gets its empty session
    without the cookie header parsed, and an untouched empty session is not saved (together 3 % of the request
    floor of an alert post)."""

    def __init__(self) -> None:
        self._serializers: dict[tuple[Any, ...], URLSafeTimedSerializer | None] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        if keys not in self._serializers:
            self._serializers = {keys: super().get_signing_serializer(app)}  # a rotated key replaces the old set
        return self._serializers[keys]

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if "HTTP_COOKIE" not in request.environ and self.get_signing_serializer(app) is not None:
            return self.session_class()  # no cookie sent (an API call): Flask's empty session, no header parsed
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not session and not session.modified:  # nothing to set or delete: what Flask does, without working
            if session.accessed:  # out the cookie's attributes first (Flask-Login's hook touches every session)
                response.vary.add("Cookie")
            return
        super().save_session(app, session, response)


TOUCH_EVERY = timedelta(seconds=60)
# Paths a signed-in user who still owes a second-factor enrolment may reach.
_ENROLMENT_ENDPOINTS = {"web.enrol_totp", "web.logout", "web.set_language", "static"}


class WebUser(UserMixin):
    """A signed-in browser; its Flask-Login id is the session key, so revoking the row signs it out."""

    def __init__(self, key: str, session_id: int, user: Any, second_factor: bool) -> None:
        self.key = key
        self.session_id = session_id
        self.user_id = user.id
        self.username = user.username
        self.display_name = user.display_name or user.username
        self.role = Role(user.role)
        self.organisation_id = user.organisation_id
        self.language = user.language or "vi"
        self.has_totp = bool(user.totp_secret)
        self.second_factor = second_factor

    def get_id(self) -> str:
        return self.key

    @property
    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, username=self.username, role=self.role, organisation_id=self.organisation_id)

    @property
    def may_edit(self) -> bool:
        return allows(self, Capability.EDIT_INCIDENT)


def load_user(key: str) -> WebUser | None:
    """Flask-Login's loader: the browser session must exist, be live, and belong to an active user."""
    found = signin.load_session(db.session(), key)
    if found is None:
        return None
    browser, user = found
    web_user = WebUser(key, browser.id, user, browser.second_factor)
    if utcnow() - browser.last_seen_at > TOUCH_EVERY:
        signin.touch_session(session=db.session(), session_id=browser.id)
    return web_user


def current_actor() -> Actor:
    return current_user.actor


def select_locale() -> str:
    if current_user and current_user.is_authenticated:
        return current_user.language
    lang = session.get("lang")
    return lang if lang in signin.LANGUAGES else "vi"


def _csp(response: Response) -> Response:
    # Strict: scripts and styles from our own origin only, nothing inline; Socket.IO on the same host.
    host = request.host
    scheme = "wss" if request.is_secure else "ws"
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        f"connect-src 'self' {scheme}://{host}; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.before_request
def _guard() -> Response | None:
    """CSRF on every form; a user who owes a TOTP enrolment is sent to it first."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        if not current_user.is_authenticated:
            # Signing in is a small form: an anonymous upload is refused (413) from its Content-Length, unread.
            request.max_content_length = ANONYMOUS_FORM_BYTES
        csrf.protect()
    if (
        current_user.is_authenticated
        and not current_user.has_totp
        and str(current_user.role) in signin_policy().totp_required_roles
        and request.endpoint not in _ENROLMENT_ENDPOINTS
    ):
        return redirect(url_for("web.enrol_totp"))
    return None


def security_headers(response: Response) -> Response:
    """Every response but the JSON API's gets the strict policy (the API answers JSON, never pages)."""
    if not request.path.startswith("/api/"):
        _csp(response)
    return response
