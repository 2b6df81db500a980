"""Alert sources: the intake of senders' own formats (Wazuh, Alertmanager, Kibana, Splunk, TheHive)."""

from flask import Response, current_app, jsonify
from pydantic import BaseModel, Field

from app import db
from app.api import limits, operation, raw_json_body
from app.auth import current_actor, limit_intake
from incidents import service, strict_json
from incidents.policy import Capability, require
from incidents.sources import ingest

TAG = "sources"


class SourceKey(BaseModel):
    """For senders that cannot set a header (Wazuh's built-in integrations, Splunk): the intake token."""

    key: str | None = Field(default=None, description="The intake token; redacted from every log line and metric.")


def _settings() -> service.Settings:
    c = current_app.config
    return service.Settings(
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
    payload = strict_json.loads(raw_json_body())
    return ingest.ingest(
        session=db.session(), kind=kind, payload=payload, actor=actor, settings=_settings(), limits=limits()
    )


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
