"""Directory routes: contacts (CSV import and export, personal data), groups, on-call schedules, who is on call."""

from typing import Any

from flask import Response, current_app, jsonify, request

from app import db
from app.api import body, operation
from app.auth import current_actor
from app.errors import ApiError
from app.telegram_bot import new_link, revoke_link
from incidents.errors import FieldError
from playbooks import directory
from playbooks.models import Group, Schedule
from playbooks.schemas import ContactBody, GroupBody, OverrideBody, ScheduleBody

TAG = "directory"


def _limit() -> tuple[int, int]:
    try:
        limit = int(request.args.get("limit", 50))
        after = int(request.args.get("cursor") or 0)
    except ValueError:
        raise ApiError(
            422, "Invalid request", "limit and cursor are numbers", errors=[FieldError("limit", "1–500")]
        ) from None
    if not 1 <= limit <= 500 or after < 0:
        raise ApiError(422, "Invalid request", "limit is 1–500", errors=[FieldError("limit", "1–500")])
    return limit, after


def _page(items: list[Any], limit: int, render: Any) -> Response:
    cursor = str(items[-1].id) if len(items) == limit else None
    return jsonify({"items": [render(i) for i in items], "next_cursor": cursor})


def _contact_in(data: ContactBody) -> directory.ContactIn:
    return directory.ContactIn(**data.model_dump(exclude_unset=True))


@operation("GET", "/contacts", "Contacts of the directory (?organisation=CODE, ?active=)", tag=TAG, errors=(401, 422))
def list_contacts() -> Response:
    current_actor()
    limit, after = _limit()
    active = request.args.get("active")
    items = directory.list_contacts(
        db.session(),
        organisation=request.args.get("organisation"),
        after=after,
        limit=limit,
        active=None if active is None else active.lower() in ("1", "true", "yes"),
    )
    return _page(items, limit, directory.contact_dict)


@operation("POST", "/contacts", "Add a contact", tag=TAG, body=ContactBody, status=201, errors=(401, 403, 415, 422))
def post_contact() -> tuple[Response, int]:
    contact = directory.save_contact(session=db.session(), data=_contact_in(body(ContactBody)), actor=current_actor())
    return jsonify(directory.contact_dict(contact)), 201


@operation("GET", "/contacts/<int:contact_id>", "One contact", tag=TAG, errors=(401, 404))
def get_contact(contact_id: int) -> Response:
    current_actor()
    return jsonify(directory.contact_dict(directory.get_contact(db.session(), contact_id)))


@operation(
    "PATCH",
    "/contacts/<int:contact_id>",
    "Change a contact (a new number must be confirmed again)",
    tag=TAG,
    body=ContactBody,
    errors=(401, 403, 404, 415, 422),
)
def patch_contact(contact_id: int) -> Response:
    contact = directory.save_contact(
        session=db.session(), data=_contact_in(body(ContactBody)), actor=current_actor(), contact_id=contact_id
    )
    return jsonify(directory.contact_dict(contact))


@operation(
    "POST",
    "/contacts/<int:contact_id>/confirmations",
    "The person confirms their details are right",
    tag=TAG,
    errors=(401, 403, 404),
)
def confirm_contact(contact_id: int) -> Response:
    contact = directory.confirm_contact(session=db.session(), contact_id=contact_id, actor=current_actor())
    return jsonify(directory.contact_dict(contact))


@operation(
    "GET",
    "/contacts/<int:contact_id>/personal-data",
    "Everything held about one person (audited)",
    tag=TAG,
    errors=(401, 403, 404),
)
def contact_personal_data(contact_id: int) -> Response:
    return jsonify(directory.export_personal_data(session=db.session(), contact_id=contact_id, actor=current_actor()))


@operation(
    "POST", "/contacts/<int:contact_id>/erasure", "Erase a person's details on request", tag=TAG, errors=(401, 403, 404)
)
def erase_contact(contact_id: int) -> Response:
    contact = directory.erase_contact(session=db.session(), contact_id=contact_id, actor=current_actor())
    return jsonify(directory.contact_dict(contact))


@operation("GET", "/contacts.csv", "Every contact as CSV", tag=TAG, errors=(401, 403))
def export_contacts() -> Response:
    actor = current_actor()
    if actor.role.value not in ("admin", "operator"):
        raise ApiError(403, "Forbidden", "only admins and operators export the directory")
    return Response(directory.export_csv(db.session()), mimetype="text/csv")


@operation(
    "POST",
    "/contacts/imports",
    "Create or update contacts from CSV (all or nothing)",
    tag=TAG,
    status=201,
    errors=(401, 403, 415, 422),
)
def import_contacts() -> tuple[Response, int]:
    actor = current_actor()
    if request.mimetype != "text/csv":
        raise ApiError(
            415,
            "Unsupported Media Type",
            "send Content-Type: text/csv",
            errors=[FieldError("Content-Type", "must be text/csv")],
        )
    try:
        text = request.get_data().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(422, "Invalid request", "CSV must be UTF-8", errors=[FieldError("body", "UTF-8")]) from None
    return jsonify(directory.import_csv(session=db.session(), text=text, actor=actor)), 201


