"""The operator console: incident list, the Form 03 intake form, the incident page and its actions."""

import csv
import io
import re
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, flash, redirect, request, url_for
from flask_babel import gettext as _

from app import db
from app.api.operations import limits
from app.web import labels
from app.web.browser import bp, current_actor
from app.web.views import error_page, field_errors, is_fragment, render, roles
from incidents import audit, changes
from incidents.base import utcnow
from incidents.changes import classify
from incidents.comments import add_comment, list_comments
from incidents.enums import Status
from incidents.errors import Conflict, Forbidden, NotFound, TransitionNotAllowed, ValidationFailed
from incidents.filing import FilingSettings, file_incidents
from incidents.lifecycle import allowed_targets
from incidents.participants import add_participant
from incidents.policy import Capability, roles_with
from incidents.queries import (
    art9_assessment,
    count_incidents,
    get_incident,
    list_events,
    list_incidents,
    occurrence_count,
)
from incidents.schemas.base import parse, parse_query
from incidents.schemas.incidents import ClassificationIn, CommentCreate, IncidentCreate, ParticipantIn, TransitionIn
from incidents.schemas.queries import IncidentQuery
from incidents.systems import list_organisations, list_systems

DESK = roles_with(Capability.READ_RESPONSE)
EDITORS = roles_with(Capability.EDIT_INCIDENT)
OBSERVABLE_ROWS = 5
_LIST_FIELDS = ("status", "category", "priority", "tlp")
_LOCAL_INPUT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def _settings() -> FilingSettings:
    c = current_app.config
    return FilingSettings(
        ref_prefix=c["REF_PREFIX"], standing_body=c["STANDING_BODY"], receipts_by_email=bool(c["SMTP_URL"])
    )


@bp.route("/incidents")
@roles(*DESK)
def incidents() -> Any:
    """The list with the API's own filters, sort, diacritic-insensitive search and cursor paging.

    The filters stay in the URL; `prev` carries the cursors of the pages already passed (one per page), so
    "previous" needs no state on the server.
    """
    query, errors = _list_query()
    session = db.session()
    try:
        items, next_cursor = list_incidents(session, current_actor(), query)
        total = count_incidents(session, current_actor(), query)
    except ValidationFailed as exc:
        errors = field_errors(exc.errors)
        items, next_cursor, total = [], None, 0
    prev = request.args.getlist("prev")[-MAX_PAGES_BACK:]
    filters = [(k, v) for k, vs in request.args.lists() if k not in ("cursor", "prev") for v in vs if v != ""]
    context = {
        "items": items,
        "query": query,
        "errors": errors,
        "total": total,
        "page_number": len(prev) + 1,
        "next_href": _list_href(filters, next_cursor, [*prev, request.args.get("cursor", "")]) if next_cursor else None,
        "prev_href": _list_href(filters, prev[-1], prev[:-1]) if prev else None,
        "csv_href": url_for("web.incidents_csv") + ("?" + urlencode(filters) if filters else ""),
    }
    if is_fragment():
        return render("_incident_list.html", **context)
    return render("console.html", **context)


MAX_PAGES_BACK = 50
CSV_MAX_ROWS = 20_000
CSV_COLUMNS = ("ref", "title", "status", "priority", "class", "tlp", "category", "system", "owner", "detected_at")


def _list_query() -> tuple[IncidentQuery, dict[str, list[str]]]:
    args = {k: [v for v in vs if v != ""] for k, vs in request.args.lists() if k != "prev"}
    args = {k: vs for k, vs in args.items() if vs}
    try:
        return parse_query(IncidentQuery, args, _LIST_FIELDS), {}
    except ValidationFailed as exc:
        return IncidentQuery(), field_errors(exc.errors)


