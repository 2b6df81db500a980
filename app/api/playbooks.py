"""Paging routes: playbooks and their versions, runs, pages and acks, tasks, requests for direction."""

from typing import Any

from flask import Response, current_app, jsonify, request

from app import db
from app.api.operations import body, operation
from app.auth import current_actor
from app.errors import ApiError
from incidents.errors import FieldError
from incidents.queries import get_incident
from playbooks import runs, service
from playbooks.models import DirectionRequest, Page, PlaybookRun, PlaybookVersion, Task
from playbooks.schemas import (
    AckBody,
    DirectionRequestBody,
    DirectiveBody,
    PageBody,
    PlaybookEnable,
    RunBody,
    SupportBody,
    TaskDoneBody,
)
from playbooks.settings import Settings

TAG = "paging"


def _settings() -> Settings:
    return Settings.from_config(current_app.config)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _args() -> tuple[int, int]:
    try:
        limit, after = int(request.args.get("limit", 50)), int(request.args.get("cursor") or 0)
    except ValueError:
        raise ApiError(
            422, "Invalid request", "limit and cursor are numbers", errors=[FieldError("limit", "1–500")]
        ) from None
    if not 1 <= limit <= 500 or after < 0:
        raise ApiError(422, "Invalid request", "limit is 1–500", errors=[FieldError("limit", "1–500")])
    return limit, after


def _incident_arg() -> int | None:
    value = request.args.get("incident")
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise ApiError(422, "Invalid request", "incident is an id", errors=[FieldError("incident", "an id")])
    return int(value)


def _list(items: list[Any], limit: int, render: Any) -> Response:
    return jsonify(
        {"items": [render(i) for i in items], "next_cursor": str(items[-1].id) if len(items) == limit else None}
    )


def page_dict(page: Page) -> dict[str, Any]:
    return {
        "id": page.id,
        "incident_id": page.incident_id,
        "ref": page.incident.ref,
        "run_id": page.run_id,
        "step": page.step_path,
        "target_kind": page.target_kind,
        "target": page.target,
        "target_label": page.target_label,
        "reason_vi": page.reason_vi,
        "reason_en": page.reason_en,
        "requires_ack": page.requires_ack,
        "escalation": page.escalation,
        "state": page.state,
        "occurrences": page.occurrences,
        "acked_by": page.acked_by,
        "acked_by_contact_id": page.acked_by_contact_id,
        "acked_at": _iso(page.acked_at),
        "ack_via": page.ack_via,
        "ack_note": page.ack_note,
        "ack_on_behalf": page.ack_on_behalf,
        "escalated_at": _iso(page.escalated_at),
        "first_delivered_at": _iso(page.first_delivered_at),
        "created_at": _iso(page.created_at),
        "recipients": [{"contact_id": r.contact_id, "name": r.contact.name, "state": r.state} for r in page.recipients],
    }


def task_dict(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "incident_id": task.incident_id,
        "run_id": task.run_id,
        "title_vi": task.title_vi,
        "title_en": task.title_en,
        "organisation": task.organisation.code if task.organisation else None,
        "due_at": _iso(task.due_at),
        "state": task.state,
        "done_by": task.done_by,
        "done_at": _iso(task.done_at),
        "note": task.note,
    }


def direction_dict(req: DirectionRequest) -> dict[str, Any]:
    return {
        "id": req.id,
        "incident_id": req.incident_id,
        "run_id": req.run_id,
        "question_vi": req.question_vi,
        "question_en": req.question_en,
        "state": req.state,
        "requested_by": req.requested_by,
        "requested_at": _iso(req.requested_at),
        "answered_at": _iso(req.answered_at),
        "directives": [
            {"id": d.id, "text": d.text, "given_by": d.given_by, "given_at": _iso(d.given_at)} for d in req.directives
        ],
    }


def run_dict(run: PlaybookRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "incident_id": run.incident_id,
        "playbook": run.name,
        "version": run.version.version,
        "state": run.state,
        "trigger": run.trigger,
        "started_by": run.started_by,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "stopped_by": run.stopped_by,
    }


def version_dict(version: PlaybookVersion, *, source: bool = False) -> dict[str, Any]:
    out = {
        "name": version.name,
        "version": version.version,
        "title_vi": version.title_vi,
        "title_en": version.title_en,
        "trigger": version.definition.get("trigger", "auto"),
        "when": version.definition.get("when") or {},
        "enabled": version.enabled,
        "origin": version.origin,
        "created_by": version.created_by,
        "created_at": _iso(version.created_at),
    }
    if source:
        out["source"] = version.source
    return out


