"""Report, deadline and metrics routes: Forms 03/04 per incident, Form 05 for a range, clocks, /metrics."""

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from flask import Response, current_app, jsonify, request
from pydantic import Field, model_validator
from sqlalchemy import select

from app import db
from app.api.operations import body, operation
from app.auth import current_actor
from incidents import audit, deadlines, metrics
from incidents.errors import FieldError, ValidationFailed
from incidents.models import Organisation
from incidents.reporting import periodic, render, reports
from incidents.schemas.base import Strict, parse_query

MEDIA = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pdf": "application/pdf",
    "csv": "text/csv; charset=utf-8",
}


class ReportQuery(Strict):
    format: Literal["docx", "pdf"] = "pdf"
    version: Annotated[int, Field(ge=1, le=100_000)] | None = None


# Dates far outside any reporting period would overflow on the way to UTC; a range is at most ten years.
Day = Annotated[date, Field(ge=date(1970, 1, 1), le=date(9998, 12, 31))]


class RangeQuery(Strict):
    start: Day | None = Field(default=None, alias="from")
    end: Day | None = Field(default=None, alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> "RangeQuery":
        if self.start and self.end and self.start > self.end:
            raise ValueError("`from` must not be after `to`")
        if self.start and self.end and (self.end - self.start).days > 3660:
            raise ValueError("a range of at most ten years")
        return self


class PeriodicQuery(RangeQuery):
    format: Literal["docx", "pdf", "csv", "json"] = "pdf"


def routing() -> dict[str, str]:
    """Form 03's sender and the names of the bodies it is routed to, from configuration."""
    c = current_app.config
    return {
        "sender": c["REPORT_SENDER"],
        "specialised_unit": c["REPORT_SPECIALISED_UNIT"],
        "national_coordinator": c["REPORT_NATIONAL_COORDINATOR"],
        "upper_board": c["REPORT_UPPER_BOARD"],
        "national_level": c["REPORT_NATIONAL_LEVEL"],
    }


def _file(data: bytes, media: str, filename: str) -> Response:
    response = Response(data, mimetype=media.split(";")[0])
    if ";" in media:
        response.headers["Content-Type"] = media
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@operation(
    "POST",
    "/incidents/<incident_id>/reports/<kind>",
    "Make a new version of the initial (Form 03) or end (Form 04) report",
    body=reports.ReportCreate,
    status=201,
    errors=(401, 403, 404, 415, 422),
    tag="reports",
)
def post_report(incident_id: str, kind: str) -> tuple[Response, int]:
    data = body(reports.ReportCreate)
    report = reports.create_report(
        session=db.session(),
        incident_id=incident_id,
        kind=kind,
        data=data,
        actor=current_actor(),
        standing_body=current_app.config["STANDING_BODY"],
        routing=routing(),
    )
    return jsonify(reports.as_dict(report)), 201


@operation(
    "GET",
    "/incidents/<incident_id>/reports",
    "Every stored report version of an incident",
    errors=(401, 404),
    tag="reports",
)
def list_reports(incident_id: str) -> Response:
    items = reports.list_reports(db.session(), current_actor(), incident_id)
    return jsonify({"items": [reports.as_dict(r) for r in items], "next_cursor": None})


@operation(
    "GET",
    "/incidents/<incident_id>/reports/<kind>",
    "Download a report version (latest by default) as DOCX or PDF",
    query=ReportQuery,
    errors=(401, 404, 422),
    tag="reports",
)
def get_report(incident_id: str, kind: str) -> Response:
    query = parse_query(ReportQuery, request.args.to_dict(flat=False))
    actor = current_actor()
    session = db.session()
    incident, report = reports.get_report(session, actor, incident_id, kind, query.version)
    doc = reports.document(report, current_app.config["REPORT_BOARD_NAME"], current_app.config["REPORT_PLACE"])
    data = render.docx_bytes(doc) if query.format == "docx" else render.pdf_bytes(doc)
    name = f"{report.reference.replace('/', '_')}.{query.format}"
    audit.record_read(session, actor=actor, incident=incident, what=f"report:{kind}", source_ip=request.remote_addr)
    return _file(data, MEDIA[query.format], name)


@operation(
    "GET",
    "/incidents/<incident_id>/deadlines",
    "The incident's deadline clocks with absolute due and warning times",
    errors=(401, 404),
    tag="reports",
)
def list_deadlines(incident_id: str) -> Response:
    session = db.session()
    clocks = deadlines.clocks_of(session, current_actor(), incident_id)
    rules = deadlines.rules_of(session)
    return jsonify({"items": [deadlines.as_dict(c, rules) for c in clocks], "next_cursor": None})


def _range(query: RangeQuery, *, default_days: int | None = None) -> tuple[date, date]:
    """The query's range; a missing end is today, a missing start 1 January (or `default_days` back)."""
    end = query.end or datetime.now(periodic.LOCAL_TZ).date()
    start = query.start or (end - timedelta(days=default_days) if default_days else date(end.year, 1, 1))
    if start > end or (end - start).days > 3660:
        raise ValidationFailed("invalid range", errors=[FieldError("from", "at most ten years before `to`")])
    return start, end


@operation(
    "GET",
    "/reports/periodic",
    "Form 05 periodic summary for a date range (DOCX, PDF, CSV or JSON)",
    query=PeriodicQuery,
    errors=(401, 403, 422),
    tag="reports",
)
def get_periodic() -> Response:
    query = parse_query(PeriodicQuery, request.args.to_dict(flat=False))
    actor = current_actor()
    session = db.session()
    start, end = _range(query)
    summary = periodic.summarise(session=session, actor=actor, start=start, end=end)
    if query.format == "json":
        return jsonify(periodic.as_dict(summary))
    name = f"BC05_{start:%Y%m%d}_{end:%Y%m%d}.{query.format}"
    if query.format == "csv":
        return _file(periodic.csv_text(summary).encode("utf-8-sig"), MEDIA["csv"], name)
    organisation = session.scalar(select(Organisation).where(Organisation.code == current_app.config["STANDING_BODY"]))
    doc = periodic.document(
        summary,
        board_name=current_app.config["REPORT_BOARD_NAME"],
        place=current_app.config["REPORT_PLACE"],
        organisation=organisation,
        member_code=current_app.config["REPORT_MEMBER_CODE"],
    )
    data = render.docx_bytes(doc) if query.format == "docx" else render.pdf_bytes(doc)
    return _file(data, MEDIA[query.format], name)


@operation(
    "GET",
    "/metrics",
    "Response metrics: time to acknowledge/contain/resolve, pages answered, deadline breaches, by week and month",
    query=RangeQuery,
    errors=(401, 422),
    tag="reports",
)
def get_metrics() -> Response:
    query = parse_query(RangeQuery, request.args.to_dict(flat=False))
    start, end = _range(query, default_days=182)
    return jsonify(metrics.compute(session=db.session(), actor=current_actor(), start=start, end=end))
