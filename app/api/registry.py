"""The asset registry and the organisations: the data the incident form points at."""

from datetime import date

from flask import Response, jsonify, request

from app import db
from app.api import serialise as out
from app.api.operations import body, operation
from app.auth import current_actor
from app.errors import ApiError
from incidents import systems
from incidents.errors import FieldError
from incidents.policy import Capability, require
from incidents.schemas.reads import SystemRead
from incidents.schemas.registry import SystemCreate
from incidents.systems import save_system


@operation("GET", "/systems", "The information systems in the registry", tag="registry", response=None, errors=(401,))
def list_systems() -> Response:
    require(current_actor(), Capability.READ_DIRECTORY)
    return jsonify({"items": [out.system(s) for s in systems.list_systems(db.session())], "next_cursor": None})


@operation(
    "POST",
    "/systems",
    "Add or replace a system (keyed by code)",
    tag="registry",
    body=SystemCreate,
    response=SystemRead,
    status=201,
    errors=(401, 403, 415, 422),
)
def post_system() -> tuple[Response, int]:
    data = body(SystemCreate)
    system = save_system(session=db.session(), data=data, actor=current_actor())
    return jsonify(out.system(system)), 201


@operation("GET", "/systems/<code>", "One system", tag="registry", response=SystemRead, errors=(401, 404))
def get_system(code: str) -> Response:
    require(current_actor(), Capability.READ_DIRECTORY)
    return jsonify(out.system(systems.get_system(db.session(), code)))


@operation(
    "GET",
    "/organisations",
    "Organisations, optionally those valid on a date (?on=YYYY-MM-DD)",
    tag="registry",
    response=None,
    errors=(401, 422),
)
def list_organisations() -> Response:
    require(current_actor(), Capability.READ_DIRECTORY)
    on = request.args.get("on")
    try:
        day = date.fromisoformat(on) if on else None
    except ValueError:
        raise ApiError(422, "Invalid request", "on must be a date", errors=[FieldError("on", "YYYY-MM-DD")]) from None
    orgs = systems.list_organisations(db.session(), on=day)
    return jsonify(
        {
            "items": [
                {
                    "code": o.code,
                    "name_vi": o.name_vi,
                    "name_en": o.name_en,
                    "valid_from": o.valid_from and o.valid_from.isoformat(),
                    "valid_to": o.valid_to and o.valid_to.isoformat(),
                }
                for o in orgs
            ],
            "next_cursor": None,
        }
    )
