"""Form 05, the periodic summary (half-year due 20 June, year due 15 December, or any range), and its reminders.

Counts come from the incidents detected in the range (local dates), drills, rejected and merged reports left
out; the handling columns come from each incident's latest end report (Form 04), which records whether it was
handled alone, with domestic or with foreign help, whether national support was requested and the damage.
"""

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.access import Actor, stricter
from incidents.base import utcnow
from incidents.clock import LOCAL_TZ
from incidents.enums import Category, Status
from incidents.events import record_event
from incidents.models import Incident, Organisation
from incidents.policy import Capability, require
from incidents.records import Report
from incidents.reporting.reports import CATEGORY_VI, frozen_tlp
from incidents.uow import in_transaction

COLUMNS = ("count", "self", "domestic", "foreign", "national_support", "damage")
HEADER = [
    "STT",
    "Loại sự cố/tấn công mạng",
    "Số lượng",
    "Tự xử lý",
    "Có sự hỗ trợ của tổ chức khác (trong nước)",
    "Có sự hỗ trợ của nước ngoài",
    "Đề nghị cơ quan điều phối quốc gia hỗ trợ",
    "Thiệt hại ước tính (đồng)",
]
REMINDER = "periodic.reminder"
# (name, month, day): Circular 20 Art. 6.1.c.
DUE_DATES = (("half_year", 6, 20), ("year", 12, 15))


@dataclass
class Summary:
    start: date
    end: date
    rows: dict[str, dict[str, int]]
    domestic_helpers: list[str]
    foreign_helpers: list[str]
    recommendations: list[str]

    @property
    def totals(self) -> dict[str, int]:
        return {c: sum(r[c] for r in self.rows.values()) for c in COLUMNS}


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return (
        datetime.combine(start, time(0), LOCAL_TZ),
        datetime.combine(end + timedelta(days=1), time(0), LOCAL_TZ),
    )


def summarise(*, session: Session, actor: Actor, start: date, end: date) -> Summary:
    """Form 05's table for incidents detected from `start` to `end` inclusive (local dates)."""
    require(actor, Capability.READ_PERIODIC_REPORTS, f"the role {actor.role} may not read periodic reports")
    lo, hi = _bounds(start, end)
    incidents = session.execute(
        select(Incident.id, Incident.category, Incident.tlp).where(
            Incident.detected_at >= lo,
            Incident.detected_at < hi,
            Incident.exercise.is_(False),
            Incident.status.not_in([Status.REJECTED, Status.MERGED]),
        )
    ).all()
    ids = [i.id for i in incidents]
    latest_version = (
        select(Report.incident_id, func.max(Report.version).label("v"))
        .where(Report.kind == "end", Report.incident_id.in_(ids))
        .group_by(Report.incident_id)
        .subquery()
    )
    reports = {
        r.incident_id: r
        for r in session.scalars(
            select(Report)
            .join(
                latest_version,
                (Report.incident_id == latest_version.c.incident_id) & (Report.version == latest_version.c.v),
            )
            .where(Report.kind == "end")
        )
    }
    outcomes = {incident_id: (r.data or {}).get("outcome") or {} for incident_id, r in reports.items()}
    rows = {c.value: dict.fromkeys(COLUMNS, 0) for c in Category}
    domestic: list[str] = []
    foreign: list[str] = []
    recommendations: list[str] = []
    for incident in incidents:
        row = rows[str(incident.category)]
        row["count"] += 1
        outcome = outcomes.get(incident.id)
        if outcome is None:
            continue
        handled_by = outcome.get("handled_by", "self")
        row[handled_by if handled_by in ("self", "domestic", "foreign") else "self"] += 1
        row["national_support"] += bool(outcome.get("national_support_requested"))
        row["damage"] += int(outcome.get("estimated_damage") or 0)
        for helper in outcome.get("helpers") or []:
            names = foreign if helper.get("foreign") else domestic
            if helper["name"] not in names:
                names.append(helper["name"])
        # Recommendations are quoted only from incidents every reader of the report may see, and only when they
        # were written under such a level too.
        level = stricter(incident.tlp, frozen_tlp(reports[incident.id]))
        if outcome.get("recommendations") and level in ("clear", "green", "amber"):
            recommendations.append(outcome["recommendations"])
    return Summary(start, end, rows, domestic, foreign, recommendations)


def money(value: int) -> str:
    return f"{value:,}".replace(",", ".")


def table_rows(summary: Summary) -> list[list[str]]:
    out = []
    for n, category in enumerate(Category, start=1):
        r = summary.rows[category.value]
        out.append([str(n), CATEGORY_VI[category], *[str(r[c]) for c in COLUMNS[:-1]], money(r["damage"])])
    t = summary.totals
    out.append(["", "Tổng cộng", *[str(t[c]) for c in COLUMNS[:-1]], money(t["damage"])])
    return out


