"""Evidence, reports and deadline clocks on the incident page, and response metrics on the board."""

import json
from datetime import datetime, timedelta
from typing import Any

from flask import Response, current_app, flash, redirect, request, url_for
from flask_babel import gettext as _

from app import db
from app.api.evidence import content_disposition, store
from app.api.operations import limits
from app.web.browser import bp, current_actor
from app.web.views import roles
from incidents import deadlines, evidence, metrics
from incidents.access import Actor
from incidents.errors import Conflict, Forbidden, NotFound, ValidationFailed
from incidents.models import Incident
from incidents.policy import Capability, roles_with
from incidents.reporting import render, reports
from incidents.schemas.base import parse

DESK = roles_with(Capability.READ_RESPONSE)
EDITORS = roles_with(Capability.EDIT_INCIDENT)
MEDIA = {"docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "pdf": "application/pdf"}


def records_context(actor: Actor, incident: Incident) -> dict[str, Any]:
    """What the incident page shows of its evidence, report versions and deadline clocks."""
    session = db.session()
    rules = deadlines.rules_of(session)
    return {
        "evidence_items": evidence.list_evidence(session, actor, incident.id),
        "report_versions": reports.list_reports(session, actor, incident.id),
        "clocks": [(c, rules.get(c.rule)) for c in deadlines.clocks_of(session, actor, incident.id)],
        "evidence_kinds": ("log", "screenshot", "malware", "document", "other"),
    }


def board_metrics(actor: Actor, now: datetime) -> dict[str, Any]:
    """The last 26 weeks' response metrics and the charts drawn from them."""
    today = now.astimezone(deadlines.LOCAL_TZ).date()
    data = metrics.compute(session=db.session(), actor=actor, start=today - timedelta(weeks=26), end=today)
    weeks = data["series"]["week"]

    def hours(seconds: float | None) -> float | None:
        return round(seconds / 3600, 1) if seconds is not None else None

    chart = {
        "labels": [w["period"] for w in weeks],
        "datasets": [
            {
                "label": str(_("Median hours to contain")),
                "data": [hours(w.get("contain_median_seconds")) for w in weeks],
            },
            {
                "label": str(_("Median hours to resolve")),
                "data": [hours(w.get("resolve_median_seconds")) for w in weeks],
            },
        ],
    }
    months = data["series"]["month"]
    breach_chart = {
        "labels": [m["period"] for m in months],
        "datasets": [{"label": str(_("Deadline breaches")), "data": [m["breaches"] for m in months]}],
    }
    return {
        "metrics": data,
        "metrics_hours": hours,
        "metrics_chart_json": json.dumps(chart, ensure_ascii=False),
        "breach_chart_json": json.dumps(breach_chart, ensure_ascii=False),
    }


def _back(ref: str, anchor: str) -> Any:
    return redirect(url_for("web.incident", ref=ref) + anchor)


def _refused(exc: Exception, ref: str, anchor: str) -> Any:
    if isinstance(exc, Forbidden):
        flash(_("Refused: your role may not do this."), "error")
    else:
        details = "; ".join(f"{e.field}: {e.message}" for e in getattr(exc, "errors", [])) or getattr(exc, "detail", "")
        flash(_("Refused: %(details)s", details=details), "error")
    return _back(ref, anchor)


@bp.route("/incidents/<ref>/evidence", methods=["POST"])
@roles(*EDITORS)
def upload_evidence(ref: str) -> Any:
    limits_ = store()
    request.max_content_length = limits_.max_bytes + 1024 * 1024
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash(_("Choose a file to attach."), "error")
        return _back(ref, "#evidence")
    try:
        evidence.add_evidence(
            session=db.session(), incident_id=ref, stream=upload.stream, filename=upload.filename,
            media_type=upload.mimetype, kind=request.form.get("kind", "other"), tlp=request.form.get("tlp") or None,
            description=request.form.get("description") or None, actor=current_actor(), store=limits_,
            source_ip=request.remote_addr,
        )  # fmt: skip
    except (Forbidden, ValidationFailed) as exc:
        return _refused(exc, ref, "#evidence")
    flash(_("Evidence attached."), "ok")
    return _back(ref, "#evidence")


@bp.route("/incidents/<ref>/evidence/<int:evidence_id>/download")
@roles(*DESK)
def download_evidence(ref: str, evidence_id: int) -> Any:
    try:
        found = evidence.download(session=db.session(), actor=current_actor(), incident_id=ref,
                                  evidence_id=evidence_id, store=store(), source_ip=request.remote_addr)  # fmt: skip
    except NotFound:
        return Response(status=404)
    except Conflict as exc:
        return _refused(exc, ref, "#evidence")
    path = found.path

    def chunks():
        with path.open("rb") as f:
            while chunk := f.read(evidence.CHUNK):
                yield chunk

    response = Response(chunks(), mimetype=found.media_type)
    response.headers["Content-Disposition"] = content_disposition(found.filename)
    response.headers["Content-Length"] = str(path.stat().st_size)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/incidents/<ref>/reports/<kind>", methods=["POST"])
@roles(*EDITORS)
def make_report(ref: str, kind: str) -> Any:
    form: dict[str, Any] = {
        k: v
        for k, v in request.form.items()
        if k in ("handling_result", "recommendations", "handled_by", "attachments_note") and v
    }
    if request.form.get("estimated_damage"):
        form["estimated_damage"] = request.form["estimated_damage"]
    if request.form.get("national_support_requested"):
        form["national_support_requested"] = True
    helpers = [h.strip() for h in request.form.get("helpers", "").splitlines() if h.strip()]
    form["helpers"] = [{"name": h, "foreign": form.get("handled_by") == "foreign"} for h in helpers]
    try:
        data = parse(reports.ReportCreate, form, limits())
        report = reports.create_report(
            session=db.session(),
            incident_id=ref,
            kind=kind,
            data=data,
            actor=current_actor(),
            standing_body=current_app.config["STANDING_BODY"],
        )
    except (Forbidden, ValidationFailed, NotFound) as exc:
        return _refused(exc, ref, "#reports")
    flash(_("Report %(reference)s made.", reference=report.reference), "ok")
    return _back(ref, "#reports")


@bp.route("/incidents/<ref>/reports/<kind>/<int:version>.<fmt>")
@roles(*DESK)
def download_report(ref: str, kind: str, version: int, fmt: str) -> Any:
    if fmt not in MEDIA:
        return Response(status=404)
    try:
        _incident, report = reports.get_report(db.session(), current_actor(), ref, kind, version)
    except NotFound:
        return Response(status=404)
    doc = reports.document(report, current_app.config["REPORT_BOARD_NAME"])
    data = render.docx_bytes(doc) if fmt == "docx" else render.pdf_bytes(doc)
    response = Response(data, mimetype=MEDIA[fmt])
    response.headers["Content-Disposition"] = content_disposition(f"{report.reference.replace('/', '_')}.{fmt}")
    return response
