"""Who may acknowledge, the e-mail's confirmation page, and page storms (real SMTP through aiosmtpd)."""

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from incidents.base import utcnow
from incidents.models import AuditEntry, Job
from playbooks.delivery import DELIVER
from playbooks.models import Page
from playbooks.paging import DIGEST
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.receivers import SmtpServer

URL = "/api/v1/incidents"
BASE_URL = "https://ucsc.thanhhoa.gov.vn"


@pytest.fixture
def smtp(app_config: dict) -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    app_config.update(
        SMTP_URL=server.url, MAIL_FROM="ucsc@thanhhoa.gov.vn", BASE_URL=BASE_URL, PAGING_DIGEST_DELAY_SECONDS=600
    )
    yield server
    server.close()


def _deliver(app: Flask) -> int:
    """Send what is due through the real channels (the worker's handlers, in this process)."""
    from incidents import jobs
    from notifiers.registry import build_notifiers

    ran = 0
    with app.app_context():
        from app import db

        ctx = jobs.JobContext(app.extensions["ucsc.sessionmaker"], dict(app.config), build_notifiers(app.config))
        session = db.session()
        while claimed := jobs.claim(session, "test", 50, [DELIVER, DIGEST]):
            for job in claimed:
                jobs.KINDS[job.kind].handler(ctx, job)
                jobs.complete(session, job, "test")
                ran += 1
    return ran


def _dic_page(app: Flask, client: FlaskClient, operator: dict[str, str], dbs: Session, **payload: object) -> Page:
    incident_id = client.post(URL, json=incident_payload(category="other", **payload), headers=operator).json["id"]
    paging.run_jobs(app)
    [page] = paging.pages(dbs, incident_id)
    return page


@pytest.fixture
def duty(app: Flask, make_token: TokenFactory) -> dict[str, object]:
    """The standing body's only focal point, with a user account of her own."""
    headers = make_token("responder", organisation="dic", username="lan")
    contact_id = paging.add_contact(
        app, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn", channels=["email"]
    )
    from app import db
    from incidents.models import User
    from playbooks.models import Contact

    with app.app_context():
        s = db.session()
        with s.begin():
            s.get(Contact, contact_id).user_id = s.scalar(select(User.id).where(User.username == "lan"))
    paging.load_shipped(app, demo=False)
    return {"headers": headers, "contact_id": contact_id}


def test_someone_not_paged_cannot_acknowledge_and_the_refusal_is_audited(
    app: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str], duty: dict, make_token: TokenFactory
) -> None:
    page = _dic_page(app, client, operator, dbs)
    police = make_token("responder", organisation="police", username="tuan")
    paging.add_contact(app, organisation="police", name="Trần Văn Tuấn", email="tuan@police.example.vn")
    from app import db
    from incidents.models import User
    from playbooks.models import Contact

    with app.app_context():
        s = db.session()
        with s.begin():
            c = s.scalar(select(Contact).where(Contact.name == "Trần Văn Tuấn"))
            c.user_id = s.scalar(select(User.id).where(User.username == "tuan"))
    r = client.post(f"/api/v1/pages/{page.id}/acks", json={}, headers=police)
    assert r.status_code == 404  # a responder of another organisation may not even see it
    # The incident is shared with the Police (a participant), so the refusal is about the page itself.
    assert (
        client.post(
            f"{URL}/{page.incident_id}/participants",
            json={"organisation": "police", "role": "member"},
            headers=operator,
        ).status_code
        == 201
    )
    r = client.post(f"/api/v1/pages/{page.id}/acks", json={"note": "tôi nhận"}, headers=police)
    assert r.status_code == 403
    assert r.mimetype == "application/problem+json" and "not paged" in r.json["detail"]
    dbs.rollback()
    [entry] = dbs.scalars(select(AuditEntry).where(AuditEntry.action == "ack.refused")).all()
    assert entry.actor == "tuan" and entry.data["page_id"] == page.id and entry.data["reason"] == "not paged"
    assert dbs.get(Page, page.id).state == "open"
    assert paging.events(dbs, "page.acknowledged") == []
    # An operator without a note is refused too; with a note it is recorded as on someone's behalf.
    assert client.post(f"/api/v1/pages/{page.id}/acks", json={}, headers=operator).status_code == 403
    r = client.post(f"/api/v1/pages/{page.id}/acks", json={"note": "Chị Lan báo qua điện thoại"}, headers=operator)
    assert r.status_code == 200 and r.json["ack_on_behalf"] is True and r.json["acked_by"].startswith("op1")


def test_the_person_paged_acknowledges_once_and_a_second_ack_changes_nothing(
    app: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str], duty: dict
) -> None:
    page = _dic_page(app, client, operator, dbs)
    r = client.post(f"/api/v1/pages/{page.id}/acks", json={"note": "đang xử lý"}, headers=duty["headers"])
    assert r.status_code == 200, r.json
    first = r.json
    assert (first["state"], first["acked_by"], first["ack_via"], first["ack_on_behalf"]) == (
        "acknowledged",
        "Lê Thị Lan",
        "api",
        False,
    )
    again = client.post(f"/api/v1/pages/{page.id}/acks", json={"note": "lần hai"}, headers=duty["headers"])
    assert again.status_code == 200 and again.json == first
    [event] = paging.events(dbs, "page.acknowledged")
    assert event.data["ref"] and event.data["status"] == "new" and event.data["page_id"] == page.id
    # The run waited on this page alone: it carries on (nothing left), without escalating.
    paging.run_jobs(app)
    assert paging.events(dbs, "page.escalated") == []


