"""Circular 20 Forms 03 (initial report) and 04 (end report): versions frozen from the incident, rendered on demand.

A report version stores its sections exactly as reported (number, title, label → value rows); DOCX and PDF
are both rendered from those rows, so what a download shows is what was reported on that day.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from incidents.access import Actor, tlp_allows
from incidents.base import utcnow
from incidents.clock import LOCAL_TZ
from incidents.enums import (
    CATEGORY_NAMES,
    Category,
    DetectionMethod,
    IncidentClass,
    NotifiedParty,
    SeriousCondition,
)
from incidents.errors import FieldError, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.models import Event, Incident, Organisation
from incidents.policy import Capability, require
from incidents.queries import get_incident
from incidents.records import Evidence, Report
from incidents.schemas.base import Strict
from incidents.uow import in_transaction

KINDS = ("initial", "end")
FORM_NO = {"initial": "03", "end": "04"}

CATEGORY_VI = {Category(code): names[0] for code, names in CATEGORY_NAMES.items()}
DETECTION_VI = {
    DetectionMethod.IDS: "Qua hệ thống phát hiện xâm nhập (IDS)",
    DetectionMethod.LOG_REVIEW: "Qua kiểm tra dữ liệu nhật ký (log)",
    DetectionMethod.NOTIFIED: "Nhận được thông báo từ",
    DetectionMethod.OTHER: "Khác",
}
NOTIFIED_VI = {
    NotifiedParty.NETWORK_MEMBER: "Thành viên mạng lưới ứng cứu sự cố chịu trách nhiệm",
    NotifiedParty.ISP: "Doanh nghiệp cung cấp dịch vụ viễn thông, Internet trực tiếp",
    NotifiedParty.NATIONAL_COORDINATOR: "Cơ quan điều phối quốc gia",
    NotifiedParty.OWNER: "Cơ quan chủ quản hệ thống thông tin",
    NotifiedParty.SPECIALISED_UNIT: "Đơn vị chuyên trách ứng cứu sự cố",
}
CONDITION_VI = {
    SeriousCondition.SERVICE_INTERRUPTION: "(a) Gián đoạn dịch vụ",
    SeriousCondition.STATE_SECRETS: "(b) Có thể lộ bí mật nhà nước",
    SeriousCondition.DATA_INTEGRITY: "(c) Mất toàn vẹn dữ liệu quan trọng không khôi phục được",
    SeriousCondition.LOSS_OF_CONTROL: "(d) Mất quyền điều khiển hệ thống",
    SeriousCondition.SPREAD: "(đ) Có nguy cơ lan rộng sang hệ thống cấp độ 4, 5 khác",
}
CLASS_VI = {IncidentClass.ORDINARY: "Thông thường", IncidentClass.SERIOUS: "Nghiêm trọng"}
# Decision 05 Art. 11.5: whom a report goes to, by who sends it; the parties' names are configuration.
ROUTES = {
    "operator": (("owner", "specialised_unit"), ("national_coordinator",)),
    "specialised_unit": (("owner", "upper_board", "national_coordinator"), ()),
    "board": (("national_level",), ()),
}
# Form 04 cannot go out without these (the form marks them (*)): the field each is filed under.
END_REPORT_MANDATORY = (
    ("reporter_address", "reporter.address", "the reporter's address"),
    ("reporter_phone", "reporter.phone", "the reporter's phone"),
    ("reporter_email", "reporter.email", "the reporter's e-mail"),
)
HANDLED_BY_VI = {
    "self": "Tự xử lý",
    "domestic": "Có sự hỗ trợ của tổ chức trong nước",
    "foreign": "Có sự hỗ trợ của tổ chức nước ngoài",
}
TLP_VI = {
    "clear": "Không (TLP:CLEAR)",
    "green": "Hạn chế trong cộng đồng (TLP:GREEN)",
    "amber": "Hạn chế trong tổ chức (TLP:AMBER)",
    "amber+strict": "Chỉ tổ chức tham gia (TLP:AMBER+STRICT)",
    "red": "Chỉ người được nêu tên (TLP:RED)",
}
NONE = "—"


class Helper(Strict):
    name: Annotated[str, Field(min_length=1, max_length=300)]
    foreign: bool = False


class ReportCreate(Strict):
    """What a new report version adds to the incident's own fields (Form 04's outcome; both forms' notes)."""

    handling_result: Annotated[str, Field(max_length=50_000)] | None = None
    recommendations: Annotated[str, Field(max_length=50_000)] | None = None
    handled_by: Literal["self", "domestic", "foreign"] = "self"
    helpers: Annotated[list[Helper], Field(default_factory=list, max_length=100)]
    national_support_requested: bool = False
    estimated_damage: Annotated[int, Field(ge=0, le=10**15)] | None = None
    attachments_note: Annotated[str, Field(max_length=10_000)] | None = None


