"""TAXII 2.1 at /taxii2/: discovery, one API root, collections per audience, objects, manifest, versions, status.

Collections are views of the one STIX store, selected by the reader's clearance (incidents/stix/store.py
applies the incident and TLP rules to every row); who may read or write each is a capability in
incidents/policy.py. Authentication: Basic (the password is an API token) or Bearer.
"""

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from app import db
from app.api.stix import import_settings
from app.auth import check_token
from app.errors import ApiError
from incidents import strict_json
from incidents.access import Actor
from incidents.enums import TLP, Role
from incidents.errors import DomainError, Forbidden, NotFound, ValidationFailed
from incidents.models import TaxiiStatus
from incidents.policy import Capability, allows
from incidents.stix import importer, taxii_query

TAXII = "application/taxii+json;version=2.1"
STIX_MEDIA = "application/stix+json;version=2.1"
API_ROOT = "ucsc"

bp = Blueprint("taxii", __name__, url_prefix="/taxii2")


@dataclass(frozen=True)
class Collection:
    """One audience: the highest TLP it carries and the capabilities that read and write it."""

    id: str
    alias: str
    title: str
    description: str
    max_tlp: str
    read: Capability
    write: Capability

    def can_read(self, actor: Actor) -> bool:
        return allows(actor, self.read)

    def can_write(self, actor: Actor) -> bool:
        return allows(actor, self.write)

    def as_dict(self, actor: Actor) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "alias": self.alias,
            "can_read": self.can_read(actor),
            "can_write": self.can_write(actor),
            "media_types": [STIX_MEDIA],
        }


COLLECTIONS = [
    Collection(
        "1f0b2a4c-5d6e-4f70-8a91-b2c3d4e5f601",
        "public",
        "Công khai (TLP:CLEAR)",
        "Objects anyone may share: TLP:CLEAR only.",
        TLP.CLEAR.value,
        Capability.READ_STIX_FEED,
        Capability.SHARE_STIX,
    ),
    Collection(
        "2a1c3b5d-6e7f-4081-9ba2-c3d4e5f60712",
        "national",
        "Điều phối quốc gia (national coordinator)",
        "What the national coordinator receives: up to TLP:AMBER.",
        TLP.AMBER.value,
        Capability.READ_NATIONAL_STIX,
        Capability.SHARE_STIX,
    ),
    Collection(
        "3b2d4c6e-7f80-4192-acb3-d4e5f6071823",
        "working-group",
        "Tổ ứng cứu (working group)",
        "Everything the reader is cleared for, TLP:RED to named participants only.",
        TLP.RED.value,
        Capability.READ_STIX_FEED,
        Capability.IMPORT_STIX,
    ),
]
_BY_ID = {c.id: c for c in COLLECTIONS}


class TaxiiError(Exception):
    def __init__(self, status: int, title: str, description: str, details: Any = None) -> None:
        super().__init__(description)
        self.status, self.title, self.description, self.details = status, title, description, details


def _answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    response = Response(data, status=status, content_type=TAXII)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _error(status: int, title: str, description: str, details: Any = None, headers: dict | None = None) -> Response:
    body: dict[str, Any] = {"title": title, "description": description, "http_status": str(status)}
    if details:
        body["details"] = details
    return _answer(body, status, headers)


@bp.errorhandler(TaxiiError)
def _taxii_error(exc: TaxiiError) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="ucsc", Bearer realm="ucsc"'} if exc.status == 401 else None
    return _error(exc.status, exc.title, exc.description, exc.details, headers)


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 422
    if isinstance(exc, ValidationFailed) and any(e.field == "next" for e in exc.errors):
        status = 400
    details = {"errors": [{"field": e.field, "message": e.message} for e in exc.errors]} if exc.errors else None
    return _error(status, exc.title, exc.detail, details)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return _error(exc.status, exc.title, exc.detail, None, exc.headers)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return _error(exc.code or 500, exc.name, exc.description or exc.name)


def _token_from_header() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or user or None
    return None


def _media_ok(value: str, kinds: tuple[str, ...]) -> bool:
    for part in value.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        version = next((p.split("=", 1)[1].strip() for p in params if p.startswith("version=")), None)
        if media in ("*/*", "application/*") or (media in kinds and version in (None, "2.1")):
            return True
    return False


@bp.before_request
def _authenticate() -> None:
    accept = request.headers.get("Accept", "*/*")
    if not _media_ok(accept, ("application/taxii+json", "application/stix+json")):
        raise TaxiiError(406, "Not Acceptable", f"the server answers {TAXII}; the Accept header does not allow it")
    token = _token_from_header()
    if token is None:
        raise TaxiiError(401, "Unauthorized", "send HTTP Basic (an API token as the password) or a Bearer token")
    actor, refusal = check_token(token)
    if actor is None:
        raise TaxiiError(401, "Unauthorized", refusal)
    g.actor = actor


