"""Signing in and out, the second factor, password change, sessions and language (over incidents.signin)."""

import time
from typing import Any
from urllib.parse import urlsplit

import segno
from flask import current_app, flash, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from limits import parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from app import db
from app.auth import signin_policy
from app.errors import retry_after
from app.web.browser import bp, load_user
from app.web.views import field_errors, render
from incidents import signin
from incidents.enums import Role
from incidents.errors import ValidationFailed

PENDING_SECONDS = 300  # a password accepted but no TOTP code yet: this long to give one


def _limited() -> bool:
    """Login attempts per source address (UCSC_LOGIN_RATE_LIMIT), in Redis when configured."""
    ext = current_app.extensions
    if "ucsc.login_limiter" not in ext:
        url = current_app.config["REDIS_URL"]
        ext["ucsc.login_limiter"] = (
            SlidingWindowCounterRateLimiter(storage_from_string(url) if url else MemoryStorage()),
            parse_many(str(current_app.config["LOGIN_RATE_LIMIT"])) if current_app.config["LOGIN_RATE_LIMIT"] else [],
        )
    strategy, items = ext["ucsc.login_limiter"]
    return not all(strategy.hit(item, "web-login", request.remote_addr or "") for item in items)


def _too_many(template: str, error: str, seconds: float, **context: Any) -> Any:
    body, status = render(template, 429, error=error, **context)
    return body, status, {"Retry-After": retry_after(seconds)}


def _throttled_message(seconds: float) -> str:
    return _("Too many failed sign-ins from this address. Try again in %(seconds)s s.", seconds=retry_after(seconds))


def _locked_message() -> str:
    return _("Two-factor sign-in is locked after repeated wrong codes. Try again later or ask an admin.")


def _safe_next(target: str | None) -> str:
    """Only a path on this site: an open redirect would hand the signed-in user to another site."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("web.home")


def _finish_login(user_id: int, second_factor: bool) -> Any:
    key = signin.start_session(
        session=db.session(),
        user_id=user_id,
        second_factor=second_factor,
        source_ip=request.remote_addr,
        user_agent=request.user_agent.string,
        policy=signin_policy(),
    )
    session.pop("pending_2fa", None)
    web_user = load_user(key)
    login_user(web_user)
    session.pop("lang", None)
    return redirect(_safe_next(session.pop("next", None)))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The sign-in form: user name and password, then a TOTP code if the user has one."""
    if request.method == "GET":
        if request.args.get("lang") in signin.LANGUAGES:
            session["lang"] = request.args["lang"]
        if request.args.get("next"):
            session["next"] = _safe_next(request.args["next"])
        return render("login.html")
    if _limited():
        return _too_many("login.html", _("Too many sign-in attempts. Wait a minute and try again."), 60)
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    result = signin.check_password(
        session=db.session(),
        username=username,
        password=password,
        policy=signin_policy(),
        source_ip=request.remote_addr,
    )
    if result.refusal == "throttled":
        seconds = result.retry_after.total_seconds()
        return _too_many("login.html", _throttled_message(seconds), seconds, username=username)
    if result.user is None:
        return render("login.html", 401, error=_("Wrong user name or password."), username=username)
    if result.user.totp_secret:
        session["pending_2fa"] = {"user_id": result.user.id, "at": time.time()}
        return redirect(url_for("web.login_totp"))
    return _finish_login(result.user.id, second_factor=False)


@bp.route("/login/totp", methods=["GET", "POST"])
def login_totp() -> Any:
    """The second step: the six-digit code of the user's authenticator app."""
    pending = session.get("pending_2fa")
    if not pending or time.time() - float(pending.get("at", 0)) > PENDING_SECONDS:
        session.pop("pending_2fa", None)
        return redirect(url_for("web.login"))
    if request.method == "GET":
        return render("login_totp.html")
    if _limited():
        return _too_many("login_totp.html", _("Too many sign-in attempts. Wait a minute and try again."), 60)
    outcome = signin.check_totp(
        session=db.session(),
        user_id=int(pending["user_id"]),
        code=request.form.get("code", ""),
        source_ip=request.remote_addr,
        policy=signin_policy(),
    )
    if outcome == "locked":
        return render("login_totp.html", 401, error=_locked_message())
    if outcome != "ok":
        return render("login_totp.html", 401, error=_("Wrong or expired code."))
    return _finish_login(int(pending["user_id"]), second_factor=True)


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    if current_user.is_authenticated:
        signin.end_session(session=db.session(), key=current_user.key)
    logout_user()
    session.clear()
    return redirect(url_for("web.login"))