def _list_href(filters: list[tuple[str, str]], cursor: str, prev: list[str]) -> str:
    pairs = [*filters, *(("prev", p) for p in prev)]
    if cursor:
        pairs.append(("cursor", cursor))
    return url_for("web.incidents") + ("?" + urlencode(pairs) if pairs else "")


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, -, @, tab or CR would start a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.route("/incidents.csv")
@roles(*DESK)
def incidents_csv() -> Any:
    """What the list's filters show, every page of it, under the same visibility rules as the list."""
    query, errors = _list_query()
    if errors:
        return error_page(422, "; ".join(f"{f}: {' '.join(m)}" for f, m in errors.items()))
    session = db.session()
    actor = current_actor()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    query = query.model_copy(update={"limit": 500, "cursor": None})
    rows = 0
    while rows < CSV_MAX_ROWS:
        try:
            items, cursor = list_incidents(session, actor, query)
        except ValidationFailed as exc:
            return error_page(422, "; ".join(f"{e.field}: {e.message}" for e in exc.errors))
        for i in items:
            writer.writerow([csv_cell(v) for v in (
                i.ref, i.title, i.status, i.priority, i.incident_class, i.tlp, i.category,
                i.affected_system.name if i.affected_system else "", i.assignee.username if i.assignee else "",
                i.detected_at.isoformat() if i.detected_at else "",
            )])  # fmt: skip
        rows += len(items)
        if not cursor:
            break
        query = query.model_copy(update={"cursor": cursor})
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return Response(
        "\ufeff" + out.getvalue(),  # the BOM makes Excel read the Vietnamese as UTF-8
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="incidents-{stamp}.csv"', "Cache-Control": "no-store"},
    )


def _form_to_payload(form: Any) -> dict[str, Any]:
    """The intake form's fields, named by their schema paths, as the JSON body the API would receive."""
    data: dict[str, Any] = {}
    for name in (
        "title",
        "description",
        "category",
        "priority",
        "tlp",
        "detection_method",
        "detection_detail",
        "affected_system",
        "system_os",
        "system_services",
        "security_measures",
        "support_requested",
    ):
        value = form.get(name, "").strip()
        if value:
            data[name] = value
    detected = form.get("detected_at", "").strip()
    if detected:
        # The form's datetime-local input is local time in Asia/Ho_Chi_Minh; the schema wants an offset.
        data["detected_at"] = detected + ("+07:00" if _LOCAL_INPUT.match(detected) else "")
    for group, fields in (
        ("reporter", ("name", "organisation", "address", "phone", "email")),
        ("contact", ("name", "position", "phone", "email")),
    ):
        values = {f: form.get(f"{group}.{f}", "").strip() for f in fields}
        values = {k: v for k, v in values.items() if v}
        if values:
            data[group] = values
    handled = form.get("handled_at_report", "")
    if handled in ("yes", "no"):
        data["handled_at_report"] = handled == "yes"
    notified = form.getlist("notified_parties")
    if notified:
        data["notified_parties"] = notified
    for flag in ("beyond_capacity", "exercise"):
        if form.get(flag):
            data[flag] = True
    observables = []
    for i in range(OBSERVABLE_ROWS):
        value = form.get(f"observables[{i}].value", "").strip()
        if value:
            observables.append({"type": form.get(f"observables[{i}].type", ""), "value": value})
    if observables:
        data["observables"] = observables
    return data


def _renumber(errors: dict[str, list[str]], form: Any) -> dict[str, list[str]]:
    """Observable errors name the n-th non-empty row; the form shows them at that row's input."""
    rows = [i for i in range(OBSERVABLE_ROWS) if form.get(f"observables[{i}].value", "").strip()]
    out: dict[str, list[str]] = {}
    for path, messages in errors.items():
        m = re.match(r"^observables\[(\d+)\](.*)$", path)
        if m and int(m.group(1)) < len(rows):
            suffix = m.group(2) or ".value"
            path = f"observables[{rows[int(m.group(1))]}]{suffix}"
        out.setdefault(path, []).extend(messages)
    return out