@operation("GET", "/playbooks", "The newest version of each playbook", tag=TAG, errors=(401, 403))
def list_playbooks() -> Response:
    versions = service.list_versions(db.session(), actor=current_actor())
    return jsonify({"items": [version_dict(v) for v in versions], "next_cursor": None})


@operation(
    "GET", "/playbooks/<name>/versions", "Every version of a playbook, with its YAML", tag=TAG, errors=(401, 403)
)
def list_playbook_versions(name: str) -> Response:
    versions = service.list_versions(db.session(), actor=current_actor(), name=name)
    return jsonify({"items": [version_dict(v, source=True) for v in versions], "next_cursor": None})


@operation(
    "POST",
    "/playbooks",
    "Upload a playbook version (YAML body); errors name the version, line and field",
    tag=TAG,
    status=201,
    errors=(401, 403, 409, 415, 422),
)
def post_playbook() -> tuple[Response, int]:
    actor = current_actor()
    if request.mimetype not in ("application/yaml", "application/x-yaml", "text/yaml"):
        raise ApiError(
            415,
            "Unsupported Media Type",
            "send Content-Type: application/yaml",
            errors=[FieldError("Content-Type", "must be application/yaml")],
        )
    try:
        source = request.get_data().decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "Invalid request", "YAML must be UTF-8", errors=[FieldError("body", "UTF-8")]) from None
    version = service.upload_playbook(session=db.session(), source=source, actor=actor, name=request.args.get("name"))
    return jsonify(version_dict(version, source=True)), 201


@operation(
    "PATCH",
    "/playbooks/<name>",
    "Enable or disable a playbook's automatic start",
    tag=TAG,
    body=PlaybookEnable,
    errors=(401, 403, 404, 415, 422),
)
def patch_playbook(name: str) -> Response:
    data = body(PlaybookEnable)
    return jsonify(
        version_dict(service.set_enabled(session=db.session(), name=name, enabled=data.enabled, actor=current_actor()))
    )


@operation("GET", "/incidents/<incident_id>/runs", "Playbook runs of an incident", tag=TAG, errors=(401, 403, 404))
def list_runs(incident_id: str) -> Response:
    actor = current_actor()
    incident = get_incident(db.session(), actor, incident_id)
    runs = service.list_runs(db.session(), actor, incident_id=incident.id)
    return jsonify({"items": [run_dict(r) for r in runs], "next_cursor": None})


@operation(
    "POST",
    "/incidents/<incident_id>/runs",
    "Start a playbook on an incident by hand",
    tag=TAG,
    body=RunBody,
    status=201,
    errors=(401, 403, 404, 409, 415, 422),
)
def post_run(incident_id: str) -> tuple[Response, int]:
    data, actor = body(RunBody), current_actor()
    incident = get_incident(db.session(), actor, incident_id)
    run = runs.start_run(
        session=db.session(),
        incident_id=incident.id,
        name=data.playbook,
        actor=actor,
        settings=_settings(),
        version=data.version,
    )
    return jsonify(run_dict(run)), 201


@operation(
    "DELETE",
    "/runs/<int:run_id>",
    "Stop a run: no further steps, its open pages cancelled",
    tag=TAG,
    errors=(401, 403, 404),
)
def stop_run(run_id: int) -> Response:
    return jsonify(run_dict(runs.stop_run(session=db.session(), run_id=run_id, actor=current_actor())))


@operation(
    "GET",
    "/pages",
    "Pages (?incident=ID, ?state=open|acknowledged|cancelled, ?mine=1)",
    tag=TAG,
    errors=(401, 403, 422),
)
def list_pages() -> Response:
    actor, (limit, after) = current_actor(), _args()
    pages = service.list_pages(
        db.session(),
        actor,
        incident_id=_incident_arg(),
        state=request.args.get("state"),
        after=after,
        limit=limit,
        mine=request.args.get("mine") in ("1", "true"),
    )
    return _list(pages, limit, page_dict)


@operation("GET", "/pages/<int:page_id>", "One page with its recipients", tag=TAG, errors=(401, 403, 404))
def get_page(page_id: int) -> Response:
    return jsonify(page_dict(service.get_page(db.session(), current_actor(), page_id)))


