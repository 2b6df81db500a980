"""Incident routes: thin handlers that validate, call one service function and serialise."""

from collections.abc import Iterable
from typing import Any

from flask import Response, current_app, jsonify, request
from sqlalchemy.orm import Session

from app import db
from app.api import serialise as out
from app.api.operations import body, limits, operation, raw_json_body
from app.auth import current_actor, limit_intake
from app.errors import ApiError
from incidents import audit, queries
from incidents import comments as incident_comments
from incidents.access import Actor
from incidents.changes import add_observables, classify, transition, update_incident
from incidents.comments import add_comment, edit_comment, get_comment
from incidents.errors import FieldError
from incidents.filing import FilingResult, FilingSettings, IdempotencyClaim, file_incidents
from incidents.filing_together import Filing, file_each
from incidents.participants import add_participant, remove_participant
from incidents.policy import Capability, require
from incidents.queries import occurrence_count, occurrence_counts
from incidents.schemas.base import parse, parse_query
from incidents.schemas.incidents import (
    ClassificationIn,
    CommentCreate,
    CommentUpdate,
    IncidentBatchCreate,
    IncidentCreate,
    IncidentUpdate,
    ParticipantIn,
    TransitionIn,
)
from incidents.schemas.observables import ObservablesAdd
from incidents.schemas.queries import IncidentQuery, PageQuery
from incidents.schemas.reads import (
    ClassificationRead,
    CommentRead,
    IncidentCreated,
    IncidentPage,
    IncidentRead,
    ParticipantRead,
)

_LIST_FIELDS = ("status", "category", "priority", "tlp")
GROUP_COMMIT = "ucsc.filings_group_commit"


def service_settings() -> FilingSettings:
    """The filing settings from the app's configuration (the STIX import files incidents with them too)."""
    return FilingSettings(
        ref_prefix=current_app.config["REF_PREFIX"],
        standing_body=current_app.config["STANDING_BODY"],
        receipts_by_email=bool(current_app.config["SMTP_URL"]),
    )


def _idempotency(actor: Any, raw: bytes) -> IdempotencyClaim | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise ApiError(
            400,
            "Bad Request",
            "Idempotency-Key must be 1–255 characters",
            errors=[FieldError("Idempotency-Key", "1–255 characters")],
        )
    digest = IdempotencyClaim.digest(request.method, request.path, raw)
    return IdempotencyClaim(token_id=actor.token_id or 0, key=key, request_hash=digest)


def _filing_response(result: FilingResult) -> Response:
    response = jsonify(result.body)
    response.status_code = result.status_code
    if result.location:
        response.headers["Location"] = result.location
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@operation(
    "POST",
    "/incidents",
    "File an incident (Idempotency-Key and dedup_key honoured)",
    body=IncidentCreate,
    response=IncidentCreated,
    status=201,
    errors=(401, 403, 413, 415, 422, 429),
)
def create_incident() -> Response:
    actor = current_actor()
    limit_intake(actor)
    raw = raw_json_body()
    data = parse(IncidentCreate, raw, limits())
    filing = Filing(data, actor, service_settings(), _idempotency(actor, raw))
    # Filings posted together (a SIEM's storm) share a write transaction: see incidents.uow.GroupCommit.
    return _filing_response(db.submit_together(GROUP_COMMIT, file_each, _file_alone, filing))


def _file_alone(session: Session, filing: Filing) -> FilingResult:
    return file_incidents(session=session, items=[filing.item], actor=filing.actor, settings=filing.settings,
                          idempotency=filing.claim)  # fmt: skip


@operation(
    "POST",
    "/incidents/bulk",
    "File up to 500 incidents at once, all or nothing",
    body=IncidentBatchCreate,
    response=None,
    status=201,
    errors=(401, 403, 413, 415, 422, 429),
)
def create_incidents_bulk() -> Response:
    actor = current_actor()
    limit_intake(actor)
    raw = raw_json_body()
    data = parse(IncidentBatchCreate, raw, limits())
    result = file_incidents(
        session=db.session(),
        items=data.incidents,
        actor=actor,
        settings=service_settings(),
        idempotency=_idempotency(actor, raw),
        bulk=True,
    )
    return _filing_response(result)


