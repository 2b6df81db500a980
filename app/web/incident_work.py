"""Working an incident on the web: acknowledge, page again and escalate; its owner; tasks per phase; field edits.

Each form posts to one route that calls one use case (the pages' are those the Telegram buttons and e-mail links
call) and comes back to the page it was sent from with a message; bad input changes nothing and says why in the
user's language, and an incident the user may not see answers 404 whatever the form.
"""

from datetime import datetime
from typing import Any

import nh3
from flask import current_app, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markdown_it import MarkdownIt
from markupsafe import Markup

from app import db
from app.api.operations import limits
from app.web import labels
from app.web.browser import bp, current_actor
from app.web.views import error_page, roles
from incidents import assignment
from incidents.access import Actor
from incidents.base import MAX_ID
from incidents.changes import update_incident
from incidents.clock import LOCAL_TZ
from incidents.errors import Conflict, DomainError, FieldError, Forbidden, NotFound, ValidationFailed
from incidents.models import Incident
from incidents.policy import Capability, allows, roles_with
from incidents.queries import get_incident
from incidents.schemas.base import parse
from incidents.schemas.incidents import IncidentUpdate
from playbooks import page_actions, tasks
from playbooks import service as playbooks
from playbooks.settings import Settings

PEOPLE = roles_with(Capability.READ_RESPONSE)
EDITORS = roles_with(Capability.EDIT_INCIDENT)
NOTE_MAX = 2000
# The incident fields the page edits: what PATCH /api/v1/incidents/{id} accepts for them, validated by its schema.
EDITABLE = ("title", "description", "category", "priority", "tlp", "detected_at", "detection_method",
            "affected_system", "support_requested")  # fmt: skip
FIELD_LABELS = {
    "title": _l("Title"),
    "description": _l("Description"),
    "category": _l("Type of attack"),
    "priority": _l("Priority"),
    "tlp": _l("Confidentiality (TLP)"),
    "detected_at": _l("Detected at"),
    "detection_method": _l("Detection method"),
    "affected_system": _l("Affected system"),
    "support_requested": _l("Support requested"),
    "assignee": _l("Owner"),
    "phase": _l("Phase"),
    "body": _l("Comment"),
    "due_at": _l("Due"),
    "note": _l("Note"),
}
# The domain's reasons (incidents.assignment, playbooks.tasks, the schemas) as the form shows them.
REASONS = {
    "no such account": _l("No such account"),
    "not an active person's account": _l("This account is not an active person's account"),
    "this account's role does not work on incidents": _l("This account's role does not work on incidents"),
    "this account may not see the incident": _l("This account may not see the incident"),
    "required": _l("Required"),
    "at most": _l("Too long"),
    "not a phase of the procedure": _l("Not a phase of the procedure"),
    "not a date and time": _l("Give a date and time"),
    "only operators and admins lower": _l("Only operators and admins lower the TLP"),
    "Input should be": _l("Not one of the choices"),
    "unknown system": _l("No such system in the registry"),
    "in the future": _l("Cannot be in the future"),
}
PHASE_ORDER = [s.value for s in tasks.PHASES]