@bp.route("/incidents/new", methods=["GET", "POST"])
@roles(*EDITORS)
def new_incident() -> Any:
    """Form 03 on the web: validated by the same schema as POST /api/v1/incidents; nothing saved on errors."""
    session = db.session()
    systems = list_systems(session)
    if request.method == "GET":
        return render("intake.html", form={}, errors={}, systems=systems, rows=OBSERVABLE_ROWS, notified=[])
    try:
        data = parse(IncidentCreate, _form_to_payload(request.form), limits())
        result = file_incidents(session=session, items=[data], actor=current_actor(), settings=_settings())
    except ValidationFailed as exc:
        errors = _renumber(field_errors(exc.errors), request.form)
        return render(
            "intake.html",
            422,
            form=request.form,
            errors=errors,
            systems=systems,
            rows=OBSERVABLE_ROWS,
            notified=request.form.getlist("notified_parties"),
        )
    flash(_("Incident %(ref)s filed.", ref=result.body["ref"]), "ok")
    return redirect(url_for("web.incident", ref=result.body["ref"]))


def _page_context(ref: str) -> dict[str, Any]:
    session = db.session()
    actor = current_actor()
    incident = get_incident(session, actor, ref)
    events = list_events(session, actor, incident.id, after=0, limit=500)
    comments = list_comments(session, actor, incident.id, after=0, limit=500)
    from app.web.records import records_context
    from app.web.response import incident_context

    return {
        **incident_context(actor, incident),
        **records_context(actor, incident),
        "incident": incident,
        "events": events,
        "comments": comments,
        "allowed": allowed_targets(Status(incident.status)) if current_user_may_edit() else [],
        "art9": art9_assessment(incident),
        "occurrences": occurrence_count(session, incident.id),
    }


def current_user_may_edit() -> bool:
    return current_actor().role in EDITORS


@bp.route("/incidents/<ref>")
@roles(*DESK)
def incident(ref: str) -> Any:
    try:
        context = _page_context(ref)
    except NotFound:
        return error_page(404, _("Not found, or you may not see it."))
    shown = [*context["events"], *context["comments"], *context["evidence_items"]]
    audit.record_read(db.session(), actor=current_actor(), incident=context["incident"], what="web:incident",
                      source_ip=request.remote_addr, tlps=[getattr(item, "tlp", None) for item in shown])  # fmt: skip
    if is_fragment():
        return render("_incident_body.html", **context)
    return render("incident.html", **context)


def _refused(exc: Exception, ref: str) -> Any:
    """A refused action: back to the incident page with a message that says why."""
    if isinstance(exc, TransitionNotAllowed):
        allowed = ", ".join(labels.label(labels.STATUS, s) for s in exc.extra.get("allowed", [])) or "—"
        message = _(
            "Refused: the incident is now “%(current)s” and cannot move there. Allowed next steps: %(allowed)s.",
            current=labels.label(labels.STATUS, exc.extra.get("current")),
            allowed=allowed,
        )
    elif isinstance(exc, Forbidden):
        message = _("Refused: your role may not do this.")
    elif isinstance(exc, ValidationFailed):
        details = "; ".join(f"{labels.field(e.field)}: {labels.message(e.message)}" for e in exc.errors)
        details = details or labels.message(exc.detail)
        message = _("Refused: %(details)s", details=details)
    else:
        message = _("Refused: %(details)s", details=labels.message(getattr(exc, "detail", str(exc))))
    flash(message, "error")
    return redirect(url_for("web.incident", ref=ref))


@bp.route("/incidents/<ref>/transitions", methods=["POST"])
@roles(*DESK)
def transition(ref: str) -> Any:
    try:
        form = {k: v for k, v in request.form.items() if k in ("to", "note", "resolution", "merged_into") and v}
        data = parse(TransitionIn, form, limits())
        incident = changes.transition(session=db.session(), incident_id=ref, data=data, actor=current_actor())
    except (TransitionNotAllowed, Forbidden, ValidationFailed, Conflict) as exc:
        return _refused(exc, ref)
    flash(_("Moved to “%(status)s”.", status=labels.label(labels.STATUS, incident.status)), "ok")
    return redirect(url_for("web.incident", ref=ref))