def local(at: datetime | None) -> str:
    """`dd/mm/yyyy HH:MM` in Asia/Ho_Chi_Minh, as Vietnamese forms write a time."""
    return at.astimezone(LOCAL_TZ).strftime("%d/%m/%Y %H:%M") if at else NONE


def _v(value: Any) -> str:
    if value is None or value == "" or value == []:
        return NONE
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return str(value)


def _box(checked: bool, label: str) -> str:
    return f"{'☒' if checked else '☐'} {label}"


def _system_rows(incident: Incident) -> list[list[str]]:
    s = incident.affected_system
    operator = s.operator.name_vi if s and s.operator else None
    owner = s.owner.name_vi if s and s.owner else None
    return [
        ["Tên đơn vị vận hành hệ thống thông tin (*)", _v(operator)],
        ["Cơ quan chủ quản", _v(owner)],
        ["Tên hệ thống bị sự cố", _v(s.name if s else None)],
        ["Tên miền", _v(list(s.domains or []) if s else None)],
        ["Địa chỉ IP công khai", _v(list(s.public_ips or []) if s else None)],
        ["Phân loại cấp độ", f"Cấp độ {s.security_level}" if s else NONE],
        ["Đơn vị cung cấp dịch vụ bảo đảm an toàn thông tin", _v(s.security_provider if s else None)],
        ["Đơn vị cung cấp kết nối", _v(s.connectivity_provider if s else None)],
    ]


def _observables(incident: Incident) -> str:
    return _v([f"{o.type}: {o.value}" for o in incident.observables])


def _attachments(session: Session, incident: Incident) -> str:
    items = session.scalars(select(Evidence).where(Evidence.incident_id == incident.id).order_by(Evidence.id)).all()
    return _v([f"{e.filename} ({e.kind}, {e.size} byte, SHA-256 {e.sha256})" for e in items])


def _proposal(incident: Incident) -> str:
    """Who proposed the serious class, when, on which Art. 9 conditions and why; "Không" when nobody did."""
    if incident.class_proposed_at is None:
        return "Không"
    who = incident.class_proposed_by.username if incident.class_proposed_by else NONE
    conditions = [CONDITION_VI.get(SeriousCondition(c), str(c)) for c in incident.serious_conditions or []]
    lines = [f"Người đề xuất: {who}, lúc {local(incident.class_proposed_at)}", *conditions]
    if incident.class_proposal_note:
        lines.append(f"Lý do: {incident.class_proposal_note}")
    return "\n".join(lines)


def _decision(incident: Incident) -> str:
    """The class decided, by whom and when; an ordinary incident nobody decided on says so."""
    decided = incident.incident_class or IncidentClass.ORDINARY  # a form drafted before the incident is stored
    label = CLASS_VI.get(IncidentClass(decided), str(decided))
    if incident.class_decided_at is None:
        return f"{label} (chưa có quyết định nâng lên nghiêm trọng)"
    who = incident.class_decided_by.username if incident.class_decided_by else NONE
    lines = [label, f"Người quyết định: {who}, lúc {local(incident.class_decided_at)}"]
    if incident.class_decision_note:
        lines.append(f"Ý kiến: {incident.class_decision_note}")
    return "\n".join(lines)