def _root_url() -> str:
    # From the request, so a client reached through a proxy or on a test port follows the URL it used.
    return request.url_root.rstrip("/") + f"/taxii2/{API_ROOT}/"


def _collection(collection_id: str, *, write: bool = False) -> Collection:
    col = _BY_ID.get(collection_id) or next((c for c in COLLECTIONS if c.alias == collection_id), None)
    if col is None:
        raise TaxiiError(404, "Not Found", f"no collection {collection_id}")
    actor: Actor = g.actor
    if not col.can_read(actor) and not (write and col.can_write(actor)):
        raise TaxiiError(403, "Forbidden", "your role may not read this collection")
    if write and not col.can_write(actor):
        raise TaxiiError(403, "Forbidden", "your role may not write to this collection")
    return col


def _root(api_root: str) -> None:
    if api_root != API_ROOT:
        raise TaxiiError(404, "Not Found", f"no API root {api_root}")


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _timestamp(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TaxiiError(400, "Bad Request", f"{name} must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise TaxiiError(400, "Bad Request", f"{name} needs a zone (Z)")
    return parsed.astimezone(UTC)


def _filters(*, default_version: str = "last") -> taxii_query.Filters:
    args = request.args

    def listed(name: str) -> tuple[str, ...]:
        return tuple(v.strip() for raw in args.getlist(name) for v in raw.split(",") if v.strip())

    versions = listed("match[version]") or (default_version,)
    for v in versions:
        if v not in ("last", "first", "all"):
            _timestamp("match[version]", v)
    added_after = args.get("added_after")
    return taxii_query.Filters(
        added_after=_timestamp("added_after", added_after) if added_after else None,
        ids=listed("match[id]"),
        types=listed("match[type]"),
        versions=tuple(v if v in ("last", "first", "all") else _timestamp("v", v).isoformat() for v in versions),
        spec_versions=listed("match[spec_version]"),
    )


def _limit() -> int:
    cap = int(current_app.config["TAXII_MAX_PAGE_SIZE"])
    raw = request.args.get("limit")
    if raw is None:
        return cap
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise TaxiiError(400, "Bad Request", "limit must be a positive integer")
    return min(int(raw), cap)


def _page_headers(rows: list[Any]) -> dict[str, str]:
    if not rows:
        return {}
    return {
        "X-TAXII-Date-Added-First": _stamp(rows[0].date_added),
        "X-TAXII-Date-Added-Last": _stamp(rows[-1].date_added),
    }


def _envelope(page: taxii_query.Page) -> str:
    head: dict[str, Any] = {"more": page.more}
    if page.next:
        head["next"] = page.next
    # Stored bodies are served as stored: parsed and re-serialised only if one could not be JSON.
    bodies = (strict_json.servable(r.body, r.stix_id) for r in page.rows)
    return json.dumps(head)[:-1] + ', "objects": [' + ", ".join(bodies) + "]}"


@bp.get("/", strict_slashes=False)
def discovery() -> Response:
    root = _root_url()
    return _answer(
        {
            "title": "UCSC TAXII 2.1",
            "description": "Sự cố an toàn thông tin mạng, tỉnh Thanh Hóa (STIX 2.1 over TAXII 2.1)",
            "contact": current_app.config["MAIL_FROM"],
            "default": root,
            "api_roots": [root],
        }
    )


@bp.get("/<api_root>/", strict_slashes=False)
def api_root(api_root: str) -> Response:
    _root(api_root)
    return _answer(
        {
            "title": "UCSC",
            "description": "Incidents of the province as STIX 2.1, views per audience",
            "versions": [TAXII],
            "max_content_length": int(current_app.config["MAX_CONTENT_LENGTH"]),
        }
    )


@bp.get("/<api_root>/status/<status_id>/", strict_slashes=False)
def status(api_root: str, status_id: str) -> Response:
    _root(api_root)
    row = db.session().get(TaxiiStatus, status_id)
    actor: Actor = g.actor
    if row is None or (row.created_by_id != actor.user_id and actor.role is not Role.ADMIN):
        raise TaxiiError(404, "Not Found", f"no status {status_id}")
    return _answer(_status_body(row))


def _status_body(row: TaxiiStatus) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "request_timestamp": _stamp(row.request_timestamp),
        "total_count": row.total_count,
        "success_count": len(row.successes),
        "successes": row.successes,
        "failure_count": len(row.failures),
        "failures": row.failures,
        "pending_count": len(row.pendings),
        "pendings": row.pendings,
    }


@bp.get("/<api_root>/collections/", strict_slashes=False)
def collections(api_root: str) -> Response:
    _root(api_root)
    actor: Actor = g.actor
    return _answer({"collections": [c.as_dict(actor) for c in COLLECTIONS if c.can_read(actor) or c.can_write(actor)]})


@bp.get("/<api_root>/collections/<collection_id>/", strict_slashes=False)
def collection(api_root: str, collection_id: str) -> Response:
    _root(api_root)
    return _answer(_collection(collection_id).as_dict(g.actor))


@bp.get("/<api_root>/collections/<collection_id>/objects/", strict_slashes=False)
def get_objects(api_root: str, collection_id: str) -> Response:
    _root(api_root)
    col = _collection(collection_id)
    page = taxii_query.query_objects(
        db.session(), g.actor, col.max_tlp, _filters(), limit=_limit(), next_token=request.args.get("next")
    )
    return _answer(_envelope(page), headers=_page_headers(page.rows))


@bp.post("/<api_root>/collections/<collection_id>/objects/", strict_slashes=False)
def add_objects(api_root: str, collection_id: str) -> Response:
    _root(api_root)
    col = _collection(collection_id, write=True)
    media, _, params = request.headers.get("Content-Type", "").partition(";")
    version = params.replace(" ", "").removeprefix("version=") if params else "2.1"
    if media.strip() != "application/taxii+json" or version != "2.1":
        raise TaxiiError(415, "Unsupported Media Type", f"send Content-Type: {TAXII}")
    try:
        envelope = strict_json.loads(request.get_data())
    except ValidationFailed as exc:
        raise TaxiiError(400, "Bad Request", exc.errors[0].message) from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("objects"), list):
        raise TaxiiError(422, "Unprocessable Content", 'send an envelope: {"objects": [...]}')
    status_id = str(uuid.uuid4())
    importer.import_objects(
        session=db.session(),
        objects=envelope["objects"],
        actor=g.actor,
        max_tlp=col.max_tlp,
        status=(status_id, col.id),
        **import_settings(),
    )
    return _answer(_status_body(db.session().get_one(TaxiiStatus, status_id)), 202)