def test_the_email_link_opens_a_confirmation_that_only_its_post_acknowledges(
    smtp: SmtpServer, app: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str], duty: dict
) -> None:
    page = _dic_page(app, client, operator, dbs, exercise=True)
    assert _deliver(app) == 1
    [mail] = smtp.wait_for(1)
    assert mail.message["Subject"].startswith("[TBSC] [DIỄN TẬP] [DRILL] [TH-")
    assert mail.message["Message-ID"] == f"<page.{page.id}.{duty['contact_id']}.0@thanhhoa.gov.vn>"
    assert "[DIỄN TẬP]" in mail.text
    link = re.search(rf"{re.escape(BASE_URL)}(/ack/\S+)", mail.text).group(1)
    for _ in range(3):  # a mail scanner opening the link, twice, then the person
        r = client.get(link)
        assert r.status_code == 200 and 'data-state="open"' in r.text and '<form method="post"' in r.text
    assert dbs.get(Page, page.id).state == "open"
    assert client.get(link[:-3] + "xyz").status_code == 404  # a forged signature
    r = client.post(link, data={"note": "đã nhận qua e-mail"})
    assert r.status_code == 200 and 'data-state="acknowledged"' in r.text and "Lê Thị Lan" in r.text
    dbs.rollback()
    acked = dbs.get(Page, page.id)
    assert (acked.state, acked.ack_via, acked.acked_by_contact_id) == ("acknowledged", "email", duty["contact_id"])
    [delivered] = paging.events(dbs, "page.delivered")
    assert delivered.data["channel"] == "email" and delivered.data["page_id"] == page.id


def test_four_hundred_occurrences_of_one_dedup_key_page_each_person_at_most_six_times_then_one_digest(
    smtp: SmtpServer, app: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str], duty: dict
) -> None:
    # The SIEM keeps firing while the desk rejects each report as it comes: every 40th filing opens a new
    # incident (the others are occurrences of the open one), 10 incidents in all.
    incidents = []
    for _ in range(10):
        first = client.post(URL, json=incident_payload(category="other", dedup_key="siem-rule-4711"), headers=operator)
        assert first.status_code == 201, first.json
        incident_id = first.json["id"]
        incidents.append(incident_id)
        paging.run_jobs(app)
        _deliver(app)
        batch = [incident_payload(category="other", dedup_key="siem-rule-4711") for _ in range(39)]
        r = client.post(f"{URL}/bulk", json={"incidents": batch}, headers=operator)
        assert r.status_code == 200, r.json
        assert {item["id"] for item in r.json["items"]} == {incident_id}
        paging.run_jobs(app)
        rejected = client.post(f"{URL}/{incident_id}/transitions", json={"to": "rejected"}, headers=operator)
        assert rejected.status_code == 200, rejected.json
    assert len(set(incidents)) == 10
    assert len(smtp.wait_for(6)) == 6
    # Ten minutes pass: the digest falls due.
    dbs.execute(update(Job).where(Job.kind == DIGEST).values(run_at=utcnow()))
    dbs.commit()
    assert _deliver(app) == 1
    mails = smtp.wait_for(7)
    pages_sent = [m for m in mails if "Gọi trực" in m.message["Subject"]]
    digests = [m for m in mails if "Tổng hợp gọi trực" in m.message["Subject"]]
    assert len(pages_sent) == 6 and len(digests) == 1, [m.message["Subject"] for m in mails]
    assert all(m.rcpt_tos == ["lan@dic.example.vn"] for m in mails)
    held_refs = set(re.findall(r"TH-\d{4}-\d{5}", digests[0].text))
    assert len(held_refs) == 4
    all_pages = paging.pages(dbs)
    assert len(all_pages) == 10
    # Repeats updated the open page instead of paging again: 40 reports, one page each.
    assert [p.occurrences for p in all_pages] == [40] * 10
    assert len(paging.events(dbs, "digest.sent")) == 4


def test_a_refused_channel_falls_through_to_the_next_and_red_incidents_travel_as_reference_and_link(
    smtp: SmtpServer, app: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str]
) -> None:
    from notifiers.webhook import SIGNATURE_HEADER, signature
    from tests.receivers import HttpReceiver

    hook = HttpReceiver(statuses=(410,)).start()
    try:
        paging.load_shipped(app, demo=False)
        paging.add_contact(app, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn",
                           webhook_url=hook.url, webhook_secret="k", channels=["webhook", "email"])  # fmt: skip
        secret_title = "Lộ lọt hồ sơ mật của Sở"
        page = _dic_page(app, client, operator, dbs, title=secret_title, tlp="red")
        _deliver(app)
        _deliver(app)
        [refused] = hook.wait_for(1)
        assert refused.json["incident"] == {"id": page.incident_id, "ref": refused.json["incident"]["ref"],
                                            "status": "new", "tlp": "red", "exercise": False}  # fmt: skip
        stamp = refused.headers[SIGNATURE_HEADER].split(",")[0].removeprefix("t=")
        assert refused.headers[SIGNATURE_HEADER] == signature("k", stamp, refused.body)
        assert refused.headers["Idempotency-Key"] == f"page.{page.id}.{page.recipients[0].contact_id}.0"
        [mail] = smtp.wait_for(1)
        assert secret_title not in mail.text and secret_title not in str(mail.message["Subject"])
        assert "TLP:RED" in mail.text and "/ack/" in mail.text
        failed, delivered = paging.events(dbs, "page.failed"), paging.events(dbs, "page.delivered")
        assert [(e.data["channel"], e.data["next_channel"], e.data["final"]) for e in failed] == [
            ("webhook", "email", False)
        ]
        assert [e.data["channel"] for e in delivered] == ["email"]
    finally:
        hook.close()