def recipients(incident: Incident, routing: dict[str, str]) -> dict[str, list[str]]:
    """Form 03's "Kính gửi" and "Đồng gửi" for the sender `routing["sender"]` (operator by default)."""
    to, cc = ROUTES.get(routing.get("sender") or "operator", ROUTES["operator"])
    owner = incident.affected_system.owner if incident.affected_system else None
    names = {**routing, "owner": owner.name_vi if owner else "Cơ quan chủ quản hệ thống thông tin"}
    return {"to": [names.get(p) or p for p in to], "cc": [names.get(p) or p for p in cc]}


def _end_reporter(incident: Incident) -> None:
    """Refuse Form 04 when a mandatory reporter field is missing, naming the field."""
    missing = [FieldError(field, f"Form 04 needs {what}: add it to the incident")
               for attribute, field, what in END_REPORT_MANDATORY if not getattr(incident, attribute)]  # fmt: skip
    if missing:
        raise ValidationFailed("the end report lacks mandatory reporter details", errors=missing)


def _directives(session: Session, incident: Incident) -> str:
    """The board's directives given on the incident, oldest first, with who gave them and when."""
    events = session.scalars(
        select(Event).where(Event.incident_id == incident.id, Event.kind == "direction.answered").order_by(Event.id)
    ).all()
    return _v([f"{local(e.at)} · {e.actor}: {(e.data or {}).get('directive') or e.note}" for e in events])


def initial_sections(session: Session, incident: Incident, data: ReportCreate, reported_at: datetime) -> list[dict]:
    """Form 03's twelve sections, numbered and labelled as Circular 20 Appendix I prints them."""
    method = incident.detection_method
    notified = set(incident.notified_parties or [])
    method_text = "\n".join(
        _box(method == m.value, DETECTION_VI[m] + (f": {incident.detection_detail}" if method == m.value
                                                    and incident.detection_detail else ""))
        for m in DetectionMethod
    )  # fmt: skip
    return [
        {"number": "1", "title": "THÔNG TIN VỀ TỔ CHỨC/CÁ NHÂN BÁO CÁO SỰ CỐ", "rows": [
            ["Tên tổ chức/cá nhân báo cáo sự cố (*)", _v(incident.reporter_organisation or incident.reporter_name)],
            ["Người báo cáo", _v(incident.reporter_name)],
            ["Địa chỉ (*)", _v(incident.reporter_address)],
            ["Điện thoại (*)", _v(incident.reporter_phone)],
            ["Email (*)", _v(incident.reporter_email)],
        ]},
        {"number": "2", "title": "NGƯỜI LIÊN HỆ", "rows": [
            ["Họ và tên (*)", _v(incident.contact_name)],
            ["Chức vụ", _v(incident.contact_position)],
            ["Điện thoại (*)", _v(incident.contact_phone)],
            ["Email (*)", _v(incident.contact_email)],
        ]},
        {"number": "3", "title": "THÔNG TIN CHI TIẾT VỀ HỆ THỐNG BỊ SỰ CỐ", "rows": _system_rows(incident)},
        {"number": "4", "title": "MÔ TẢ SƠ BỘ VỀ SỰ CỐ (*)", "rows": [
            ["Số hiệu sự cố", incident.ref],
            ["Tên sự cố", _v(incident.title)],
            ["Loại sự cố", CATEGORY_VI.get(Category(incident.category), str(incident.category))],
            ["Mô tả", _v(incident.description)],
            ["Dấu hiệu nhận biết (observables)", _observables(incident)],
        ]},
        {"number": "5", "title": "THỜI ĐIỂM PHÁT HIỆN SỰ CỐ (*)", "rows": [
            ["Ngày, giờ phát hiện (*)", local(incident.detected_at)],
        ]},
        {"number": "6", "title": "HIỆN TRẠNG SỰ CỐ (*)", "rows": [
            ["Hiện trạng", "\n".join([_box(incident.handled_at_report is True, "Đã được xử lý"),
                                      _box(incident.handled_at_report is not True, "Chưa được xử lý")])],
        ]},
        {"number": "7", "title": "CÁCH THỨC PHÁT HIỆN (*)", "rows": [["Cách thức phát hiện", method_text]]},
        {"number": "8", "title": "ĐÃ GỬI THÔNG BÁO SỰ CỐ CHO (*)", "rows": [
            ["Đã thông báo", "\n".join(_box(p.value in notified, NOTIFIED_VI[p]) for p in NotifiedParty)],
        ]},
        {"number": "9", "title": "THÔNG TIN BỔ SUNG VỀ HỆ THỐNG BỊ SỰ CỐ", "rows": [
            ["Hệ điều hành, phiên bản", _v(incident.system_os or (incident.affected_system.os
                                                                 if incident.affected_system else None))],
            ["Các dịch vụ có trên hệ thống", _v(incident.system_services or (
                incident.affected_system.services if incident.affected_system else None))],
            ["Các biện pháp an toàn thông tin đã triển khai", _v(incident.security_measures)],
            ["Tài liệu đính kèm (nhật ký, mẫu mã độc, khác)", _attachments(session, incident)],
            ["Ghi chú về tài liệu đính kèm", _v(data.attachments_note)],
        ]},
        {"number": "10", "title": "THÔNG TIN CẦN BẢO MẬT", "rows": [
            ["Mức độ chia sẻ", TLP_VI.get(str(incident.tlp), str(incident.tlp))],
        ]},
        {"number": "11", "title": "KIẾN NGHỊ, ĐỀ XUẤT HỖ TRỢ", "rows": [
            ["Vượt quá khả năng xử lý của đơn vị", _box(bool(incident.beyond_capacity), "Có")],
            ["Đề xuất nâng lên sự cố nghiêm trọng", _proposal(incident)],
            ["Quyết định phân loại", _decision(incident)],
            ["Kiến nghị, đề xuất", _v(incident.support_requested or data.recommendations)],
        ]},
        {"number": "12", "title": "THỜI GIAN THỰC HIỆN BÁO CÁO SỰ CỐ (*)", "rows": [
            ["Ngày, giờ báo cáo (*)", local(reported_at)],
        ]},
    ]  # fmt: skip