@bp.get("/<api_root>/collections/<collection_id>/objects/<object_id>/", strict_slashes=False)
def get_object(api_root: str, collection_id: str, object_id: str) -> Response:
    _root(api_root)
    col = _collection(collection_id)
    page = taxii_query.query_objects(
        db.session(), g.actor, col.max_tlp, _with_id(object_id), limit=_limit(), next_token=request.args.get("next")
    )
    if not page.rows:
        raise TaxiiError(404, "Not Found", f"no object {object_id} in this collection")
    return _answer(_envelope(page), headers=_page_headers(page.rows))


def _with_id(object_id: str, *, default_version: str = "last") -> taxii_query.Filters:
    f = _filters(default_version=default_version)
    return taxii_query.Filters(f.added_after, (object_id,), f.types, f.versions, f.spec_versions)


@bp.delete("/<api_root>/collections/<collection_id>/objects/<object_id>/", strict_slashes=False)
def delete_object(api_root: str, collection_id: str, object_id: str) -> Response:
    _root(api_root)
    col = _collection(collection_id, write=True)
    taxii_query.delete_object(db.session(), g.actor, col.max_tlp, object_id, _with_id(object_id, default_version="all"))
    return Response(status=200, content_type=TAXII)


@bp.get("/<api_root>/collections/<collection_id>/objects/<object_id>/versions/", strict_slashes=False)
def versions(api_root: str, collection_id: str, object_id: str) -> Response:
    _root(api_root)
    col = _collection(collection_id)
    page = taxii_query.query_objects(
        db.session(),
        g.actor,
        col.max_tlp,
        _with_id(object_id, default_version="all"),
        limit=_limit(),
        next_token=request.args.get("next"),
    )
    if not page.rows:
        raise TaxiiError(404, "Not Found", f"no object {object_id} in this collection")
    body: dict[str, Any] = {"more": page.more, "versions": [_stamp(r.modified) for r in page.rows]}
    if page.next:
        body["next"] = page.next
    return _answer(body, headers=_page_headers(page.rows))


@bp.get("/<api_root>/collections/<collection_id>/manifest/", strict_slashes=False)
def manifest(api_root: str, collection_id: str) -> Response:
    _root(api_root)
    col = _collection(collection_id)
    page = taxii_query.query_objects(
        db.session(), g.actor, col.max_tlp, _filters(), limit=_limit(), next_token=request.args.get("next")
    )
    body: dict[str, Any] = {"more": page.more}
    if page.next:
        body["next"] = page.next
    body["objects"] = [
        {
            "id": r.stix_id,
            "date_added": _stamp(r.date_added),
            "version": _stamp(r.modified),
            "media_type": f"application/stix+json;version={r.spec_version}",
        }
        for r in page.rows
    ]
    return _answer(body, headers=_page_headers(page.rows))


def collection_ids() -> dict[str, str]:
    """Alias → id of every collection (tests and docs)."""
    return {c.alias: c.id for c in COLLECTIONS}


__all__ = ["COLLECTIONS", "bp", "collection_ids"]
