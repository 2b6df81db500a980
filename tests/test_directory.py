"""The directory: weekly rotations with leave, who a page reaches, CSV round trips, the 24-hour rule, erasure."""

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.base import utcnow
from incidents.models import AuditEntry, Job
from playbooks.focal import CONFIRM, FOCAL
from playbooks.models import Contact, Schedule
from playbooks.oncall import on_call, organisation_contacts
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.receivers import SmtpServer

MONDAY = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # 08:00 in Thanh Hoa


def _hourly_check(app: Flask, n: int, *, send: bool = False) -> None:
    """The hourly focal-point job falls due (queued as the worker's schedule would, but now), and what it causes."""
    with app.app_context():
        from app import db

        s = db.session()
        with s.begin():
            jobs.enqueue(s, FOCAL, run_at=utcnow(), key=f"test-focal-{n}")
    paging.run_jobs(app, (FOCAL, CONFIRM), send=send)


def _contact(client: FlaskClient, admin: dict[str, str], name: str, org: str = "vnpt", **extra: object) -> int:
    r = client.post("/api/v1/contacts", json={"organisation": org, "name": name, "email": f"{name}@x.vn",
                                             "channels": ["email"], **extra}, headers=admin)  # fmt: skip
    assert r.status_code == 201, r.json
    return r.json["id"]


def test_a_weekly_rotation_hands_over_each_monday_and_an_override_covers_leave(
    app: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory
) -> None:
    admin = make_token("admin")
    a, b, c = (_contact(client, admin, n) for n in ("an", "binh", "cuong"))
    rotation = {"code": "vnpt-247", "name": "Trực 24/7 VNPT", "organisation": "vnpt", "starts_at": MONDAY.isoformat(),
                "members": [a, b]}  # fmt: skip
    r = client.post("/api/v1/schedules", json=rotation, headers=admin)
    assert r.status_code == 201, r.json
    schedule = dbs.scalar(select(Schedule))
    assert on_call(schedule, MONDAY + timedelta(days=3)).id == a
    assert on_call(schedule, MONDAY + timedelta(days=7, minutes=1)).id == b
    assert on_call(schedule, MONDAY + timedelta(days=14, minutes=1)).id == a
    assert on_call(schedule, MONDAY - timedelta(minutes=1)).id == b  # the week before the start
    leave = {"contact_id": c, "starts_at": (MONDAY + timedelta(days=8)).isoformat(),
             "ends_at": (MONDAY + timedelta(days=10)).isoformat(), "reason": "nghỉ phép"}  # fmt: skip
    assert client.post("/api/v1/schedules/vnpt-247/overrides", json=leave, headers=admin).status_code == 201
    dbs.rollback()
    schedule = dbs.scalar(select(Schedule))
    assert on_call(schedule, MONDAY + timedelta(days=9)).id == c
    assert on_call(schedule, MONDAY + timedelta(days=10, minutes=1)).id == b
    # Paging reads the same rule from the rows that matter now (playbooks.oncall): the same person at every
    # hand-over, inside and outside the leave.
    for hours in range(-2, 16 * 24, 7):
        at = MONDAY + timedelta(hours=hours)
        paged = organisation_contacts(dbs, schedule.organisation_id, pick="default", at=at)
        assert [p.id for p in paged] == [on_call(schedule, at).id], at
    now = client.get("/api/v1/on-call?organisation=vnpt", headers=admin).json["items"]
    assert [p["id"] for p in now] == [on_call(schedule, utcnow()).id]
    # An organisation without a schedule is paged through all its active contacts.
    d, e = _contact(client, admin, "dung", "viettel"), _contact(client, admin, "em", "viettel")
    client.patch(f"/api/v1/contacts/{e}", json={"active": False}, headers=admin)
    assert [p["id"] for p in client.get("/api/v1/on-call?organisation=viettel", headers=admin).json["items"]] == [d]


def test_csv_export_imports_back_and_a_bad_line_is_named_and_nothing_is_written(
    app: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory
) -> None:
    admin = make_token("admin")
    _contact(client, admin, "an", roles=["board.head"])
    exported = client.get("/api/v1/contacts.csv", headers=admin)
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    lines = exported.text.splitlines()
    assert lines[0].startswith("id,organisation,name") and len(lines) == 2
    changed = lines[1].replace("an@x.vn", "an.new@x.vn")
    new = ",police,Phạm Văn Hùng,Trực PA05,0912345678,hung@x.vn,,vi,email|sms,,true,"
    body = "\n".join([lines[0], changed, new]).encode()
    r = client.post("/api/v1/contacts/imports", data=body, headers={**admin, "Content-Type": "text/csv"})
    assert r.status_code == 201 and r.json == {"created": 1, "updated": 1}
    people = {c.name: c for c in dbs.scalars(select(Contact))}
    assert people["an"].email == "an.new@x.vn" and people["an"].confirmed_at is None  # a change needs confirming
    assert (
        people["Phạm Văn Hùng"].channels == ["email", "sms"] and people["Phạm Văn Hùng"].organisation.code == "police"
    )
    bad = "\n".join([lines[0], ",police,Lê Văn Khoa,,12,,,vi,pager,,true,"]).encode()
    r = client.post("/api/v1/contacts/imports", data=bad, headers={**admin, "Content-Type": "text/csv"})
    assert r.status_code == 422
    assert {e["field"] for e in r.json["errors"]} == {"line 2: phone", "line 2: channels[0]"}
    dbs.rollback()
    assert len(dbs.scalars(select(Contact)).all()) == 2
    responder = make_token("responder")
    assert (
        client.post(
            "/api/v1/contacts/imports", data=body, headers={**responder, "Content-Type": "text/csv"}
        ).status_code
        == 403
    )