@operation(
    "POST",
    "/incidents/<incident_id>/pages",
    "Page a contact, group, organisation or role by hand",
    tag=TAG,
    body=PageBody,
    status=201,
    errors=(401, 403, 404, 415, 422),
)
def post_page(incident_id: str) -> tuple[Response, int]:
    data, actor = body(PageBody), current_actor()
    target = data.model_dump(exclude_none=True, exclude={"reason", "requires_ack"})
    page = service.page_target(
        session=db.session(),
        incident_id=incident_id,
        target=target,
        actor=actor,
        settings=_settings(),
        reason=data.reason,
        requires_ack=data.requires_ack,
    )
    return jsonify(page_dict(service.get_page(db.session(), actor, page.id))), 201


@operation(
    "POST",
    "/pages/<int:page_id>/acks",
    "Acknowledge a page (the person paged, or on behalf with a note)",
    tag=TAG,
    body=AckBody,
    errors=(401, 403, 404, 409, 415, 422),
)
def post_ack(page_id: int) -> Response:
    data, actor = body(AckBody), current_actor()
    page = service.acknowledge_page(
        session=db.session(),
        page_id=page_id,
        actor=actor,
        via="api",
        note=data.note,
        by_contact_id=None,
        source_ip=request.remote_addr,
    )
    return jsonify(page_dict(page))


@operation(
    "POST",
    "/pages/<int:page_id>/support-requests",
    "Ask for support: the next tier is paged",
    tag=TAG,
    body=SupportBody,
    status=201,
    errors=(401, 403, 404, 415, 422),
)
def post_support(page_id: int) -> tuple[Response, int]:
    data, actor = body(SupportBody), current_actor()
    page = service.request_support(
        session=db.session(), page_id=page_id, actor=actor, note=data.note, settings=_settings()
    )
    return jsonify(page_dict(service.get_page(db.session(), actor, page.id))), 201


@operation("GET", "/tasks", "Tasks (?incident=ID, ?state=open|done)", tag=TAG, errors=(401, 403, 422))
def list_tasks() -> Response:
    actor, (limit, after) = current_actor(), _args()
    tasks = service.list_tasks(
        db.session(), actor, incident_id=_incident_arg(), state=request.args.get("state"), after=after, limit=limit
    )
    return _list(tasks, limit, task_dict)


@operation(
    "POST",
    "/tasks/<int:task_id>/completion",
    "Mark a task done",
    tag=TAG,
    body=TaskDoneBody,
    errors=(401, 403, 404, 415, 422),
)
def complete_task(task_id: int) -> Response:
    data = body(TaskDoneBody)
    task = service.complete_task(session=db.session(), task_id=task_id, actor=current_actor(), note=data.note)
    return jsonify(task_dict(task))


@operation(
    "GET",
    "/direction-requests",
    "Requests for direction (?incident=ID, ?state=open|answered)",
    tag=TAG,
    errors=(401, 403, 422),
)
def list_direction_requests() -> Response:
    actor, (limit, after) = current_actor(), _args()
    items = service.list_direction_requests(
        db.session(), actor, incident_id=_incident_arg(), state=request.args.get("state"), after=after, limit=limit
    )
    return _list(items, limit, direction_dict)


@operation(
    "POST",
    "/incidents/<incident_id>/direction-requests",
    "Ask the board for direction",
    tag=TAG,
    body=DirectionRequestBody,
    status=201,
    errors=(401, 403, 404, 415, 422),
)
def post_direction_request(incident_id: str) -> tuple[Response, int]:
    data = body(DirectionRequestBody)
    req = service.request_direction(
        session=db.session(),
        incident_id=incident_id,
        question_vi=data.question_vi,
        question_en=data.question_en,
        actor=current_actor(),
    )
    return jsonify(direction_dict(req)), 201


@operation(
    "POST",
    "/direction-requests/<int:request_id>/directives",
    "The board answers with a directive",
    tag=TAG,
    body=DirectiveBody,
    status=201,
    errors=(401, 403, 404, 415, 422),
)
def post_directive(request_id: int) -> tuple[Response, int]:
    data = body(DirectiveBody)
    directive = service.answer_direction_request(
        session=db.session(), request_id=request_id, text=data.text, actor=current_actor()
    )
    return jsonify(
        {
            "id": directive.id,
            "request_id": directive.request_id,
            "text": directive.text,
            "given_by": directive.given_by,
            "given_at": _iso(directive.given_at),
        }
    ), 201