def document(
    summary: Summary, *, board_name: str, place: str, organisation: Organisation | None, member_code: str
) -> dict:
    span = "06 tháng" if (summary.end - summary.start).days < 200 else "01 năm"
    period = f"Từ ngày {summary.start:%d/%m/%Y} đến ngày {summary.end:%d/%m/%Y}"
    return {
        "board": board_name,
        "form": "Mẫu số 05",
        "basis": "(Ban hành kèm theo Thông tư số 20/2017/TT-BTTTT ngày 12/9/2017)",
        "title": "BÁO CÁO TỔNG HỢP TÌNH HÌNH TIẾP NHẬN VÀ XỬ LÝ SỰ CỐ",
        "reference": f"Kỳ báo cáo: {span} · {period}",
        "dated": f"{place}, ngày " + utcnow().astimezone(LOCAL_TZ).strftime("%d tháng %m năm %Y"),
        "exercise": False,
        "sections": [
            {"number": "0", "title": "THÔNG TIN ĐƠN VỊ BÁO CÁO", "rows": [
                ["Tên tổ chức", organisation.name_vi if organisation else "—"],
                ["Địa chỉ", (organisation.address if organisation else None) or "—"],
                ["Mã thành viên mạng lưới", member_code or "—"],
                ["Kỳ báo cáo", period],
            ]},
            {"number": "1", "title": "TÌNH HÌNH TIẾP NHẬN VÀ XỬ LÝ SỰ CỐ",
             "table": {"header": HEADER, "rows": table_rows(summary)}},
            {"number": "2", "title": "DANH SÁCH TỔ CHỨC TRONG NƯỚC ĐÃ HỖ TRỢ",
             "text": "\n".join(summary.domestic_helpers) or "Không có"},
            {"number": "3", "title": "DANH SÁCH TỔ CHỨC NƯỚC NGOÀI ĐÃ HỖ TRỢ",
             "text": "\n".join(summary.foreign_helpers) or "Không có"},
            {"number": "4", "title": "KIẾN NGHỊ, ĐỀ XUẤT",
             "text": "\n".join(f"- {r}" for r in summary.recommendations) or "Không có"},
        ],
        "signature": ["NGƯỜI ĐẠI DIỆN THEO PHÁP LUẬT", "(Ký, ghi rõ họ tên, đóng dấu hoặc ký số)"],
        "footnote": "Không tính các sự cố diễn tập, các báo cáo bị từ chối hoặc đã gộp.",
    }  # fmt: skip


def csv_text(summary: Summary) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["category", *HEADER[1:]])
    for category, row in zip(Category, table_rows(summary), strict=False):
        writer.writerow([category.value, *row[1:]])
    writer.writerow(["total", *table_rows(summary)[-1][1:]])
    return out.getvalue()


def due_dates(after: date) -> list[tuple[str, date]]:
    """The next half-year and year due dates on or after `after`."""
    found = []
    for name, month, day in DUE_DATES:
        due = date(after.year, month, day)
        if due < after:
            due = date(after.year + 1, month, day)
        found.append((name, due))
    return sorted(found, key=lambda x: x[1])


def schedule_reminders(session: Session, *, now: datetime | None = None, days_before: int = 7) -> None:
    """Queue a reminder `days_before` each coming due date, at 08:00 local (idempotent per due date)."""
    today = (now or utcnow()).astimezone(LOCAL_TZ).date()
    rows = []
    for name, due in due_dates(today):
        at = datetime.combine(due - timedelta(days=days_before), time(8), LOCAL_TZ)
        payload = {"period": name, "due": due.isoformat()}
        rows.append(jobs.job_values(REMINDER, payload, run_at=at, key=f"{REMINDER}:{name}:{due.isoformat()}"))
    jobs.enqueue_many(session, rows)


def remind(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """Put the coming Form 05 on the desk's board, then queue the next reminder."""
    due = job.payload["due"]
    label = "06 tháng" if job.payload["period"] == "half_year" else "01 năm"
    with ctx.sessions() as session:

        def work() -> None:
            record_event(
                session,
                kind="report.periodic_due",
                actor=None,
                note=f"Báo cáo tổng hợp {label} (Mẫu 05) đến hạn ngày {date.fromisoformat(due):%d/%m/%Y}",
                data={"ref": None, "status": None, "period": job.payload["period"], "due": due, "alert": True},
            )
            schedule_reminders(
                session,
                now=datetime.combine(date.fromisoformat(due) + timedelta(days=1), time(0), LOCAL_TZ),
                days_before=int(ctx.config.get("PERIODIC_REMINDER_DAYS", 7)),
            )

        in_transaction(session, work)


def as_dict(summary: Summary) -> dict[str, Any]:
    return {
        "from": summary.start.isoformat(),
        "to": summary.end.isoformat(),
        "rows": [{"category": c, **summary.rows[c]} for c in summary.rows],
        "totals": summary.totals,
        "domestic_helpers": summary.domestic_helpers,
        "foreign_helpers": summary.foreign_helpers,
        "recommendations": summary.recommendations,
    }
