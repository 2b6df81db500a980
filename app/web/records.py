"""Evidence, reports and deadline clocks on the incident page, response metrics on the board, and Form 05."""

import json
from datetime import date, datetime, timedelta
from typing import Any

from flask import Response, current_app, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app import db
from app.api.evidence import content_disposition, store
from app.api.operations import limits
from app.api.reports import routing
from app.web.browser import bp, current_actor
from app.web.views import render as render_page
from app.web.views import roles
from incidents import deadlines, evidence, metrics
from incidents.access import Actor
from incidents.enums import Category
from incidents.errors import Conflict, Forbidden, NotFound, ValidationFailed
from incidents.models import Incident, Organisation
from incidents.policy import Capability, roles_with
from incidents.reporting import periodic, render, reports
from incidents.schemas.base import parse

DESK = roles_with(Capability.READ_RESPONSE)
EDITORS = roles_with(Capability.EDIT_INCIDENT)
PERIODIC_READERS = roles_with(Capability.READ_PERIODIC_REPORTS)
MEDIA = {"docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "pdf": "application/pdf"}
PERIODIC_MEDIA = {**MEDIA, "csv": "text/csv; charset=utf-8"}
# Form 04's mandatory reporter fields, as the incident page names them.
MISSING_REPORTER = {
    "reporter.address": _l(
        "Form 04 needs the address of the reporting organisation or person: add it to the incident first."
    ),
    "reporter.phone": _l(
        "Form 04 needs the phone of the reporting organisation or person: add it to the incident first."
    ),
    "reporter.email": _l(
        "Form 04 needs the e-mail of the reporting organisation or person: add it to the incident first."
    ),
}
PRESETS = {"h1": _l("First half-year"), "h2": _l("Second half-year"), "year": _l("Whole year")}
PERIODIC_HEADER = (
    _l("No."), _l("Incident or attack type"), _l("Count"), _l("Handled alone"), _l("With domestic help"),
    _l("With foreign help"), _l("National support requested"), _l("Estimated damage (VND)"),
)  # fmt: skip


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
            routing=routing(),
        )
    except ValidationFailed as exc:
        missing = [MISSING_REPORTER[e.field] for e in exc.errors if e.field in MISSING_REPORTER]
        if not missing:
            return _refused(exc, ref, "#reports")
        for message in missing:
            flash(str(message), "error")
        return _back(ref, "#reports")
    except (Forbidden, NotFound) as exc:
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
    doc = reports.document(report, current_app.config["REPORT_BOARD_NAME"], current_app.config["REPORT_PLACE"])
    data = render.docx_bytes(doc) if fmt == "docx" else render.pdf_bytes(doc)
    response = Response(data, mimetype=MEDIA[fmt])
    response.headers["Content-Disposition"] = content_disposition(f"{report.reference.replace('/', '_')}.{fmt}")
    return response


def _period(args: Any, today: date) -> tuple[date, date, str | None, int, str | None]:
    """The range asked for: explicit `from`/`to`, else a preset of a year; with the preset and an error, if any."""
    try:
        year = min(max(int(args.get("year") or today.year), 1971), 9998)
    except ValueError:
        year = today.year
    preset = args.get("preset") if args.get("preset") in PRESETS else None
    if args.get("from") or args.get("to"):
        try:
            start = date.fromisoformat(args.get("from") or f"{year}-01-01")
            end = date.fromisoformat(args.get("to") or today.isoformat())
        except ValueError:
            return date(year, 1, 1), date(year, 6, 30), "h1", year, str(_("Dates are written YYYY-MM-DD."))
        if start > end:
            return start, end, None, year, str(_("The start date must not be after the end date."))
        if (end - start).days > 3660:
            return start, end, None, year, str(_("A range of at most ten years."))
        if start.year < 1971 or end.year > 9998:
            return start, end, None, year, str(_("Dates are written YYYY-MM-DD."))
        return start, end, None, year, None
    preset = preset or ("h1" if today.month <= 6 else "year")
    start = date(year, 7, 1) if preset == "h2" else date(year, 1, 1)
    end = date(year, 6, 30) if preset == "h1" else date(year, 12, 31)
    return start, end, preset, year, None


@bp.route("/reports/periodic")
@roles(*PERIODIC_READERS)
def periodic_page() -> Any:
    """Form 05 for operators and the board: half-year and year presets, any range, and the files to send."""
    today = datetime.now(deadlines.LOCAL_TZ).date()
    start, end, preset, year, error = _period(request.args, today)
    summary = None
    if error is None:
        summary = periodic.summarise(session=db.session(), actor=current_actor(), start=start, end=end)
    rows = []
    if summary is not None:
        for n, category in enumerate(Category, start=1):
            r = summary.rows[category.value]
            rows.append({"n": n, "category": category.value, **r})
    return render_page(
        "reports_periodic.html", start=start, end=end, preset=preset, year=year, error=error, summary=summary,
        rows=rows, presets=PRESETS, header=PERIODIC_HEADER, money=periodic.money,
    )  # fmt: skip


@bp.route("/reports/periodic.<fmt>")
@roles(*PERIODIC_READERS)
def periodic_file(fmt: str) -> Any:
    if fmt not in PERIODIC_MEDIA:
        return Response(status=404)
    today = datetime.now(deadlines.LOCAL_TZ).date()
    start, end, _preset, _year, error = _period(request.args, today)
    if error is not None:
        flash(error, "error")
        return redirect(url_for("web.periodic_page"))
    session = db.session()
    summary = periodic.summarise(session=session, actor=current_actor(), start=start, end=end)
    if fmt == "csv":
        data = periodic.csv_text(summary).encode("utf-8-sig")
    else:
        config = current_app.config
        organisation = session.scalar(select(Organisation).where(Organisation.code == config["STANDING_BODY"]))
        doc = periodic.document(summary, board_name=config["REPORT_BOARD_NAME"], place=config["REPORT_PLACE"],
                                organisation=organisation, member_code=config["REPORT_MEMBER_CODE"])  # fmt: skip
        data = render.docx_bytes(doc) if fmt == "docx" else render.pdf_bytes(doc)
    response = Response(data, mimetype=PERIODIC_MEDIA[fmt].split(";")[0])
    response.headers["Content-Type"] = PERIODIC_MEDIA[fmt]
    response.headers["Content-Disposition"] = content_disposition(f"BC05_{start:%Y%m%d}_{end:%Y%m%d}.{fmt}")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