def end_sections(
    session: Session, incident: Incident, data: ReportCreate, reported_at: datetime, standing: Organisation | None
) -> list[dict]:
    """Form 04's sections; the initial report's reference and date come from its latest version."""
    initial = latest(session, incident.id, "initial")
    helpers = [f"{h.name} ({'nước ngoài' if h.foreign else 'trong nước'})" for h in data.helpers]
    s = incident.affected_system
    return [
        {"number": "1", "title": "THÔNG TIN VỀ TỔ CHỨC/CÁ NHÂN BÁO CÁO", "rows": [
            ["Tên tổ chức/cá nhân báo cáo (*)", _v(incident.reporter_organisation or incident.reporter_name
                                                  or (standing.name_vi if standing else None))],
            ["Địa chỉ (*)", _v(incident.reporter_address)],
            ["Điện thoại (*)", _v(incident.reporter_phone)],
            ["Email (*)", _v(incident.reporter_email)],
        ]},
        {"number": "2", "title": "KÝ HIỆU BÁO CÁO BAN ĐẦU SỰ CỐ", "rows": [
            ["Số ký hiệu báo cáo ban đầu", initial.reference if initial else "Không có báo cáo ban đầu"],
            ["Ngày báo cáo ban đầu", local(initial.reported_at)[:10] if initial else NONE],
        ]},
        {"number": "3", "title": "THÔNG TIN VỀ HỆ THỐNG BỊ SỰ CỐ", "rows": [
            ["Tên đơn vị vận hành hệ thống thông tin (*)", _v(s.operator.name_vi if s and s.operator else None)],
            ["Cơ quan chủ quản", _v(s.owner.name_vi if s and s.owner else None)],
            ["Tên hệ thống bị sự cố", _v(s.name if s else None)],
            ["Tên miền", _v(list(s.domains or []) if s else None)],
            ["Địa chỉ IP công khai", _v(list(s.public_ips or []) if s else None)],
            ["Phân loại cấp độ", f"Cấp độ {s.security_level}" if s else NONE],
        ]},
        {"number": "4", "title": "TÊN/MÔ TẢ SỰ CỐ", "rows": [
            ["Số hiệu sự cố", incident.ref],
            ["Tên sự cố", _v(incident.title)],
            ["Loại sự cố", CATEGORY_VI.get(Category(incident.category), str(incident.category))],
            ["Phân loại sự cố", CLASS_VI.get(IncidentClass(incident.incident_class), str(incident.incident_class))],
            ["Mô tả", _v(incident.description)],
            ["Dấu hiệu nhận biết (observables)", _observables(incident)],
        ]},
        {"number": "5", "title": "THỜI ĐIỂM PHÁT HIỆN SỰ CỐ (*)", "rows": [
            ["Ngày, giờ phát hiện (*)", local(incident.detected_at)],
            ["Ngày kết thúc ứng phó (*)", local(incident.resolved_at)[:10] if incident.resolved_at else NONE],
        ]},
        {"number": "6", "title": "KẾT QUẢ XỬ LÝ SỰ CỐ", "rows": [
            ["Ý kiến chỉ đạo của Ban Chỉ đạo", _directives(session, incident)],
            ["Kết quả xử lý", _v(data.handling_result or incident.resolution)],
            ["Hình thức xử lý", HANDLED_BY_VI[data.handled_by]],
            ["Tổ chức hỗ trợ", _v(helpers)],
            ["Đề nghị hỗ trợ từ cơ quan điều phối quốc gia", "Có" if data.national_support_requested else "Không"],
            ["Thiệt hại ước tính (đồng)", f"{data.estimated_damage:,}".replace(",", ".")
             if data.estimated_damage is not None else NONE],
            ["Kiến nghị, đề xuất", _v(data.recommendations)],
        ]},
        {"number": "7", "title": "TÀI LIỆU ĐÍNH KÈM", "rows": [
            ["Tài liệu đính kèm (báo cáo diễn biến, phương án xử lý, nhật ký)", _attachments(session, incident)],
            ["Ghi chú về tài liệu đính kèm", _v(data.attachments_note)],
        ]},
        {"number": "8", "title": "THỜI GIAN THỰC HIỆN BÁO CÁO (*)", "rows": [
            ["Ngày, giờ báo cáo (*)", local(reported_at)],
        ]},
    ]  # fmt: skip


