"""Receipts to the reporter (Decision 05 Art. 12): e-mail through a real SMTP server, webhook retries and refusals."""

import time
from collections.abc import Callable, Iterator
from email.utils import parseaddr
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents import followup, jobs, receipts
from incidents.models import Event, Job
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.receivers import HttpReceiver, SmtpServer, eventually, give_webhook

URL = "/api/v1/incidents"
BASE_URL = "https://ucsc.thanhhoa.gov.vn"
MAIL_FROM = "Ban Chỉ đạo ứng cứu sự cố <ucsc@thanhhoa.gov.vn>"
TITLE = "Mã độc tống tiền mã hoá máy chủ Sở Tài chính"


@pytest.fixture
def smtp(app_config: dict) -> Iterator[SmtpServer]:
    """aiosmtpd on a free port, named in the app's configuration (request it before `client` or `app`)."""
    server = SmtpServer().start()
    app_config.update(SMTP_URL=server.url, MAIL_FROM=MAIL_FROM, BASE_URL=BASE_URL)
    yield server
    server.close()


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., HttpReceiver]]:
    """Start HTTP receivers (`make_receiver(statuses=...)`); all are closed at the end."""
    started: list[HttpReceiver] = []

    def factory(**kwargs: Any) -> HttpReceiver:
        started.append(HttpReceiver(**kwargs).start())
        return started[-1]

    yield factory
    for server in started:
        server.close()


def _worker_env(smtp: SmtpServer | None = None) -> dict[str, str]:
    env = {"UCSC_BASE_URL": BASE_URL, "UCSC_MAIL_FROM": MAIL_FROM, "UCSC_NOTIFY_TIMEOUT": "10"}
    return {**env, "UCSC_SMTP_URL": smtp.url} if smtp else env


def _jobs(session: Session) -> list[Job]:
    session.rollback()
    return list(session.scalars(select(Job).where(Job.kind.like("receipt.%")).order_by(Job.id)))


def _webhook_receipt(session: Session) -> Job | None:
    found = [j for j in _jobs(session) if j.kind == receipts.WEBHOOK]
    return found[0] if found else None


def test_the_reporter_gets_an_email_receipt_with_the_reference_and_status_link(
    smtp: SmtpServer,
    app: Flask,
    client: FlaskClient,
    session: Session,
    operator: dict[str, str],
    start_worker: Callable[..., Any],
) -> None:
    assert app.config["SMTP_URL"] == smtp.url
    r = client.post(URL, json=incident_payload(title=TITLE), headers=operator)
    assert r.status_code == 201, r.json
    incident_id, ref = r.json["id"], r.json["ref"]
    assert _jobs(session) == []  # the filing's follow-up job queues the receipt, in the worker
    assert paging.run_jobs(app, (followup.FILED,)) == 1
    [job] = _jobs(session)
    assert (job.kind, job.idempotency_key, job.incident_id) == (
        receipts.EMAIL,
        f"receipt.email:{incident_id}",
        incident_id,
    )
    assert job.payload == {"incident_id": incident_id, "to": "a@example.vn"}

    start_worker(env=_worker_env(smtp))
    [mail] = smtp.wait_for(1)
    message = mail.message
    assert mail.rcpt_tos == ["a@example.vn"]
    assert parseaddr(mail.mail_from)[1] == "ucsc@thanhhoa.gov.vn"
    assert message["To"] == "a@example.vn"
    assert message["From"].addresses[0].display_name == "Ban Chỉ đạo ứng cứu sự cố"
    assert f"[{ref}]" in message["Subject"] and "Xác nhận tiếp nhận sự cố" in message["Subject"]
    # Stable across attempts, so a mailbox drops a repeat; a valid RFC 5322 msg-id that parsers read whole.
    assert message["Message-ID"] == f"<receipt.email.{incident_id}@thanhhoa.gov.vn>"
    assert not message["Message-ID"].defects
    assert message.get_content_charset() == "utf-8"
    text = mail.text
    assert f"Số hiệu: {ref}" in text
    assert f"Tiêu đề: {TITLE}" in text
    assert "Ban Chỉ đạo đã tiếp nhận báo cáo sự cố của quý cơ quan." in text
    assert f"{BASE_URL}/api/v1/incidents/{incident_id}" in text
    [job] = eventually(lambda: [j for j in _jobs(session) if j.state == jobs.DONE])
    assert job.attempts == 1


