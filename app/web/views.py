"""Helpers every page uses: rendering with the live feed's position, error pages, and field errors of a form."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, current_app, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import func, select

from app import db
from app.web import labels
from app.web.browser import bp
from incidents.enums import Role
from incidents.errors import DomainError, FieldError, Forbidden, NotFound, ValidationFailed
from incidents.models import Event


def last_event_id() -> int:
    """Where the page's live connection resumes: events after this one are replayed on connect."""
    return db.session().scalar(select(func.coalesce(func.max(Event.id), 0))) or 0


def is_fragment() -> bool:
    """The live script re-fetches a page's live regions with this header and swaps them in place."""
    return request.headers.get("X-Fragment") == "1"


def render(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    context.setdefault("last_event_id", last_event_id())
    context.setdefault("heartbeat_seconds", float(current_app.config["FEED_HEARTBEAT_SECONDS"]))
    return render_template(template, **context), status


def error_page(status: int, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, message=message), status


def field_errors(errors: list[FieldError]) -> dict[str, list[str]]:
    """Field path → messages in the user's language; the form shows each beside its input."""
    out: dict[str, list[str]] = {}
    for e in errors:
        out.setdefault(e.field, []).append(labels.message(e.message))
    return out


def roles(*allowed: Role) -> Callable:
    """Sign-in required, and one of `allowed` roles (403 page otherwise)."""

    def wrap(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def inner(*args: Any, **kwargs: Any) -> Any:
            if allowed and current_user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        return inner

    return wrap


@bp.errorhandler(403)
def _forbidden(_exc: Exception) -> tuple[str, int]:
    from flask_babel import gettext as _

    return error_page(403, _("Your role may not open this page."))


@bp.errorhandler(404)
def _not_found(_exc: Exception) -> tuple[str, int]:
    from flask_babel import gettext as _

    return error_page(404, _("Not found, or you may not see it."))


@bp.errorhandler(400)
def _bad_request(exc: Any) -> tuple[str, int]:
    from flask_babel import gettext as _

    return error_page(400, _("The form expired or was not sent from this site. Reload the page and try again."))


@bp.errorhandler(DomainError)
def _domain(exc: DomainError) -> tuple[str, int]:
    # A hidden incident and a missing one get the same page: the detail could name what the caller may not see.
    if isinstance(exc, NotFound):
        return _not_found(exc)
    if isinstance(exc, Forbidden):
        return _forbidden(exc)
    return error_page(422 if isinstance(exc, ValidationFailed) else 409, exc.detail)