def latest(session: Session, incident_id: int, kind: str, version: int | None = None) -> Report | None:
    stmt = select(Report).where(Report.incident_id == incident_id, Report.kind == kind)
    if version is not None:
        stmt = stmt.where(Report.version == version)
    return session.scalar(stmt.order_by(Report.version.desc()).limit(1))


def create_report(
    *,
    session: Session,
    incident_id: int | str,
    kind: str,
    data: ReportCreate,
    actor: Actor,
    standing_body: str | None,
    routing: dict[str, str] | None = None,
) -> Report:
    """Freeze a new version of the incident's Form 03 or 04 and put it on the timeline (one transaction)."""
    require(actor, Capability.MAKE_REPORTS, f"the role {actor.role} may not make reports")
    if kind not in KINDS:
        raise NotFound(f"no report kind {kind!r}")

    def work() -> Report:
        incident = get_incident(session, actor, incident_id, for_update=True)
        if kind == "end":
            _end_reporter(incident)
        version = (
            session.scalar(
                select(func.max(Report.version)).where(Report.incident_id == incident.id, Report.kind == kind)
            )
            or 0
        ) + 1
        now = utcnow()
        if kind == "initial":
            sections = initial_sections(session, incident, data, now)
        else:
            standing = (
                session.scalar(select(Organisation).where(Organisation.code == standing_body))
                if standing_body
                else None
            )
            sections = end_sections(session, incident, data, now, standing)
        report = Report(
            incident_id=incident.id,
            kind=kind,
            version=version,
            reference=f"{incident.ref}/BC{FORM_NO[kind]}-{version}",
            reported_at=now,
            created_by_id=actor.user_id,
            created_at=now,
            data={
                "sections": sections,
                "exercise": incident.exercise,
                "ref": incident.ref,
                # A version freezes the incident's text: it stays under the TLP it was reported at.
                "tlp": str(incident.tlp),
                "outcome": data.model_dump(mode="json"),
                **({"recipients": recipients(incident, routing or {})} if kind == "initial" else {}),
            },
        )
        session.add(report)
        session.flush()
        record_event(
            session,
            kind="report.created",
            actor=actor,
            incident=incident,
            at=now,
            note=f"Mẫu {FORM_NO[kind]} · {report.reference}",
            data={"ref": incident.ref, "status": str(incident.status), "report": kind, "version": version,
                  "reference": report.reference, "report_id": report.id},
        )  # fmt: skip
        return report

    return in_transaction(session, work)