def test_without_smtp_url_no_email_receipt_is_queued(
    client: FlaskClient, session: Session, operator: dict[str, str]
) -> None:
    assert client.post(URL, json=incident_payload(), headers=operator).status_code == 201
    assert _jobs(session) == []


def test_a_reporter_without_an_address_gets_no_email_job(
    smtp: SmtpServer, app: Flask, client: FlaskClient, session: Session, operator: dict[str, str]
) -> None:
    reporter = {"name": "Trần Thị B", "organisation": "Sở Y tế", "phone": "0237111111"}
    items = [incident_payload(reporter=reporter), incident_payload(title="Có địa chỉ")]
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=operator)
    assert r.status_code == 201, r.json
    second = r.json["items"][1]["id"]
    assert paging.run_jobs(app, (followup.FILED,)) == 1  # one follow-up job for the whole bulk filing
    assert [(j.kind, j.incident_id) for j in _jobs(session)] == [(receipts.EMAIL, second)]


def test_a_webhook_that_answers_410_makes_the_receipt_dead_at_once(
    make_receiver: Callable[..., HttpReceiver],
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    start_worker: Callable[..., Any],
) -> None:
    receiver = make_receiver(statuses=(410,))
    siem = make_token("intake")
    give_webhook(session, siem, receiver.url, "s")
    incident_id = client.post(URL, json=incident_payload(), headers=siem).json["id"]
    start_worker(env=_worker_env())

    receiver.wait_for(1)
    job = eventually(lambda: (j := _webhook_receipt(session)) and j.state == jobs.DEAD and j)
    assert (job.attempts, job.max_attempts, job.lease_until) == (1, 8, None)
    assert job.last_error.startswith("PermanentError: POST ") and job.last_error.endswith("HTTP 410")
    [event] = session.scalars(select(Event).where(Event.kind == "job.dead"))
    assert event.incident_id == incident_id
    assert event.data["job_id"] == job.id and event.data["job_kind"] == receipts.WEBHOOK
    time.sleep(0.3)
    assert len(receiver.deliveries) == 1  # a refusal is not retried


def test_a_webhook_that_answers_500_is_retried_with_the_same_key(
    make_receiver: Callable[..., HttpReceiver],
    client: FlaskClient,
    session: Session,
    make_token: TokenFactory,
    start_worker: Callable[..., Any],
) -> None:
    receiver = make_receiver(statuses=(500, 200))
    siem = make_token("intake")
    give_webhook(session, siem, receiver.url, "s")
    incident_id = client.post(URL, json=incident_payload(), headers=siem).json["id"]
    start_worker(env=_worker_env())
    receiver.wait_for(1)

    def waiting_to_retry() -> Job | None:
        job = _webhook_receipt(session)
        return job if job and job.state == jobs.QUEUED and job.attempts == 1 else None

    job = eventually(waiting_to_retry, interval=0.02)
    assert job.last_error.endswith("HTTP 500") and job.lease_until is None
    assert job.run_at > job.started_at  # backed off
    assert session.scalars(select(Event).where(Event.kind == "job.dead")).first() is None

    deliveries = receiver.wait_for(2)  # the first retry comes 1-2 s later
    done = eventually(lambda: (j := _webhook_receipt(session)) and j.state == jobs.DONE and j)
    assert [d.key for d in deliveries] == [f"receipt.webhook:{incident_id}"] * 2
    assert (done.attempts, done.last_error) == (2, None)
