"""Directory routes: contacts (CSV import and export, personal data), groups, on-call schedules, who is on call."""

from typing import Any

from flask import Response, current_app, jsonify, request

from app import db
from app.api.operations import body, operation
from app.auth import current_actor
from app.errors import ApiError
from incidents.errors import FieldError
from playbooks import directory, oncall
from playbooks.schemas import ContactBody, GroupBody, OverrideBody, ScheduleBody
from playbooks.telegram_links import new_link, revoke_link

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


def _page(items: list[dict[str, Any]], limit: int) -> Response:
    cursor = str(items[-1]["id"]) if len(items) == limit else None
    return jsonify({"items": items, "next_cursor": cursor})


def _contact_in(data: ContactBody) -> directory.ContactIn:
    return directory.ContactIn(**data.model_dump(exclude_unset=True))


@operation(
    "GET", "/contacts", "Contacts of the directory (?organisation=CODE, ?active=)", tag=TAG, errors=(401, 403, 422)
)
def list_contacts() -> Response:
    actor = current_actor()
    limit, after = _limit()
    active = request.args.get("active")
    items = directory.read_contacts(
        db.session(),
        actor,
        organisation=request.args.get("organisation"),
        after=after,
        limit=limit,
        active=None if active is None else active.lower() in ("1", "true", "yes"),
    )
    return _page(items, limit)


@operation("POST", "/contacts", "Add a contact", tag=TAG, body=ContactBody, status=201, errors=(401, 403, 415, 422))
def post_contact() -> tuple[Response, int]:
    contact = directory.save_contact(
        session=db.session(), data=_contact_in(body(ContactBody)), actor=current_actor(),
        outbound_allow=current_app.config["OUTBOUND_ALLOW"],
    )  # fmt: skip
    return jsonify(directory.contact_dict(contact)), 201


@operation("GET", "/contacts/<int:contact_id>", "One contact", tag=TAG, errors=(401, 403, 404))
def get_contact(contact_id: int) -> Response:
    return jsonify(directory.read_contact(db.session(), current_actor(), contact_id))


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
        session=db.session(), data=_contact_in(body(ContactBody)), actor=current_actor(), contact_id=contact_id,
        outbound_allow=current_app.config["OUTBOUND_ALLOW"],
    )  # fmt: skip
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
    return Response(directory.export_csv(db.session(), current_actor()), mimetype="text/csv")


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


@operation("GET", "/groups", "Groups of contacts", tag=TAG, errors=(401, 403))
def list_groups() -> Response:
    return jsonify({"items": oncall.read_groups(db.session(), current_actor()), "next_cursor": None})


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
    group = oncall.save_group(session=db.session(), actor=current_actor(), **data.model_dump())
    return jsonify(oncall.group_dict(group)), 201


@operation("GET", "/schedules", "On-call schedules with who is on call now", tag=TAG, errors=(401, 403))
def list_schedules() -> Response:
    return jsonify({"items": oncall.read_schedules(db.session(), current_actor()), "next_cursor": None})


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
    data, actor = body(ScheduleBody), current_actor()
    schedule = oncall.save_schedule(session=db.session(), actor=actor, **data.model_dump())
    return jsonify(oncall.schedule_dict(schedule, actor)), 201


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
    override = oncall.add_override(session=db.session(), schedule_code=code, actor=current_actor(), **data.model_dump())
    return jsonify({"id": override.id, "contact_id": override.contact_id}), 201


@operation(
    "GET",
    "/on-call",
    "Who a page to ?organisation=CODE or ?group=CODE reaches now",
    tag=TAG,
    errors=(401, 403, 404, 422),
)
def on_call_now() -> Response:
    people = oncall.read_on_call(
        db.session(), current_actor(), organisation=request.args.get("organisation"), group=request.args.get("group")
    )
    return jsonify({"items": people, "next_cursor": None})


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
