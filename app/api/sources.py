"""Alert sources: the intake of senders' own formats (Wazuh, Alertmanager, Kibana, Splunk, TheHive)."""

from flask import Response, current_app, jsonify, request
from pydantic import BaseModel, Field

from app import db
from app.api.operations import body, limits, operation, raw_json_body
from app.auth import current_actor, limit_intake, new_token
from incidents import strict_json
from incidents.access import Actor
from incidents.filing import FilingSettings
from incidents.policy import Capability, require
from incidents.schemas.base import parse_query
from incidents.sources import admin, ingest, windows

TAG = "sources"
GROUP_COMMIT = "ucsc.sources_group_commit"


class SourceKey(BaseModel):
    """For senders that cannot set a header (Wazuh's built-in integrations, Splunk): the intake token."""

    key: str | None = Field(default=None, description="The intake token; redacted from every log line and metric.")


def _settings() -> FilingSettings:
    c = current_app.config
    return FilingSettings(
        ref_prefix=c["REF_PREFIX"], standing_body=c["STANDING_BODY"], receipts_by_email=bool(c["SMTP_URL"])
    )


def _answer(result: ingest.IngestResult, extra: dict | None = None) -> Response:
    response = jsonify({**(extra or {}), **result.body})
    response.status_code = result.status_code
    if result.location:
        response.headers["Location"] = result.location
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _ingest(kind: str) -> ingest.IngestResult:
    actor = current_actor()
    require(actor, Capability.FILE_INCIDENT, "your role may not file incidents")  # before the body is read
    limit_intake(actor)
    post = ingest.AlertPost(kind, strict_json.loads(raw_json_body()), actor, _settings(), limits())
    ingest.admit(post)
    # Alerts posted together (a SIEM's storm) share a write transaction: see incidents.uow.GroupCommit.
    return db.submit_together(GROUP_COMMIT, ingest.file_posts, ingest.ingest_alone, post)


@operation(
    "POST",
    "/sources/<kind>",
    "Take an alert in its sender's own format: 201 new incident, 200 grouped, 202 a notice (resolved) applied",
    tag=TAG,
    query=SourceKey,
    status=201,
    errors=(401, 403, 404, 413, 415, 422, 429),
)
def post_source_alert(kind: str) -> Response:
    return _answer(_ingest(kind))


@operation(
    "POST",
    "/sources/thehive/api/v1/alert",
    "TheHive 5's alert creation, so thehive4py and TheHive scripts work with …/api/v1/sources/thehive as TheHive's URL",
    tag=TAG,
    status=201,
    errors=(401, 403, 413, 415, 422, 429),
)
def post_thehive_alert() -> Response:
    result = _ingest("thehive")
    # TheHive answers the alert it created; thehive4py hands that back to its caller.
    ours = result.body
    extra = {"_id": f"~{ours.get('id')}", "_type": "Alert", "status": "New", "stage": "New", "caseId": ours.get("ref")}
    return _answer(result, extra)


# --- sources as data: the standing body registers, watches and snoozes its senders --------------------------------


class WindowQuery(BaseModel):
    """Which windows to list."""

    all: bool = Field(default=False, description="Include cancelled and past windows (the latest 500).")


def _manage() -> Actor:
    actor = current_actor()
    require(actor, Capability.MANAGE_SOURCES, "only the standing body manages alert sources")
    return actor


@operation("GET", "/sources", "Alert sources: token name, interval, last seen, silence, today's counts", tag=TAG,
           errors=(401, 403))  # fmt: skip
def list_sources() -> Response:
    session = db.session()
    sources = admin.list_sources(session, actor=_manage())
    return jsonify({"items": admin.described(session, sources), "next_cursor": None})


@operation(
    "POST",
    "/sources",
    "Register a source; an HTTP kind gets its own intake token, shown once in `token.value`",
    tag=TAG,
    body=admin.SourceCreate,
    status=201,
    errors=(401, 403, 409, 415, 422),
)
def post_source() -> tuple[Response, int, dict[str, str]]:
    actor = _manage()
    data = body(admin.SourceCreate)
    token, digest = new_token()
    session = db.session()
    source = admin.create_source(session=session, data=data, actor=actor, token_digest=digest,
                                 organisation=current_app.config["STANDING_BODY"])  # fmt: skip
    shown = admin.described(session, [source])[0]
    if shown["token"] is not None:
        shown["token"]["value"] = token  # the only time it is shown: only its digest is stored
    return jsonify(shown), 201, {"Location": f"/api/v1/sources/{source.id}"}


@operation("GET", "/sources/<int:source_id>", "One alert source", tag=TAG, errors=(401, 403, 404))
def get_source(source_id: int) -> Response:
    session = db.session()
    source = admin.get_source(session, actor=_manage(), source_id=source_id)
    return jsonify(admin.described(session, [source])[0])


@operation(
    "PATCH",
    "/sources/<int:source_id>",
    "Change a source's name, expected interval (null: not watched), mapping overrides or switch",
    tag=TAG,
    body=admin.SourceUpdate,
    errors=(401, 403, 404, 409, 415, 422),
)
def patch_source(source_id: int) -> Response:
    actor = _manage()
    data = body(admin.SourceUpdate)
    session = db.session()
    source = admin.update_source(session=session, source_id=source_id, data=data, actor=actor)
    return jsonify(admin.described(session, [source])[0])


@operation("GET", "/sources/windows", "Maintenance windows and snoozes in force or to come (?all=true: every one)",
           tag=TAG, query=WindowQuery, errors=(401, 403, 422))  # fmt: skip
def list_windows() -> Response:
    actor = _manage()
    query = parse_query(WindowQuery, request.args.to_dict(flat=False))
    found = windows.list_windows(db.session(), actor=actor, include_past=query.all)
    return jsonify({"items": [windows.as_dict(w) for w in found], "next_cursor": None})


@operation(
    "POST",
    "/sources/windows",
    "Open a maintenance window or snooze (a source, a dedup_key glob, or both), bounded, with reason and approver",
    tag=TAG,
    body=windows.WindowCreate,
    status=201,
    errors=(401, 403, 415, 422),
)
def post_window() -> tuple[Response, int]:
    actor = _manage()
    data = body(windows.WindowCreate)
    window = windows.create_window(session=db.session(), data=data, actor=actor,
                                   max_hours=float(current_app.config["SOURCE_WINDOW_MAX_HOURS"]))  # fmt: skip
    return jsonify(windows.as_dict(window)), 201


@operation("DELETE", "/sources/windows/<int:window_id>", "Cancel a window now (audited)", tag=TAG,
           errors=(401, 403, 404))  # fmt: skip
def delete_window(window_id: int) -> Response:
    window = windows.cancel_window(session=db.session(), window_id=window_id, actor=_manage())
    return jsonify(windows.as_dict(window))
