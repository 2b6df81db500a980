"""Playbook progress, pages, tasks, requests for direction and STIX on the web (over playbooks.service)."""

from datetime import datetime
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_babel import gettext as _

from app import db
from app.api.stix import stix_settings
from app.web.browser import bp, current_actor
from app.web.views import roles
from incidents import audit, dashboard
from incidents.access import Actor
from incidents.errors import Conflict, Forbidden, NotFound, ValidationFailed
from incidents.models import Incident
from incidents.policy import Capability, allows, roles_with
from incidents.queries import get_incident
from incidents.stix import export
from playbooks import directory, oncall
from playbooks import service as playbooks

DESK = roles_with(Capability.READ_RESPONSE)
ON_CALL_ORGANISATIONS = 60  # the board and directory look up at most this many organisations' on-call


def incident_context(actor: Actor, incident: Incident) -> dict[str, Any]:
    """What the incident page shows of the response: runs, pages with their state, tasks, requests for direction."""
    session = db.session()
    return {
        "runs": playbooks.list_runs(session, actor, incident_id=incident.id),
        "pages": playbooks.list_pages(session, actor, incident_id=incident.id, limit=200),
        "tasks": playbooks.list_tasks(session, actor, incident_id=incident.id, limit=200),
        "directions": playbooks.list_direction_requests(session, actor, incident_id=incident.id, limit=100),
    }


def board_context(actor: Actor, open_incidents: list[Incident]) -> dict[str, Any]:
    """Who was paged and who acknowledged, per open incident, and the open requests for direction."""
    session = db.session()
    paged = dashboard.incidents_with_pages(session, [i.id for i in open_incidents[:50]])
    pages = {i: playbooks.list_pages(session, actor, incident_id=i, limit=50) for i in sorted(paged)}
    inbox = playbooks.list_direction_requests(session, actor, state="open", limit=100)
    refs = {i.id: i for i in open_incidents}
    for req in inbox:
        if req.incident_id not in refs:
            refs[req.incident_id] = get_incident(session, actor, req.incident_id)
    return {"pages_by_incident": pages, "inbox": inbox, "inbox_incidents": refs}


def _back(default: str) -> str:
    target = request.form.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else default


@bp.route("/incidents/<ref>/tasks/<int:task_id>/completion", methods=["POST"])
@roles(*DESK)
def complete_task(ref: str, task_id: int) -> Any:
    try:
        playbooks.complete_task(session=db.session(), task_id=task_id, actor=current_actor(),
                                note=request.form.get("note") or None)  # fmt: skip
    except (Forbidden, NotFound) as exc:
        flash(_("Refused: %(details)s", details=exc.detail), "error")
    else:
        flash(_("Task done."), "ok")
    return redirect(url_for("web.incident", ref=ref) + "#tasks")


@bp.route("/incidents/<ref>/direction-requests", methods=["POST"])
@roles(*roles_with(Capability.REQUEST_DIRECTION))
def request_direction(ref: str) -> Any:
    try:
        playbooks.request_direction(
            session=db.session(), incident_id=ref, question_vi=request.form.get("question_vi", ""),
            question_en=request.form.get("question_en") or None, actor=current_actor(),
        )  # fmt: skip
    except (Forbidden, ValidationFailed, NotFound) as exc:
        flash(_("Refused: %(details)s", details=exc.detail), "error")
    else:
        flash(_("The steering board was asked for direction."), "ok")
    return redirect(url_for("web.incident", ref=ref) + "#directions")


@bp.route("/direction-requests/<int:request_id>/directives", methods=["POST"])
@roles(*roles_with(Capability.GIVE_DIRECTIVES))
def give_directive(request_id: int) -> Any:
    """A board member answers a request for direction; the directive lands on the incident's timeline."""
    try:
        playbooks.answer_direction_request(session=db.session(), request_id=request_id,
                                           text=request.form.get("text", ""), actor=current_actor())  # fmt: skip
    except (Forbidden, ValidationFailed, NotFound) as exc:
        flash(_("Refused: %(details)s", details=exc.detail), "error")
    else:
        flash(_("Directive recorded on the incident's timeline."), "ok")
    return redirect(_back(url_for("web.board")))