def get_report(
    session: Session, actor: Actor, incident_id: int | str, kind: str, version: int | None = None
) -> tuple[Incident, Report]:
    """The version asked for, or the latest, among those `actor` may read."""
    require(actor, Capability.READ_RESPONSE)
    incident = get_incident(session, actor, incident_id)
    if kind not in KINDS:
        raise NotFound(f"no report kind {kind!r}")
    stmt = select(Report).where(Report.incident_id == incident.id, Report.kind == kind)
    if version is not None:
        stmt = stmt.where(Report.version == version)
    report = next(iter(_readable(actor, incident, session.scalars(stmt.order_by(Report.version.desc())))), None)
    if report is None:
        raise NotFound(f"incident {incident.ref} has no {kind} report{f' version {version}' if version else ''}")
    return incident, report


def list_reports(session: Session, actor: Actor, incident_id: int | str) -> list[Report]:
    require(actor, Capability.READ_RESPONSE)
    incident = get_incident(session, actor, incident_id)
    stmt = select(Report).where(Report.incident_id == incident.id).order_by(Report.kind, Report.version)
    return _readable(actor, incident, session.scalars(stmt))


def _readable(actor: Actor, incident: Incident, versions: Iterable[Report]) -> list[Report]:
    """Versions frozen under a TLP `actor` may read."""
    return [r for r in versions if tlp_allows(actor, frozen_tlp(r) or str(incident.tlp), incident.participants)]


_TLP_BY_LABEL = {label: level for level, label in TLP_VI.items()}


def frozen_tlp(report: Report) -> str | None:
    """The TLP a version was made under: stored since versions keep it, else what an initial report printed."""
    if report.data.get("tlp"):
        return report.data["tlp"]
    rows = [row for section in report.data.get("sections") or [] for row in section.get("rows") or []]
    return next((_TLP_BY_LABEL[row[1]] for row in rows if row[0] == "Mức độ chia sẻ" and row[1] in _TLP_BY_LABEL), None)


def document(report: Report, board_name: str, place: str) -> dict[str, Any]:
    """What the renderers lay out: heading, title, reference, the frozen sections and the signature line."""
    kind = report.kind
    return {
        "board": board_name,
        "form": f"Mẫu số {FORM_NO[kind]}",
        "basis": "(Ban hành kèm theo Thông tư số 20/2017/TT-BTTTT ngày 12/9/2017)",
        "title": "BÁO CÁO BAN ĐẦU SỰ CỐ MẠNG" if kind == "initial" else "BÁO CÁO KẾT THÚC ỨNG PHÓ SỰ CỐ",
        "reference": f"Số: {report.reference}",
        "dated": f"{place}, ngày " + report.reported_at.astimezone(LOCAL_TZ).strftime("%d tháng %m năm %Y"),
        "recipients": report.data.get("recipients"),
        "exercise": bool(report.data.get("exercise")),
        "sections": report.data.get("sections") or [],
        "signature": ["NGƯỜI BÁO CÁO", "(Ký, ghi rõ họ tên, đóng dấu)"],
        "footnote": "Ghi chú: (*) là các mục bắt buộc. Thư điện tử gửi báo cáo có tiêu đề bắt đầu bằng [TBSC].",
    }


def as_dict(report: Report) -> dict[str, Any]:
    return {
        "id": report.id,
        "kind": report.kind,
        "form": FORM_NO[report.kind],
        "version": report.version,
        "reference": report.reference,
        "reported_at": report.reported_at.isoformat(),
        "created_by": report.created_by.username if report.created_by else None,
        "outcome": report.data.get("outcome"),
    }