@operation(
    "GET",
    "/incidents",
    "List incidents you may see (filters, q= search, cursor paging)",
    query=IncidentQuery,
    response=IncidentPage,
    errors=(401, 422),
)
def list_incidents() -> Response:
    actor = current_actor()
    query = parse_query(IncidentQuery, request.args.to_dict(flat=False), _LIST_FIELDS)
    session = db.session()
    items, next_cursor = queries.list_incidents(session, actor, query)
    counts = occurrence_counts(session, [i.id for i in items])
    response = jsonify({"items": [out.incident(i, counts.get(i.id, 0)) for i in items], "next_cursor": next_cursor})
    audit.record_read(session, actor=actor, incident=items, what="incidents", source_ip=request.remote_addr)
    return response


def _read(incident_id: str) -> Response:
    session = db.session()
    incident = queries.get_incident(session, current_actor(), incident_id)
    return jsonify(out.incident(incident, occurrence_count(session, incident.id)))


def _audit_read(actor: Actor, incident_id: str, what: str, tlps: Iterable[str | None] = ()) -> None:
    """Record a read of amber+strict or red data in the audit trail, after the read and before answering."""
    audit.record_read(
        db.session(), actor=actor, incident=incident_id, what=what, source_ip=request.remote_addr, tlps=tlps
    )


@operation(
    "GET", "/incidents/<incident_id>", "One incident, by id or reference", response=IncidentRead, errors=(401, 404)
)
def get_incident(incident_id: str) -> Response:
    actor = current_actor()
    response = _read(incident_id)
    _audit_read(actor, incident_id, "incident")
    return response


@operation(
    "PATCH",
    "/incidents/<incident_id>",
    "Change an incident's fields",
    body=IncidentUpdate,
    response=IncidentRead,
    errors=(401, 403, 404, 415, 422),
)
def patch_incident(incident_id: str) -> Response:
    data = body(IncidentUpdate)
    actor = current_actor()
    session = db.session()
    incident = update_incident(session=session, incident_id=incident_id, data=data, actor=actor)
    return _read(str(incident.id))


@operation(
    "POST",
    "/incidents/<incident_id>/transitions",
    "Move an incident to another status",
    body=TransitionIn,
    response=IncidentRead,
    errors=(401, 403, 404, 409, 415, 422),
)
def post_transition(incident_id: str) -> Response:
    data = body(TransitionIn)
    incident = transition(session=db.session(), incident_id=incident_id, data=data, actor=current_actor())
    return _read(str(incident.id))


@operation(
    "GET",
    "/incidents/<incident_id>/classification",
    "The class and the Art. 9 checklist",
    response=ClassificationRead,
    errors=(401, 404),
)
def get_classification(incident_id: str) -> Response:
    incident = queries.get_incident(db.session(), current_actor(), incident_id)
    return jsonify(out.classification(incident))


@operation(
    "POST",
    "/incidents/<incident_id>/classification",
    "Propose (operator) or decide (committee) the class",
    body=ClassificationIn,
    response=ClassificationRead,
    errors=(401, 403, 404, 409, 415, 422),
)
def post_classification(incident_id: str) -> Response:
    data = body(ClassificationIn)
    incident = classify(session=db.session(), incident_id=incident_id, data=data, actor=current_actor())
    return jsonify(out.classification(incident))


