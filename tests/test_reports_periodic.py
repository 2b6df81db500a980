"""Form 05 from a seeded half-year: totals equal counts taken straight from the database; drills left out."""

import csv
import io
import random
from collections import Counter

import docx
from pypdf import PdfReader
from sqlalchemy import func, select

from incidents.enums import Category
from incidents.models import Incident
from incidents.records import Report
from incidents.reporting import periodic
from tests.conftest import incident_payload
from tests.test_reports import assert_fonts_cover

URL = "/api/v1/incidents"
PERIOD = "from=2026-01-01&to=2026-06-30"


def seed(client, headers) -> None:
    rng = random.Random(20260620)
    categories = [c.value for c in Category]
    helpers = [("VNPT Thanh Hóa", False), ("Viettel Thanh Hóa", False), ("Kaspersky Lab", True)]
    # Inside the half-year, on both edges (local time), and just outside it.
    times = [
        f"2026-{m:02d}-{d:02d}T{h:02d}:15:00+07:00"
        for m, d, h in [(1, 1, 0), (6, 30, 23)]
        + [(rng.randint(1, 6), rng.randint(1, 28), rng.randint(0, 23)) for _ in range(28)]
    ]
    outside = ["2025-12-31T23:59:00+07:00", "2026-07-01T00:00:00+07:00"]  # fmt: skip
    for n, detected in enumerate(times + outside):
        exercise = n % 9 == 4
        r = client.post(URL, json=incident_payload(category=rng.choice(categories), detected_at=detected,
                                                   exercise=exercise, tlp=rng.choice(["green", "amber", "red"])),
                        headers=headers)  # fmt: skip
        assert r.status_code == 201, r.json
        iid = r.json["id"]
        if n % 7 == 3:
            client.post(f"{URL}/{iid}/transitions", json={"to": "rejected"}, headers=headers)
            continue
        for _ in range(rng.choice([0, 1, 1, 2])):  # no end report yet, one, or a corrected second version
            name, foreign = rng.choice(helpers)
            handled_by = rng.choice(["self", "domestic", "foreign"])
            body = {
                "handling_result": "Đã xử lý", "handled_by": handled_by,
                "helpers": [] if handled_by == "self" else [{"name": name, "foreign": foreign}],
                "national_support_requested": rng.random() < 0.3,
                "estimated_damage": rng.choice([None, 0, 5_000_000, 120_000_000]),
                "recommendations": f"Khuyến nghị {n}",
            }  # fmt: skip
            assert client.post(f"{URL}/{iid}/reports/end", json=body, headers=headers).status_code == 201


def expected(session) -> tuple[dict[str, Counter], Counter]:
    """The table computed here, straight from incidents and their latest end reports."""
    lo, hi = periodic._bounds(*(periodic.date(2026, 1, 1), periodic.date(2026, 6, 30)))
    incidents = session.execute(
        select(Incident.id, Incident.category).where(
            Incident.detected_at >= lo, Incident.detected_at < hi, Incident.exercise.is_(False),
            Incident.status.not_in(["rejected", "merged"]),
        )
    ).all()  # fmt: skip
    rows: dict[str, Counter] = {c.value: Counter() for c in Category}
    for incident in incidents:
        row = rows[incident.category]
        row["count"] += 1
        last = session.scalar(
            select(Report).where(Report.incident_id == incident.id, Report.kind == "end")
            .order_by(Report.version.desc()).limit(1)
        )  # fmt: skip
        if last is None:
            continue
        outcome = last.data["outcome"]
        row[outcome["handled_by"]] += 1
        row["national_support"] += outcome["national_support_requested"]
        row["damage"] += outcome["estimated_damage"] or 0
    totals = Counter()
    for row in rows.values():
        totals.update(row)
    return rows, totals


def test_form05_totals_equal_counts_from_the_database_and_drills_are_left_out(client, operator, session):
    seed(client, operator)
    rows, totals = expected(session)
    drills = session.scalar(select(func.count()).where(Incident.exercise.is_(True)))
    assert drills > 0 and totals["count"] > 10
    assert totals["count"] < session.scalar(select(func.count()).select_from(Incident)) - drills
    r = client.get(f"/api/v1/reports/periodic?{PERIOD}&format=json", headers=operator)
    assert r.status_code == 200
    got = {row["category"]: row for row in r.json["rows"]}
    for category, row in rows.items():
        for column in periodic.COLUMNS:
            assert got[category][column] == row[column], (category, column)
    assert r.json["totals"] == {c: totals[c] for c in periodic.COLUMNS}

    table = list(csv.reader(io.StringIO(client.get(f"/api/v1/reports/periodic?{PERIOD}&format=csv",
                                                   headers=operator).data.decode("utf-8-sig"))))  # fmt: skip
    assert table[0][0] == "category" and len(table) == 12
    assert table[-1][:7] == ["total", "Tổng cộng", *[str(totals[c]) for c in periodic.COLUMNS[:-1]]]
    assert table[-1][7] == f"{totals['damage']:,}".replace(",", ".")

    document = docx.Document(io.BytesIO(client.get(f"/api/v1/reports/periodic?{PERIOD}&format=docx",
                                                   headers=operator).data))  # fmt: skip
    (matrix,) = [t for t in document.tables if len(t.columns) == 8]
    cells = [[c.text for c in row.cells] for row in matrix.rows]
    assert cells[0][1] == "Loại sự cố/tấn công mạng" and len(cells) == 12
    assert cells[-1][2:7] == [str(totals[c]) for c in periodic.COLUMNS[:-1]]
    assert [row[2] for row in cells[1:11]] == [str(rows[c.value]["count"]) for c in Category]

    pdf = client.get(f"/api/v1/reports/periodic?{PERIOD}&format=pdf", headers=operator)
    assert pdf.status_code == 200 and len(PdfReader(io.BytesIO(pdf.data)).pages) >= 1
    text = " ".join(assert_fonts_cover(pdf.data).split())
    assert "Tổng cộng" in text and "BÁO CÁO TỔNG HỢP" in text, text[-1500:]


def test_form05_refuses_a_reversed_range_and_responders(client, operator, make_token):
    r = client.get("/api/v1/reports/periodic?from=2026-06-30&to=2026-01-01", headers=operator)
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert client.get(f"/api/v1/reports/periodic?{PERIOD}&format=xls", headers=operator).status_code == 422
    assert client.get(f"/api/v1/reports/periodic?{PERIOD}", headers=make_token("responder")).status_code == 403


def test_reminders_come_a_week_before_20_june_and_15_december(session):
    when = periodic.datetime(2026, 3, 1, tzinfo=periodic.LOCAL_TZ)
    assert periodic.due_dates(when.date()) == [("half_year", periodic.date(2026, 6, 20)),
                                               ("year", periodic.date(2026, 12, 15))]  # fmt: skip
    assert periodic.due_dates(periodic.date(2026, 12, 16))[0] == ("half_year", periodic.date(2027, 6, 20))
    with session.begin():
        periodic.schedule_reminders(session, now=when)
        periodic.schedule_reminders(session, now=when)  # idempotent
    from incidents.models import Job

    jobs = session.scalars(select(Job).where(Job.kind == periodic.REMINDER).order_by(Job.run_at)).all()
    assert [j.run_at.astimezone(periodic.LOCAL_TZ).isoformat() for j in jobs] == [
        "2026-06-13T08:00:00+07:00", "2026-12-08T08:00:00+07:00",
    ]  # fmt: skip