@bp.route("/incidents/<ref>/classification", methods=["POST"])
@roles(*DESK)
def classification(ref: str) -> Any:
    try:
        form: dict[str, Any] = {
            "action": request.form.get("action", ""),
            "conditions": request.form.getlist("conditions"),
            "beyond_capacity": bool(request.form.get("beyond_capacity")),
        }
        if request.form.get("class"):
            form["class"] = request.form["class"]
        if request.form.get("note"):
            form["note"] = request.form["note"]
        data = parse(ClassificationIn, form, limits())
        classify(session=db.session(), incident_id=ref, data=data, actor=current_actor())
    except (Forbidden, ValidationFailed, Conflict) as exc:
        return _refused(exc, ref)
    flash(_("Classification recorded."), "ok")
    return redirect(url_for("web.incident", ref=ref))


@bp.route("/incidents/<ref>/comments", methods=["POST"])
@roles(*DESK)
def comment(ref: str) -> Any:
    try:
        form = {"body": request.form.get("body", "")}
        if request.form.get("tlp"):
            form["tlp"] = request.form["tlp"]
        data = parse(CommentCreate, form, limits())
        add_comment(session=db.session(), incident_id=ref, data=data, actor=current_actor())
    except (Forbidden, ValidationFailed) as exc:
        return _refused(exc, ref)
    return redirect(url_for("web.incident", ref=ref) + "#comments")


@bp.route("/incidents/<ref>/participants", methods=["POST"])
@roles(*EDITORS)
def participant(ref: str) -> Any:
    try:
        form = {k: v for k, v in request.form.items() if k in ("user", "organisation", "role") and v}
        data = parse(ParticipantIn, form, limits())
        add_participant(session=db.session(), incident_id=ref, data=data, actor=current_actor())
    except (Forbidden, ValidationFailed, Conflict) as exc:
        return _refused(exc, ref)
    return redirect(url_for("web.incident", ref=ref) + "#participants")


@bp.route("/directory")
@roles(*roles_with(Capability.READ_DIRECTORY))
def directory() -> Any:
    from app.web.response import directory_context

    session = db.session()
    organisations = list_organisations(session)
    return render("directory.html", organisations=organisations, systems=list_systems(session),
                  **directory_context(current_actor(), organisations))  # fmt: skip


@bp.route("/directory/contacts/<int:contact_id>/telegram-link", methods=["POST"])
@roles(*roles_with(Capability.MANAGE_DIRECTORY))
def telegram_link(contact_id: int) -> Any:
    """A one-time Telegram link for a contact, shown once on this answer (never stored, never flashed)."""
    from app.web.response import directory_context
    from playbooks.telegram_links import new_link

    session = db.session()
    try:
        link = new_link(session=session, config=current_app.config, contact_id=contact_id, actor=current_actor(),
                        source_ip=request.remote_addr)  # fmt: skip
    except (Forbidden, NotFound, Conflict) as exc:
        flash(_("Refused: %(details)s", details=str(exc)), "error")
        return redirect(url_for("web.directory") + "#contacts-heading")
    from datetime import datetime

    from playbooks import directory as contacts

    link["name"] = contacts.get_contact(session, contact_id).name
    link["expires"] = datetime.fromisoformat(link["expires_at"]) if link["expires_at"] else None
    organisations = list_organisations(session)
    body, status = render("directory.html", organisations=organisations, systems=list_systems(session),
                          telegram_link=link, **directory_context(current_actor(), organisations))  # fmt: skip
    return body, status, {"Cache-Control": "no-store"}


@bp.route("/directory/contacts/<int:contact_id>/telegram-unlink", methods=["POST"])
@roles(*roles_with(Capability.MANAGE_DIRECTORY))
def telegram_unlink(contact_id: int) -> Any:
    from playbooks.telegram_links import revoke_link

    try:
        revoke_link(session=db.session(), contact_id=contact_id, actor=current_actor(), source_ip=request.remote_addr)
        flash(_("The Telegram account is unlinked; its pages' buttons no longer work for it."), "ok")
    except (Forbidden, NotFound) as exc:
        flash(_("Refused: %(details)s", details=str(exc)), "error")
    return redirect(url_for("web.directory") + "#contacts-heading")
