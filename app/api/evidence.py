"""Evidence routes: upload (multipart), list, download as an attachment only, and the chain of custody."""

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from flask import Response, current_app, jsonify, request
from pydantic import Field

from app import db
from app.api.operations import body, operation
from app.auth import current_actor
from app.errors import ApiError
from incidents import audit, evidence
from incidents.errors import FieldError
from incidents.schemas.base import Strict


class CustodyIn(Strict):
    action: Literal["transferred", "verified", "note"]
    holder: Annotated[str, Field(max_length=300)] | None = None
    note: Annotated[str, Field(max_length=10_000)] | None = None


def content_disposition(filename: str) -> str:
    """`attachment` always, with an ASCII fallback name and the real one as RFC 6266 filename*."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def store() -> evidence.Store:
    root = current_app.config.get("EVIDENCE_DIR") or str(Path(current_app.instance_path) / "evidence")
    return evidence.Store(Path(root), int(current_app.config["EVIDENCE_MAX_BYTES"]))


@operation(
    "POST",
    "/incidents/<incident_id>/evidence",
    "Upload an attachment (multipart/form-data: file, kind, tlp, description)",
    status=201,
    errors=(401, 403, 404, 413, 415, 422),
    tag="evidence",
)
def post_evidence(incident_id: str) -> tuple[Response, int]:
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "Unsupported Media Type", "send multipart/form-data",
                       errors=[FieldError("Content-Type", "must be multipart/form-data")])  # fmt: skip
    limits = store()
    # Evidence may be larger than an API body: its own limit, plus room for the form's other fields.
    request.max_content_length = limits.max_bytes + 1024 * 1024
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(422, "Unprocessable Content", "no file", errors=[FieldError("file", "required")])
    item = evidence.add_evidence(
        session=db.session(),
        incident_id=incident_id,
        stream=upload.stream,
        filename=upload.filename or "evidence.bin",
        media_type=upload.mimetype,
        kind=request.form.get("kind", "other"),
        tlp=request.form.get("tlp"),
        description=request.form.get("description"),
        actor=current_actor(),
        store=limits,
        source_ip=request.remote_addr,
    )
    return jsonify(evidence.as_dict(item)), 201


@operation(
    "GET",
    "/incidents/<incident_id>/evidence",
    "Attachments whose TLP your clearance reaches",
    errors=(401, 404),
    tag="evidence",
)
def list_evidence(incident_id: str) -> Response:
    actor = current_actor()
    items = evidence.list_evidence(db.session(), actor, incident_id)
    response = jsonify({"items": [evidence.as_dict(i) for i in items], "next_cursor": None})
    audit.record_read(db.session(), actor=actor, incident=incident_id, what="evidence", source_ip=request.remote_addr,
                      tlps=[i.tlp for i in items])  # fmt: skip
    return response


@operation(
    "GET",
    "/incidents/<incident_id>/evidence/<int:evidence_id>",
    "One attachment's record",
    errors=(401, 404),
    tag="evidence",
)
def get_evidence(incident_id: str, evidence_id: int) -> Response:
    item = evidence.get_evidence(db.session(), current_actor(), incident_id, evidence_id)
    return jsonify(evidence.as_dict(item))


@operation(
    "GET",
    "/incidents/<incident_id>/evidence/<int:evidence_id>/download",
    "Download an attachment (malware only as an AES ZIP, password `infected`); audited",
    errors=(401, 404, 409),
    tag="evidence",
)
def download_evidence(incident_id: str, evidence_id: int) -> Response:
    found = evidence.download(
        session=db.session(),
        actor=current_actor(),
        incident_id=incident_id,
        evidence_id=evidence_id,
        store=store(),
        source_ip=request.remote_addr,
    )
    path = found.path

    def chunks():
        # The generator opens and closes the file itself, once the last chunk is sent.
        with path.open("rb") as f:
            while chunk := f.read(evidence.CHUNK):
                yield chunk

    response = Response(chunks(), mimetype=found.media_type)
    response.headers["Content-Length"] = str(path.stat().st_size)
    response.headers["Content-Disposition"] = content_disposition(found.filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Evidence-SHA256"] = found.evidence.sha256
    return response


@operation(
    "GET",
    "/incidents/<incident_id>/evidence/<int:evidence_id>/custody",
    "The item's chain of custody, oldest first",
    errors=(401, 404),
    tag="evidence",
)
def get_custody(incident_id: str, evidence_id: int) -> Response:
    item = evidence.get_evidence(db.session(), current_actor(), incident_id, evidence_id)
    return jsonify({"items": [evidence.custody_dict(c) for c in item.custody], "next_cursor": None})


@operation(
    "POST",
    "/incidents/<incident_id>/evidence/<int:evidence_id>/custody",
    "Record a hand-over, a digest check or a note",
    body=CustodyIn,
    status=201,
    errors=(401, 403, 404, 415, 422),
    tag="evidence",
)
def post_custody(incident_id: str, evidence_id: int) -> tuple[Response, int]:
    data = body(CustodyIn)
    record = evidence.add_custody(
        session=db.session(), actor=current_actor(), incident_id=incident_id, evidence_id=evidence_id,
        action=data.action, holder=data.holder, note=data.note, store=store(), source_ip=request.remote_addr,
    )  # fmt: skip
    return jsonify(evidence.custody_dict(record)), 201