@bp.route("/account/totp", methods=["GET", "POST"])
@login_required
def enrol_totp() -> Any:
    """Enrolment: a new secret as a QR code; stored only once the user enters a code it produced."""
    secret = session.get("totp_enrol_secret")
    if request.method == "GET" or not secret:
        secret = signin.new_totp_secret()
        session["totp_enrol_secret"] = secret
    errors: dict[str, list[str]] = {}
    if request.method == "POST" and request.form.get("code") is not None:
        try:
            signin.enrol_totp(
                session=db.session(),
                user_id=current_user.user_id,
                secret=secret,
                code=request.form["code"],
                source_ip=request.remote_addr,
                policy=signin_policy(),
                current_password=request.form.get("current_password", ""),
                current_code=request.form.get("current_code", ""),
            )
        except ValidationFailed as exc:
            errors = field_errors(exc.errors)
            if "current_password" in errors:
                errors["current_password"] = [_("Give your password or a code from the authenticator you use now.")]
            if "current_code" in errors:
                errors["current_code"] = [_locked_message()]
        else:
            session.pop("totp_enrol_secret", None)
            flash(_("Two-factor sign-in is on."), "ok")
            return redirect(url_for("web.home"))
    uri = signin.totp_uri(username=current_user.username, secret=secret, policy=signin_policy())
    qr = segno.make(uri, error="m").svg_data_uri(scale=5, dark="#000", light="#fff")
    required = str(current_user.role) in signin_policy().totp_required_roles
    return render(
        "enrol_totp.html", 422 if errors else 200, qr=qr, secret=secret, errors=errors, required=required,
        replacing=current_user.has_totp,
    )  # fmt: skip


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password() -> Any:
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            signin.change_password(
                session=db.session(),
                user_id=current_user.user_id,
                current=request.form.get("current_password", ""),
                new=request.form.get("new_password", ""),
                repeat=request.form.get("repeat_password", ""),
                keep_session_id=current_user.session_id,
                source_ip=request.remote_addr,
                policy=signin_policy(),
            )
        except signin.Throttled as exc:
            errors = {"current_password": [_throttled_message(exc.retry_after.total_seconds())]}
            return _too_many("password.html", "", exc.retry_after.total_seconds(), errors=errors)
        except ValidationFailed as exc:
            errors = field_errors(exc.errors)
        else:
            flash(_("Password changed. Your other sessions were signed out."), "ok")
            return redirect(url_for("web.sessions"))
    return render("password.html", 422 if errors else 200, errors=errors)


@bp.route("/account/sessions")
@login_required
def sessions() -> Any:
    rows = signin.list_sessions(db.session(), current_user.user_id)
    return render("sessions.html", rows=rows)


@bp.route("/account/sessions/<int:session_id>/revocation", methods=["POST"])
@login_required
def revoke_session(session_id: int) -> Any:
    signin.revoke_session(
        session=db.session(), actor=current_user.actor, session_id=session_id, source_ip=request.remote_addr
    )
    flash(_("Session ended."), "ok")
    if session_id == current_user.session_id:
        logout_user()
        return redirect(url_for("web.login"))
    return redirect(url_for("web.sessions"))


@bp.route("/account/language", methods=["POST"])
def set_language() -> Any:
    lang = request.form.get("language", "vi")
    if lang not in signin.LANGUAGES:
        lang = "vi"
    if current_user.is_authenticated:
        signin.set_language(session=db.session(), user_id=current_user.user_id, language=lang)
    else:
        session["lang"] = lang
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/")
@login_required
def home() -> Any:
    if current_user.role is Role.COMMITTEE:
        return redirect(url_for("web.board"))
    return redirect(url_for("web.incidents"))