_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable(
    ["table", "strikethrough"]
)
# What a comment may contain once rendered: text formatting, lists, quotes, code, tables and links; no images
# (the CSP allows none from elsewhere, and a pixel would tell a third party who read the incident), no raw HTML.
_TAGS = {"p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a", "hr",
         "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}  # fmt: skip


def markdown(text: str | None) -> Markup:
    """Markdown rendered and then cleaned by an allow-list; line breaks are kept (a typed newline is a break)."""
    html = _markdown.render(text or "")
    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(cleaned)  # noqa: S704 - sanitised by nh3 just above


def reason(message: str) -> str:
    for prefix, translated in REASONS.items():
        if message.startswith(prefix):
            return str(translated)
    return labels.message(message)


def _field_messages(exc: DomainError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in exc.errors:
        out.setdefault(e.field.split(".")[0], []).append(reason(e.message))
    return out


def _refusal(exc: DomainError, forbidden: str | None = None) -> str:
    """One line for a refused form: the fields and why, in the user's language."""
    if isinstance(exc, Forbidden):
        shown = {f: m for f, m in _field_messages(exc).items() if f in FIELD_LABELS}
        why = "; ".join(f"{labels.label(FIELD_LABELS, f)}: {'; '.join(m)}" for f, m in shown.items())
        return " ".join(filter(None, [forbidden or _("Refused: your role may not do this."), why]))
    if isinstance(exc, Conflict):
        return _("Refused: it changed meanwhile (%(details)s). Reload the page.", details=exc.detail)
    parts = [
        f"{labels.label(FIELD_LABELS, field)}: {'; '.join(messages)}"
        for field, messages in _field_messages(exc).items()
    ]
    return _("Refused: %(details)s", details="; ".join(parts) or exc.detail)


def _back(ref: str, anchor: str) -> Any:
    """Back where the form was (the board sends `next`), else to the incident page at `anchor`."""
    target = request.form.get("next", "")
    if target.startswith("/") and not target.startswith("//"):
        return redirect(target, code=303)
    return redirect(url_for("web.incident", ref=ref) + anchor, code=303)


def _incident(ref: str) -> Incident:
    return get_incident(db.session(), current_actor(), ref)


def _page_of(incident: Incident, page_id: int) -> Any:
    """The page, if it is this incident's and visible; else NotFound (as a page that never was)."""
    if page_id > MAX_ID:  # beyond BIGINT: PostgreSQL would refuse the parameter, and it names nothing
        raise NotFound(f"no page {page_id}")
    page = playbooks.get_page(db.session(), current_actor(), page_id)
    if page.incident_id != incident.id:
        raise NotFound(f"no page {page_id}")
    return page


def _note() -> str | None:
    note = (request.form.get("note") or "").strip()
    if len(note) > NOTE_MAX:
        raise ValidationFailed("note too long", errors=[FieldError("note", f"at most {NOTE_MAX} characters")])
    return note or None


def _settings() -> Settings:
    return Settings.from_config(current_app.config)


def _run(ref: str, anchor: str, action: Any, done: str, forbidden: str | None = None) -> Any:
    """Run one form's use case: a hidden incident or object is a 404 page, a refusal a message, never a 500."""
    try:
        action()
    except NotFound:
        return error_page(404, _("Not found, or you may not see it."))
    except DomainError as exc:
        flash(_refusal(exc, forbidden), "error")
    else:
        flash(done, "ok")
    return _back(ref, anchor)


def work_context(actor: Actor, incident: Incident) -> dict[str, Any]:
    """What the incident page adds for working it: deliveries, the escalations to come, tasks by phase, owners."""
    session = db.session()
    task_rows = tasks.list_for_incident(session, actor, incident.id)
    by_phase: dict[str, list[Any]] = {}
    for task in task_rows:
        by_phase.setdefault(task.phase or "", []).append(task)
    phases = [p for p in PHASE_ORDER if p in by_phase] + ([""] if "" in by_phase else [])
    return {
        "deliveries": page_actions.deliveries_by_page(session, actor, incident.id),
        "plan": page_actions.escalation_plan(session, actor, incident.id),
        "tasks_by_phase": [(p, by_phase[p]) for p in phases],
        "task_count": len(task_rows),
        # Called by the full page only: each candidate's visibility is a query, too many for every live refresh.
        "owners": lambda: [u.username for u in assignment.candidates(session, actor, incident)],
        "may_assign": allows(actor, Capability.ASSIGN_INCIDENT),
        "may_page": allows(actor, Capability.PAGE_BY_HAND),
        "may_tick": lambda t: tasks.may_tick(actor, t),
        "phases": PHASE_ORDER,
        "field_labels": FIELD_LABELS,
        "edit_form": edit_values(incident),
    }


def page_context(incident: Incident) -> dict[str, Any]:
    """For the incident templates (`incident_work(incident)`), read as the signed-in user may read it."""
    return work_context(current_actor(), incident)


def edit_values(incident: Incident) -> dict[str, str]:
    """The edit form's values as the page shows them (local time for the detection time)."""
    local = incident.detected_at.astimezone(LOCAL_TZ) if incident.detected_at else None
    return {
        "title": incident.title or "",
        "description": incident.description or "",
        "category": str(incident.category),
        "priority": str(incident.priority),
        "tlp": str(incident.tlp),
        "detected_at": local.strftime("%Y-%m-%dT%H:%M") if local else "",
        "detection_method": incident.detection_method or "",
        "affected_system": incident.affected_system.code if incident.affected_system else "",
        "support_requested": incident.support_requested or "",
    }


# --- pages: acknowledge, page again, ask for support (escalate) ---------------------------------------------------


@bp.route("/incidents/<ref>/pages/<int:page_id>/acks", methods=["POST"])
@roles(*PEOPLE)
def page_ack(ref: str, page_id: int) -> Any:
    """The person paged acknowledges; an operator or admin may on their behalf with a note (audited if refused)."""

    def action() -> None:
        page = _page_of(_incident(ref), page_id)
        playbooks.acknowledge_page(session=db.session(), page_id=page.id, actor=current_actor(), via="web",
                                   note=_note(), source_ip=request.remote_addr)  # fmt: skip

    refused = _(
        "Refused: you may not acknowledge this page: it did not go to you, and only operators and admins "
        "acknowledge on someone's behalf, with a note."
    )
    return _run(ref, "#pages", action, _("Page acknowledged."), refused)


@bp.route("/incidents/<ref>/pages/<int:page_id>/waves", methods=["POST"])
@roles(*roles_with(Capability.PAGE_BY_HAND))
def page_again(ref: str, page_id: int) -> Any:
    """Send an open page again now, on each recipient's first channel."""

    def action() -> None:
        page = _page_of(_incident(ref), page_id)
        page_actions.repage(session=db.session(), page_id=page.id, actor=current_actor(), settings=_settings(),
                            note=_note())  # fmt: skip

    return _run(ref, "#pages", action, _("Paged again."))


@bp.route("/incidents/<ref>/pages/<int:page_id>/support-requests", methods=["POST"])
@roles(*roles_with(Capability.REQUEST_SUPPORT))
def page_escalate(ref: str, page_id: int) -> Any:
    """Escalate: the next tier is paged (the working group's leader, then the board), as the Telegram button does."""

    def action() -> None:
        page = _page_of(_incident(ref), page_id)
        playbooks.request_support(session=db.session(), page_id=page.id, actor=current_actor(), note=_note(),
                                  settings=_settings())  # fmt: skip

    refused = _("Refused: you may not escalate this page: only someone it went to, an operator or an admin may.")
    return _run(ref, "#pages", action, _("Escalated: the next tier is paged."), refused)


# --- owner ----------------------------------------------------------------------------------------------------------


@bp.route("/incidents/<ref>/assignee", methods=["POST"])
@roles(*roles_with(Capability.ASSIGN_INCIDENT))
def incident_assignee(ref: str) -> Any:
    def action() -> None:
        assignment.assign(session=db.session(), incident_id=_incident(ref).id,
                          assignee=request.form.get("assignee") or None, actor=current_actor())  # fmt: skip

    return _run(ref, "#owner", action, _("Owner saved."))


# --- tasks ----------------------------------------------------------------------------------------------------------


def _due(value: str) -> datetime | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=LOCAL_TZ)
    except ValueError:
        raise ValidationFailed("invalid time", errors=[FieldError("due_at", "not a date and time")]) from None


@bp.route("/incidents/<ref>/tasks", methods=["POST"])
@roles(*EDITORS)
def task_add(ref: str) -> Any:
    def action() -> None:
        incident = _incident(ref)
        tasks.add_task(session=db.session(), incident_id=incident.id, title=request.form.get("title", ""),
                       phase=request.form.get("phase") or None, assignee=request.form.get("assignee") or None,
                       due_at=_due(request.form.get("due_at", "")), actor=current_actor())  # fmt: skip

    return _run(ref, "#tasks", action, _("Task added."))


@bp.route("/incidents/<ref>/tasks/<int:task_id>/assignee", methods=["POST"])
@roles(*EDITORS)
def task_assignee(ref: str, task_id: int) -> Any:
    def action() -> None:
        tasks.assign_task(session=db.session(), task_id=task_id, incident_id=_incident(ref).id,
                          assignee=request.form.get("assignee") or None, actor=current_actor())  # fmt: skip

    return _run(ref, "#tasks", action, _("Task assigned."))


@bp.route("/incidents/<ref>/tasks/<int:task_id>/state", methods=["POST"])
@roles(*EDITORS)
def task_state(ref: str, task_id: int) -> Any:
    done = request.form.get("done") == "1"

    def action() -> None:
        tasks.set_done(session=db.session(), task_id=task_id, incident_id=_incident(ref).id, done=done,
                       note=_note(), actor=current_actor())  # fmt: skip

    return _run(ref, "#tasks", action, _("Task done.") if done else _("Task open again."))


@bp.route("/incidents/<ref>/tasks/<int:task_id>/comments", methods=["POST"])
@roles(*PEOPLE)
def task_comment(ref: str, task_id: int) -> Any:
    def action() -> None:
        tasks.comment_task(session=db.session(), task_id=task_id, incident_id=_incident(ref).id,
                           body=request.form.get("body", ""), actor=current_actor())  # fmt: skip

    return _run(ref, f"#task-{task_id}", action, _("Comment added."))


# --- the incident's fields ------------------------------------------------------------------------------------------


def _changed_fields(incident: Incident) -> dict[str, Any]:
    """The submitted fields that differ from what the form showed, as PATCH's body would carry them."""
    shown = edit_values(incident)
    payload: dict[str, Any] = {}
    for name in EDITABLE:
        if name not in request.form:
            continue
        value = request.form.get(name, "").strip()
        if value == shown[name]:
            continue
        if name == "detected_at":
            payload[name] = (value + "+07:00") if value else None
        else:
            # An emptied title stays "" so the schema names the field; other fields emptied are cleared.
            payload[name] = value if name == "title" else (value or None)
    return payload


@bp.route("/incidents/<ref>/fields", methods=["POST"])
@roles(*EDITORS)
def incident_fields(ref: str) -> Any:
    """Change the incident's fields with PATCH's schema and rules (lowering the TLP is the desk's)."""

    def action() -> None:
        incident = _incident(ref)
        payload = _changed_fields(incident)
        if payload:
            data = parse(IncidentUpdate, payload, limits())
            update_incident(session=db.session(), incident_id=incident.id, data=data, actor=current_actor())

    return _run(ref, "#edit", action, _("Incident details saved."))