def test_a_focal_point_unconfirmed_24_hours_after_a_change_is_reported_to_the_standing_body(
    app: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory
) -> None:
    admin = make_token("admin")
    an = _contact(client, admin, "an")
    assert (
        client.patch(f"/api/v1/contacts/{an}", json={"phone": "0912000111"}, headers=admin).json["confirmed_at"] is None
    )
    _hourly_check(app, 1)
    assert paging.events(dbs, "directory.unconfirmed") == []  # changed just now: still within 24 h
    dbs.execute(update(Contact).values(details_changed_at=utcnow() - timedelta(hours=25)))
    dbs.commit()
    _hourly_check(app, 2)
    [alert] = paging.events(dbs, "directory.unconfirmed")
    assert alert.data["contacts"] == [an] and "24" in alert.note
    _hourly_check(app, 3)
    assert len(paging.events(dbs, "directory.unconfirmed")) == 1  # reported once
    assert dbs.scalar(select(Job).where(Job.kind == FOCAL, Job.state == "queued")) is not None  # the next hour
    r = client.post(f"/api/v1/contacts/{an}/confirmations", headers=admin)
    assert r.status_code == 200 and r.json["confirmed_at"] is not None


def test_personal_data_is_exported_and_erased_on_request_and_both_are_audited(
    app: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    admin = make_token("admin")
    paging.load_shipped(app, demo=False)
    an = _contact(client, admin, "an", "dic", phone="0912000111")
    incident_id = client.post("/api/v1/incidents", json=incident_payload(category="other"), headers=operator).json["id"]
    paging.run_jobs(app)
    data = client.get(f"/api/v1/contacts/{an}/personal-data", headers=admin).json
    assert data["contact"]["phone"] == "0912000111" and [p["state"] for p in data["pages"]] == ["paged"]
    r = client.post(f"/api/v1/contacts/{an}/erasure", headers=admin)
    assert r.status_code == 200
    assert (r.json["phone"], r.json["email"], r.json["active"]) == (None, None, False)
    assert "an" not in r.json["name"].split()
    assert client.get(f"/api/v1/contacts/{an}", headers=admin).status_code == 404
    dbs.rollback()
    audited = [
        (e.action, e.target, e.data["what"])
        for e in dbs.scalars(select(AuditEntry).where(AuditEntry.action == "export"))
    ]
    assert audited == [("export", f"contact:{an}", "personal data"), ("export", f"contact:{an}", "erased on request")]
    # The page stays on the incident's record; the person behind it does not.
    [page] = paging.pages(dbs, incident_id)
    assert page.recipients[0].contact.name.startswith("(đã xoá")
    assert client.get(f"/api/v1/contacts/{an}/personal-data", headers=operator).status_code == 404


@pytest.fixture
def smtp(app_config: dict) -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    app_config.update(SMTP_URL=server.url, BASE_URL="https://ucsc.thanhhoa.gov.vn")
    yield server
    server.close()


def test_the_hourly_check_asks_an_unconfirmed_person_still_your_number_and_only_the_links_post_confirms(
    smtp: SmtpServer, app: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory
) -> None:
    admin = make_token("admin")
    an = _contact(client, admin, "an", phone="0912000111")
    _hourly_check(app, 1, send=True)
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ["an@x.vn"] and "0912000111" in mail.text
    link = re.search(r"https://ucsc\.thanhhoa\.gov\.vn(/directory/confirm/\S+)", mail.text).group(1)
    for _ in range(2):  # a mail scanner, then the person
        page = client.get(link)
        assert page.status_code == 200 and 'data-state="unconfirmed"' in page.text
    dbs.rollback()
    assert dbs.get(Contact, an).confirmed_at is None and dbs.get(Contact, an).confirm_requested_at is not None
    assert client.post(link + "x").status_code == 404
    done = client.post(link)
    assert done.status_code == 200 and 'data-state="confirmed"' in done.text
    dbs.rollback()
    assert dbs.get(Contact, an).confirmed_at is not None
    _hourly_check(app, 2, send=True)
    time.sleep(0.2)
    assert len(smtp.mails) == 1  # confirmed: not asked again


def test_saving_a_group_again_keeps_members_it_already_had_and_refuses_a_contact_listed_twice(
    app: Flask, client: FlaskClient, make_token: TokenFactory
) -> None:
    admin = make_token("admin")
    first = paging.add_contact(app, organisation="vnpt", name="Trực ca 1", email="c1@vnpt.example.vn")
    second = paging.add_contact(app, organisation="vnpt", name="Trực ca 2", email="c2@vnpt.example.vn")
    for members in ([first], [first, second], [second, first]):
        r = client.post("/api/v1/groups", json={"code": "vnpt-noc", "name_vi": "Trực VNPT", "members": members},
                        headers=admin)  # fmt: skip
        assert r.status_code == 201, r.json
        assert r.json["members"] == members
    r = client.post("/api/v1/groups", json={"code": "vnpt-noc", "name_vi": "Trực VNPT", "members": [first, first]},
                    headers=admin)  # fmt: skip
    assert r.status_code == 422
    assert r.json["errors"][0]["field"] == "members[1]"
    assert client.get("/api/v1/groups", headers=admin).json["items"][0]["members"] == [second, first]
