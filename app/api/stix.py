"""STIX 2.1 routes: an incident as a bundle, a bulk export since a time, and importing a bundle."""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from flask import Response, current_app, jsonify, request
from pydantic import BaseModel, Field

from app import db
from app.api.incidents import service_settings
from app.api.operations import body, operation
from app.auth import current_actor
from app.errors import ApiError
from incidents import audit, strict_json
from incidents.errors import FieldError, ValidationFailed
from incidents.queries import get_incident
from incidents.schemas.base import Strict
from incidents.stix import export, importer, mapping, techniques
from incidents.stix.store import StixSettings

STIX_MEDIA = "application/stix+json;version=2.1"


class StixExportQuery(BaseModel):
    profile: Literal["opencti"] | None = Field(
        default=None, description="opencti adds OpenCTI's top-level incident fields (not strict STIX 2.1)."
    )


class StixBulkQuery(BaseModel):
    since: datetime | None = Field(default=None, description="Objects added strictly after this time.")


class StixBundleIn(BaseModel):
    """A STIX 2.1 bundle as MISP or OpenCTI export it."""

    type: Literal["bundle"]
    id: str
    objects: list[dict[str, Any]]


class StixImportRead(BaseModel):
    stored: int
    duplicates: int
    incidents_created: list[str]
    incidents_enriched: list[str]


# One pattern for the API and the store (incidents.stix.mapping.ATTACK_TECHNIQUE).
TechniqueId = Annotated[str, Field(pattern=f"^{mapping.ATTACK_TECHNIQUE.pattern}$", examples=["T1566.001"])]


class AttackTechniquesIn(Strict):
    """MITRE ATT&CK technique ids to add to an incident (exported as attack-pattern objects)."""

    techniques: list[TechniqueId] = Field(min_length=1, max_length=techniques.MAX_TECHNIQUES)


class AttackTechniquesRead(BaseModel):
    techniques: list[str]


def stix_settings(config: Mapping[str, Any] | None = None) -> StixSettings:
    """The STIX settings of `config`, the current app's unless given (the projector's worker passes its app's)."""
    c = current_app.config if config is None else config
    return StixSettings(
        base_url=str(c["BASE_URL"]), board_name=str(c["STIX_BOARD_NAME"]), push=bool(c["STIX_PUSH_URL"])
    )


def import_settings() -> dict[str, Any]:
    c = current_app.config
    return {
        "settings": service_settings(),
        "default_tlp": str(c["STIX_DEFAULT_TLP"]),
        "limit": int(c["STIX_IMPORT_LIMIT"]),
        "push": bool(c["STIX_PUSH_URL"]),
    }


def _stix_response(text: str) -> Response:
    return Response(text, status=200, content_type=STIX_MEDIA)


@operation(
    "GET",
    "/incidents/<incident_id>/stix",
    "The incident as a STIX 2.1 bundle (report, incident with the Incident Core Extension, observables, TLP)",
    query=StixExportQuery,
    errors=(401, 404, 422),
    tag="stix",
)
def export_incident(incident_id: str) -> Response:
    actor = current_actor()
    profile = request.args.get("profile")
    if profile not in (None, "opencti"):
        raise ValidationFailed("unknown profile", errors=[FieldError("profile", "only opencti is offered")])
    session = db.session()
    incident, text = export.export_incident(session, actor, incident_id, stix_settings(), profile=profile)
    audit.record_read(session, actor=actor, incident=incident.id, what="stix", source_ip=request.remote_addr)
    return _stix_response(text)


@operation(
    "GET",
    "/stix/objects",
    "Every STIX object you may see, added after `since`, as one bundle",
    query=StixBulkQuery,
    errors=(401, 403, 422),
    tag="stix",
)
def export_since() -> Response:
    actor = current_actor()
    raw = request.args.get("since")
    since = None
    if raw:
        try:
            since = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationFailed("bad since", errors=[FieldError("since", "an RFC 3339 timestamp")]) from None
        if since.tzinfo is None:
            raise ValidationFailed("bad since", errors=[FieldError("since", "needs a zone")])
        since = since.astimezone(UTC)
    text, _tlps = export.export_since(db.session(), actor, since, limit=int(current_app.config["STIX_EXPORT_LIMIT"]))
    return _stix_response(text)


@operation(
    "POST",
    "/stix/bundles",
    "Import a STIX 2.1 bundle (all or nothing): incidents it describes are created or enriched",
    body=StixBundleIn,
    response=StixImportRead,
    errors=(401, 403, 413, 415, 422),
    tag="stix",
)
def import_bundle() -> Response:
    actor = current_actor()
    if request.mimetype not in ("application/json", "application/stix+json"):
        raise ApiError(
            415,
            "Unsupported Media Type",
            "send Content-Type: application/stix+json or application/json",
            errors=[FieldError("Content-Type", "must be application/stix+json or application/json")],
        )
    bundle = strict_json.loads(request.get_data())
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle" or not isinstance(bundle.get("objects"), list):
        raise ValidationFailed(
            "not a STIX bundle", errors=[FieldError("body", 'a bundle: {"type": "bundle", "objects": [...]}')]
        )
    result = importer.import_objects(session=db.session(), objects=bundle["objects"], actor=actor, **import_settings())
    response = Response(json.dumps(result.as_dict(), ensure_ascii=False), status=200, mimetype="application/json")
    return response


@operation(
    "GET",
    "/incidents/<incident_id>/attack-techniques",
    "The MITRE ATT&CK technique ids given to an incident",
    response=AttackTechniquesRead,
    errors=(401, 404),
    tag="stix",
)
def list_attack_techniques(incident_id: str) -> Response:
    session = db.session()
    incident = get_incident(session, current_actor(), incident_id)
    return jsonify({"techniques": list(techniques.attack_techniques(session, incident.id))})


@operation(
    "POST",
    "/incidents/<incident_id>/attack-techniques",
    "Add MITRE ATT&CK technique ids to an incident: its STIX export then carries attack-pattern objects",
    body=AttackTechniquesIn,
    response=AttackTechniquesRead,
    errors=(401, 403, 404, 415, 422),
    tag="stix",
)
def add_attack_techniques(incident_id: str) -> Response:
    actor = current_actor()
    data = body(AttackTechniquesIn)
    _incident, given = techniques.add_attack_techniques(db.session(), actor, incident_id, data.techniques)
    return jsonify({"techniques": list(given)})
