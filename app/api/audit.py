"""The audit trail's export for admins: a range of the hash-chained rows, itself recorded in the trail."""

from flask import Response, jsonify, request

from app import db
from app.api.operations import operation
from app.auth import current_actor
from incidents import audit
from incidents.schemas.base import parse_query
from incidents.schemas.queries import AuditQuery


@operation(
    "GET",
    "/audit",
    "Export the audit trail between since and until, oldest first (admin)",
    tag="audit",
    query=AuditQuery,
    response=None,
    errors=(401, 403, 422),
)
def export_audit() -> Response:
    actor = current_actor()
    query = parse_query(AuditQuery, request.args.to_dict(flat=False))
    rows = audit.export_range(
        session=db.session(), actor=actor, since=query.since, until=query.until,
        source_ip=request.remote_addr, after=query.after(), limit=query.limit,
    )  # fmt: skip
    return jsonify({"items": rows, "next_cursor": query.next_cursor_of(rows)})
