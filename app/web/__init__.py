"""The browser UI: sign-in, the operator console, the incident page and the committee board (Vietnamese first)."""

from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect, request, session, url_for
from flask_babel import Babel, get_locale
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect

from app import db
from incidents import signin, throttle
from incidents.access import Actor
from incidents.base import utcnow
from incidents.enums import Role
from incidents.policy import Capability, allows

bp = Blueprint("web", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()
ANONYMOUS_FORM_BYTES = 64 * 1024
babel = Babel()

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


def policy() -> signin.Policy:
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
        and str(current_user.role) in policy().totp_required_roles
        and request.endpoint not in _ENROLMENT_ENDPOINTS
    ):
        return redirect(url_for("web.enrol_totp"))
    return None


def init_app(app: Flask) -> None:
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    if str(app.config["BASE_URL"]).startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked in this blueprint only: the API uses bearer tokens
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    app.config["BABEL_DEFAULT_LOCALE"] = "vi"
    app.config["BABEL_DEFAULT_TIMEZONE"] = "Asia/Ho_Chi_Minh"
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    login_manager.init_app(app)
    login_manager.login_view = "web.login"
    login_manager.session_protection = "basic"
    login_manager.user_loader(load_user)
    login_manager.login_message = None
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)

    from app.web import account, admin, board, console, labels, records, response, sources

    del account, admin, board, console, records, response, sources
    app.register_blueprint(bp)
    app.jinja_env.globals.update(labels=labels, get_locale=get_locale)
    app.jinja_env.filters.update(localtime=labels.localtime, iso=labels.iso)
    app.after_request(_web_headers)


def _web_headers(response: Response) -> Response:
    """Every response but the JSON API's gets the strict policy (the API answers JSON, never pages)."""
    if not request.path.startswith("/api/"):
        _csp(response)
    return response
