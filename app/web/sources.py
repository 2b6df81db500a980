"""The alert sources page: the standing body's senders, their silence and today's counts, maintenance windows."""

from datetime import datetime
from typing import Any

from flask import current_app, flash, redirect, request, url_for
from flask_babel import gettext as _

from app import db
from app.auth import new_token
from app.web.browser import bp, current_actor
from app.web.views import field_errors, render, roles
from incidents.clock import LOCAL_TZ
from incidents.errors import Conflict, DomainError, FieldError, NotFound, ValidationFailed
from incidents.policy import Capability, roles_with
from incidents.schemas.base import parse
from incidents.sources import admin, windows
from incidents.sources.models import SourceKind

MANAGERS = roles_with(Capability.MANAGE_SOURCES)


def _page(status: int = 200, **context: Any) -> Any:
    session = db.session()
    actor = current_actor()
    sources = admin.list_sources(session, actor=actor)
    context.setdefault("errors", {})
    context.setdefault("form", {})
    context.setdefault("window_errors", {})
    context.setdefault("window_form", {})
    return render(
        "sources.html",
        status,
        rows=list(zip(sources, admin.described(session, sources), strict=True)),
        names={s.id: s.name for s in sources},
        source_options=[(str(s.id), s.name) for s in sources],
        windows=windows.list_windows(session, actor=actor),
        kinds=[(k.value, k.value) for k in SourceKind],
        max_hours=float(current_app.config["SOURCE_WINDOW_MAX_HOURS"]),
        **context,
    )


def _local(field: str, value: str) -> datetime | None:
    """A datetime-local field, read in Asia/Ho_Chi_Minh (the desk's clock)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=LOCAL_TZ)
    except ValueError:
        raise ValidationFailed("invalid time", errors=[FieldError(field, "not a date and time")]) from None


def _interval(value: str) -> int | None:
    return int(value) * 60 if value.strip().isdigit() else (None if not value.strip() else -1)


@bp.route("/sources")
@roles(*MANAGERS)
def sources() -> Any:
    return _page()


@bp.route("/sources", methods=["POST"])
@roles(*MANAGERS)
def source_create() -> Any:
    f = request.form
    token, digest = new_token()
    data = {"kind": f.get("kind", ""), "name": f.get("name", "").strip(),
            "expected_interval_seconds": _interval(f.get("interval_minutes", ""))}  # fmt: skip
    try:
        source = admin.create_source(
            session=db.session(), data=parse(admin.SourceCreate, data), actor=current_actor(), token_digest=digest,
            organisation=current_app.config["STANDING_BODY"],
        )  # fmt: skip
    except (ValidationFailed, Conflict) as exc:
        errors = field_errors(exc.errors or [])
        if "expected_interval_seconds" in errors:
            errors["interval_minutes"] = errors.pop("expected_interval_seconds")
        return _page(422, errors=errors, form=f)
    # The token is shown on this answer only: only its digest is stored.
    return _page(201, created=source.name, token=token if source.token_id else None)


@bp.route("/sources/<int:source_id>", methods=["POST"])
@roles(*MANAGERS)
def source_update(source_id: int) -> Any:
    f = request.form
    data = {"expected_interval_seconds": _interval(f.get("interval_minutes", "")), "active": bool(f.get("active"))}
    try:
        admin.update_source(session=db.session(), source_id=source_id, data=parse(admin.SourceUpdate, data),
                            actor=current_actor())  # fmt: skip
    except (ValidationFailed, Conflict, NotFound) as exc:
        flash(_("Refused: %(details)s", details=_details(exc)), "error")
    else:
        flash(_("Source updated."), "ok")
    return redirect(url_for("web.sources"))


@bp.route("/sources/windows", methods=["POST"])
@roles(*MANAGERS)
def window_create() -> Any:
    f = request.form
    try:
        data = {
            "source_id": int(f["source_id"]) if f.get("source_id", "").isdigit() else None,
            "dedup_pattern": f.get("dedup_pattern", "").strip() or None,
            "starts_at": _local("starts_at", f.get("starts_at", "")),
            "ends_at": _local("ends_at", f.get("ends_at", "")),
            "reason": f.get("reason", "").strip(),
            "approved_by": f.get("approved_by", "").strip(),
        }
        windows.create_window(
            session=db.session(), data=parse(windows.WindowCreate, data), actor=current_actor(),
            max_hours=float(current_app.config["SOURCE_WINDOW_MAX_HOURS"]),
        )  # fmt: skip
    except ValidationFailed as exc:
        return _page(422, window_errors=field_errors(exc.errors or []), window_form=f)
    flash(_("Maintenance window opened."), "ok")
    return redirect(url_for("web.sources"))


@bp.route("/sources/windows/<int:window_id>/cancel", methods=["POST"])
@roles(*MANAGERS)
def window_cancel(window_id: int) -> Any:
    try:
        windows.cancel_window(session=db.session(), window_id=window_id, actor=current_actor())
    except NotFound as exc:
        flash(_("Refused: %(details)s", details=exc.detail), "error")
    else:
        flash(_("Maintenance window cancelled."), "ok")
    return redirect(url_for("web.sources"))


def _details(exc: DomainError) -> str:
    return "; ".join(f"{e.field}: {e.message}" for e in exc.errors or []) or exc.detail