@operation(
    "GET",
    "/incidents/<incident_id>/events",
    "The incident's timeline, oldest first",
    query=PageQuery,
    response=None,
    errors=(401, 404, 422),
)
def list_events(incident_id: str) -> Response:
    page = parse_query(PageQuery, request.args.to_dict(flat=False))
    actor = current_actor()
    events = queries.list_events(db.session(), actor, incident_id, after=page.after(), limit=page.limit)
    response = jsonify({"items": [out.event(e) for e in events], "next_cursor": page.next_cursor(events, page.limit)})
    _audit_read(actor, incident_id, "events", [e.tlp for e in events])
    return response


@operation(
    "GET",
    "/incidents/<incident_id>/comments",
    "Comments you may see, oldest first",
    query=PageQuery,
    response=None,
    errors=(401, 404, 422),
)
def list_comments(incident_id: str) -> Response:
    page = parse_query(PageQuery, request.args.to_dict(flat=False))
    actor = current_actor()
    comments = incident_comments.list_comments(db.session(), actor, incident_id, after=page.after(), limit=page.limit)
    response = jsonify(
        {"items": [out.comment(c) for c in comments], "next_cursor": page.next_cursor(comments, page.limit)}
    )
    _audit_read(actor, incident_id, "comments", [c.tlp for c in comments])
    return response


@operation(
    "POST",
    "/incidents/<incident_id>/comments",
    "Add a comment",
    body=CommentCreate,
    response=CommentRead,
    status=201,
    errors=(401, 403, 404, 415, 422),
)
def post_comment(incident_id: str) -> tuple[Response, int]:
    data = body(CommentCreate)
    comment = add_comment(session=db.session(), incident_id=incident_id, data=data, actor=current_actor())
    return jsonify(out.comment(comment)), 201


@operation(
    "PATCH",
    "/incidents/<incident_id>/comments/<int:comment_id>",
    "Edit a comment (history kept)",
    body=CommentUpdate,
    response=CommentRead,
    errors=(401, 403, 404, 415, 422),
)
def patch_comment(incident_id: str, comment_id: int) -> Response:
    data = body(CommentUpdate)
    actor = current_actor()
    edit_comment(session=db.session(), incident_id=incident_id, comment_id=comment_id, data=data, actor=actor)
    return jsonify(out.comment(get_comment(db.session(), actor, incident_id, comment_id)))


@operation(
    "GET",
    "/incidents/<incident_id>/participants",
    "Users and organisations taking part",
    response=None,
    errors=(401, 404),
)
def list_participants(incident_id: str) -> Response:
    actor = current_actor()
    require(actor, Capability.READ_RESPONSE)
    incident = queries.get_incident(db.session(), actor, incident_id)
    response = jsonify({"items": [out.participant(p) for p in incident.participants], "next_cursor": None})
    _audit_read(actor, str(incident.id), "participants")
    return response


@operation(
    "POST",
    "/incidents/<incident_id>/participants",
    "Name a user or organisation as participant",
    body=ParticipantIn,
    response=ParticipantRead,
    status=201,
    errors=(401, 403, 404, 409, 415, 422),
)
def post_participant(incident_id: str) -> tuple[Response, int]:
    data = body(ParticipantIn)
    participant = add_participant(session=db.session(), incident_id=incident_id, data=data, actor=current_actor())
    return jsonify(out.participant(participant)), 201


@operation(
    "DELETE",
    "/incidents/<incident_id>/participants/<int:participant_id>",
    "Remove a participant",
    status=204,
    errors=(401, 403, 404),
)
def delete_participant(incident_id: str, participant_id: int) -> tuple[str, int]:
    remove_participant(
        session=db.session(), incident_id=incident_id, participant_id=participant_id, actor=current_actor()
    )
    return "", 204


@operation(
    "POST",
    "/incidents/<incident_id>/observables",
    "Add observables to an incident",
    body=ObservablesAdd,
    response=IncidentRead,
    errors=(401, 403, 404, 415, 422),
)
def post_observables(incident_id: str) -> Response:
    data = body(ObservablesAdd)
    incident = add_observables(
        session=db.session(), incident_id=incident_id, observables=data.observables, actor=current_actor()
    )
    return _read(str(incident.id))