@bp.route("/incidents/<ref>/stix")
@roles(*DESK)
def incident_stix(ref: str) -> Any:
    """The incident as a STIX 2.1 bundle, the same export as GET /api/v1/incidents/{id}/stix."""
    session = db.session()
    actor = current_actor()
    try:
        incident, text = export.export_incident(session, actor, ref, stix_settings())
    except NotFound:
        from app.web.views import error_page

        return error_page(404, _("Not found, or you may not see it."))
    audit.record_read(session, actor=actor, incident=incident.id, what="stix", source_ip=request.remote_addr)
    response = Response(text, content_type="application/stix+json;version=2.1")
    response.headers["Content-Disposition"] = f'attachment; filename="{incident.ref}.stix.json"'
    return response


def directory_context(actor: Actor, organisations: list[Any]) -> dict[str, Any]:
    """Contacts and who a page to each organisation reaches now, read as the API reads them for `actor`."""
    session = db.session()
    on_call = {}
    for org in organisations[:ON_CALL_ORGANISATIONS]:
        people = oncall.read_on_call(session, actor, organisation=org.code)
        if people:
            on_call[org.code] = people
    contacts = [
        {**c, "confirmed_at": datetime.fromisoformat(c["confirmed_at"]) if c["confirmed_at"] else None}
        for c in directory.read_contacts(session, actor, limit=500)
    ]
    return {"contacts": contacts, "on_call": on_call, "manage": allows(actor, Capability.MANAGE_DIRECTORY)}


@bp.route("/playbooks")
@roles(*roles_with(Capability.READ_PLAYBOOKS))
def playbook_list() -> Any:
    from app.web.views import render

    return render(
        "playbooks.html", versions=playbooks.list_versions(db.session(), actor=current_actor()), errors={}, source=""
    )


@bp.route("/playbooks/<name>")
@roles(*roles_with(Capability.READ_PLAYBOOKS))
def playbook(name: str) -> Any:
    from app.web.views import error_page, render

    versions = list(playbooks.list_versions(db.session(), actor=current_actor(), name=name))
    if not versions:
        return error_page(404, _("Not found, or you may not see it."))
    return render("playbook.html", name=name, versions=versions, source=versions[-1].source, errors=[])


def _upload(name: str | None) -> Any:
    from app.web.views import render

    source = request.form.get("source", "")
    try:
        version = playbooks.upload_playbook(session=db.session(), source=source, actor=current_actor(), name=name)
    except (ValidationFailed, Conflict) as exc:
        errors = [f"{e.field}: {e.message}" for e in exc.errors] or [exc.detail]
        versions = list(playbooks.list_versions(db.session(), actor=current_actor(), name=name)) if name else []
        template = "playbook.html" if name else "playbooks.html"
        if not name:
            return render(
                template,
                422,
                versions=playbooks.list_versions(db.session(), actor=current_actor()),
                errors=errors,
                source=source,
            )
        return render(template, 422, name=name, versions=versions, source=source, errors=errors)
    flash(_("Playbook %(name)s saved as version %(version)s.", name=version.name, version=version.version), "ok")
    return redirect(url_for("web.playbook", name=version.name))


@bp.route("/playbooks", methods=["POST"])
@roles(*roles_with(Capability.EDIT_PLAYBOOKS))
def playbook_create() -> Any:
    return _upload(None)


@bp.route("/playbooks/<name>", methods=["POST"])
@roles(*roles_with(Capability.EDIT_PLAYBOOKS))
def playbook_update(name: str) -> Any:
    return _upload(name)


@bp.route("/playbooks/<name>/enabled", methods=["POST"])
@roles(*roles_with(Capability.EDIT_PLAYBOOKS))
def playbook_enabled(name: str) -> Any:
    try:
        playbooks.set_enabled(session=db.session(), name=name, enabled=request.form.get("enabled") == "1",
                              actor=current_actor())  # fmt: skip
    except NotFound as exc:
        flash(_("Refused: %(details)s", details=exc.detail), "error")
    return redirect(url_for("web.playbook", name=name))