def _group(group: Group) -> dict[str, Any]:
    return {
        "code": group.code,
        "name_vi": group.name_vi,
        "name_en": group.name_en,
        "organisation": group.organisation.code if group.organisation else None,
        "members": [m.contact_id for m in group.members],
    }


@operation("GET", "/groups", "Groups of contacts", tag=TAG, errors=(401,))
def list_groups() -> Response:
    current_actor()
    from sqlalchemy import select

    groups = db.session().scalars(select(Group).order_by(Group.code)).all()
    return jsonify({"items": [_group(g) for g in groups], "next_cursor": None})


@operation(
    "POST",
    "/groups",
    "Create or replace a group (keyed by code)",
    tag=TAG,
    body=GroupBody,
    status=201,
    errors=(401, 403, 415, 422),
)
def post_group() -> tuple[Response, int]:
    data = body(GroupBody)
    group = directory.save_group(session=db.session(), actor=current_actor(), **data.model_dump())
    return jsonify(_group(group)), 201


def _schedule(schedule: Schedule) -> dict[str, Any]:
    from incidents.base import utcnow

    now = directory.on_call(schedule, utcnow())
    return {
        "code": schedule.code,
        "name": schedule.name,
        "starts_at": schedule.starts_at.isoformat(),
        "shift_hours": schedule.shift_hours,
        "members": [m.contact_id for m in schedule.members],
        "overrides": [
            {
                "contact_id": o.contact_id,
                "starts_at": o.starts_at.isoformat(),
                "ends_at": o.ends_at.isoformat(),
                "reason": o.reason,
            }
            for o in schedule.overrides
        ],
        "on_call_now": now.id if now else None,
    }


@operation("GET", "/schedules", "On-call schedules with who is on call now", tag=TAG, errors=(401,))
def list_schedules() -> Response:
    current_actor()
    from sqlalchemy import select

    schedules = db.session().scalars(select(Schedule).order_by(Schedule.code)).all()
    return jsonify({"items": [_schedule(s) for s in schedules], "next_cursor": None})


@operation(
    "POST",
    "/schedules",
    "Create or replace a rotation (keyed by code)",
    tag=TAG,
    body=ScheduleBody,
    status=201,
    errors=(401, 403, 415, 422),
)
def post_schedule() -> tuple[Response, int]:
    data = body(ScheduleBody)
    schedule = directory.save_schedule(session=db.session(), actor=current_actor(), **data.model_dump())
    return jsonify(_schedule(schedule)), 201


@operation(
    "POST",
    "/schedules/<code>/overrides",
    "Someone else is on call for a span (leave)",
    tag=TAG,
    body=OverrideBody,
    status=201,
    errors=(401, 403, 404, 415, 422),
)
def post_override(code: str) -> tuple[Response, int]:
    data = body(OverrideBody)
    override = directory.add_override(
        session=db.session(), schedule_code=code, actor=current_actor(), **data.model_dump()
    )
    return jsonify({"id": override.id, "contact_id": override.contact_id}), 201


@operation(
    "GET", "/on-call", "Who a page to ?organisation=CODE or ?group=CODE reaches now", tag=TAG, errors=(401, 404, 422)
)
def on_call_now() -> Response:
    current_actor()
    people = directory.who_is_on_call(
        session=db.session(), organisation=request.args.get("organisation"), group=request.args.get("group")
    )
    return jsonify({"items": [directory.contact_dict(c) for c in people], "next_cursor": None})


@operation(
    "POST",
    "/contacts/<int:contact_id>/telegram-link",
    "A one-time Telegram link for the contact: `/start <code>` and the t.me deep link (admins, operators; audited)",
    tag=TAG,
    status=201,
    errors=(401, 403, 404, 409),
)
def post_telegram_link(contact_id: int) -> tuple[Response, int]:
    link = new_link(session=db.session(), config=current_app.config, contact_id=contact_id, actor=current_actor(),
                    source_ip=request.remote_addr)  # fmt: skip
    response = jsonify(link)
    response.headers["Cache-Control"] = "no-store"  # the code links an account: a credential
    return response, 201


@operation(
    "DELETE",
    "/contacts/<int:contact_id>/telegram-link",
    "Unlink the contact's Telegram account and void its unused link codes (admins, operators; audited)",
    tag=TAG,
    errors=(401, 403, 404),
)
def delete_telegram_link(contact_id: int) -> Response:
    session = db.session()
    revoke_link(session=session, contact_id=contact_id, actor=current_actor(), source_ip=request.remote_addr)
    return jsonify(directory.contact_dict(directory.get_contact(session, contact_id)))
