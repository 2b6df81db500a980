"""The real worker: escalation timing, acks that beat the escalation, SIGKILLs mid-delivery, an SMTP outage."""

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.models import Job
from playbooks.delivery import DELIVER
from playbooks.models import Delivery, PlaybookRun
from playbooks.steps import WAIT
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.receivers import HttpReceiver, SmtpServer, _Collect, eventually
from tests.warm import WorkerZygote

URL = "/api/v1/incidents"
BASE_URL = "https://ucsc.thanhhoa.gov.vn"
THREADS = 4
HTTP_EACH = 5  # webhook and SMS contacts beside the 50 e-mail ones
NO_MAIL = {"name": "SOC Sở TT&TT"}  # no reporter address: no receipt e-mail among the pages


class TimedSmtp(SmtpServer):
    """aiosmtpd that notes when each message arrived, optionally taking `delay` seconds per message."""

    def __init__(self, delay: float = 0.0) -> None:
        import threading

        from tests.live import free_port

        self.mails = []
        self._arrived = threading.Condition()
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.arrived: list[float] = []
        self.delay = delay
        outer = self

        class Slow(_Collect):
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if outer.delay:
                    await asyncio.sleep(outer.delay)
                return await super().handle_DATA(server, session, envelope)

        self._controller = Controller(Slow(self._record), hostname="127.0.0.1", port=self.port)

    def _record(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> None:
        self.arrived.append(time.monotonic())
        super()._record(mail_from, rcpt_tos, content)


def _env(smtp: SmtpServer, **extra: str) -> dict[str, str]:
    return {
        # WAL with synchronous=NORMAL keeps every commit through a SIGKILL (only a power cut could lose one).
        "UCSC_SQLITE_SYNCHRONOUS": "NORMAL",
        "UCSC_SMTP_URL": smtp.url,
        "UCSC_BASE_URL": BASE_URL,
        "UCSC_MAIL_FROM": "ucsc@thanhhoa.gov.vn",
        "UCSC_WORKER_THREADS": str(THREADS),
        "UCSC_NOTIFY_TIMEOUT": "1.5",
        # Well above a send's 1.5 s timeout even on a loaded machine: a lease that runs out while its job still runs
        # lets the job be claimed again and sent twice, which is not what the kill test counts.
        "UCSC_PAGING_LEASE_SECONDS": "8",
        "UCSC_PAGING_RETRY_SECONDS": "0.4",
        "UCSC_PAGING_RETRY_CAP_SECONDS": "0.8",
        "UCSC_WORKER_POLL_SECONDS": "0.05",
        **extra,
    }


@pytest.fixture(scope="module")
def worker_zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerZygote]:
    """Imports the app once for this module's workers, which it forks (tests/warm.py): a start or a restart after
    a SIGKILL takes a fraction of a second and no import's CPU time."""
    zygote = WorkerZygote(tmp_path_factory.mktemp("zygote"))
    yield zygote
    zygote.close()


@pytest.fixture
def start_worker(worker_zygote: WorkerZygote, database_url: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """conftest's `start_worker`, forking each worker from the zygote."""
    started: list[Any] = []

    def factory(env: dict[str, str] | None = None) -> Any:
        worker = worker_zygote.start(database_url, tmp_path / f"worker-{len(started)}.log", env)
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.kill()


@pytest.fixture
def drill(app: Flask, make_token: TokenFactory) -> dict[str, Any]:
    """The standing body's focal point and the working group's leader, both by e-mail; the drill playbook."""
    paging.load_shipped(app, demo=False)
    lan = paging.add_contact(app, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn", channels=["email"])
    paging.add_contact(
        app,
        organisation="dpi",
        name="Tổ trưởng",
        email="leader@dic.example.vn",
        channels=["email"],
        roles=["working_group.leader"],
        active=True,
    )
    from app import db
    from incidents.models import User
    from playbooks.models import Contact

    headers = make_token("responder", organisation="dic", username="lan")
    # Only the drill runs here: the automatic playbook for category "other" would page the desk too.
    admin = make_token("admin")
    assert app.test_client().patch("/api/v1/playbooks/other", json={"enabled": False}, headers=admin).status_code == 200
    with app.app_context():
        s = db.session()
        with s.begin():
            s.get(Contact, lan).user_id = s.scalar(select(User.id).where(User.username == "lan"))
    return {"lan": headers, "lan_id": lan}


def _start_drill(client: FlaskClient, operator: dict[str, str]) -> int:
    incident_id = client.post(
        URL, json=incident_payload(category="other", exercise=True, reporter=NO_MAIL), headers=operator
    ).json["id"]
    r = client.post(f"{URL}/{incident_id}/runs", json={"playbook": "drill-ack-timer"}, headers=operator)
    assert r.status_code == 201, r.json
    return incident_id


def _configure(app_config: dict, smtp: SmtpServer, **extra: Any) -> None:
    """The web process and the worker share their configuration, as in a deployment."""
    app_config.update(
        SMTP_URL=smtp.url, BASE_URL=BASE_URL, MAIL_FROM="ucsc@thanhhoa.gov.vn", SQLITE_SYNCHRONOUS="NORMAL", **extra
    )


@pytest.fixture
def smtp(app_config: dict) -> Iterator[TimedSmtp]:
    server = TimedSmtp().start()
    _configure(app_config, server)
    yield server
    server.close()


@pytest.fixture
def receivers(app_config: dict) -> Iterator[tuple[TimedSmtp, HttpReceiver, HttpReceiver]]:
    smtp, hooks, sms = (
        TimedSmtp(delay=0.05).start(),
        HttpReceiver(delays=(0.05,)).start(),
        HttpReceiver(delays=(0.05,)).start(),
    )
    _configure(app_config, smtp, SMS_GATEWAY_URL=sms.url)
    yield smtp, hooks, sms
    smtp.close()
    hooks.close()
    sms.close()


@pytest.fixture
def down_smtp(app_config: dict) -> Iterator[TimedSmtp]:
    server = TimedSmtp()  # its port is reserved, nothing listens yet
    _configure(app_config, server)
    yield server
    server.close()


def test_without_an_ack_the_escalation_arrives_three_to_four_seconds_after_the_page_then_the_request_for_direction(
    smtp: TimedSmtp,
    app: Flask,
    client: FlaskClient,
    dbs: Session,
    operator: dict[str, str],
    drill: dict,
    start_worker: Callable[..., Any],
) -> None:
    start_worker(env=_env(smtp))
    incident_id = _start_drill(client, operator)
    mails = smtp.wait_for(2, timeout=15)
    assert [m.rcpt_tos for m in mails] == [["lan@dic.example.vn"], ["leader@dic.example.vn"]]
    gap = smtp.arrived[1] - smtp.arrived[0]
    assert 3.0 <= gap <= 4.0, gap
    kinds = [
        e.kind
        for e in eventually(
            lambda: (
                paging.events(dbs, "direction.requested", incident_id) and paging.events(dbs, incident_id=incident_id)
            )
        )
    ]
    assert kinds.index("page.escalated") < kinds.index("direction.requested")
    assert kinds.count("page.sent") == 2
    eventually(lambda: len(paging.events(dbs, "page.delivered", incident_id)) == 2)


def test_an_ack_at_two_seconds_stops_the_escalation(
    smtp: TimedSmtp,
    app: Flask,
    client: FlaskClient,
    dbs: Session,
    operator: dict[str, str],
    drill: dict,
    start_worker: Callable[..., Any],
) -> None:
    start_worker(env=_env(smtp))
    incident_id = _start_drill(client, operator)
    smtp.wait_for(1)
    time.sleep(max(0.0, smtp.arrived[0] + 2.0 - time.monotonic()))
    [page] = paging.pages(dbs, incident_id)
    assert client.post(f"/api/v1/pages/{page.id}/acks", json={}, headers=drill["lan"]).status_code == 200
    run = eventually(lambda: (dbs.rollback(), r := dbs.scalar(select(PlaybookRun))) and r.state == "done" and r)
    assert run.state == "done"

    def timer_fired() -> bool:
        waits = paging.queued(dbs, WAIT)
        return bool(waits) and all(job.state == "done" for job in waits)

    # The timer ran (3 s after the page) and found nothing to escalate: an escalation would have written its
    # event, pages and deliveries in that job's transaction, so none can follow.
    eventually(timer_fired, timeout=10)
    assert paging.events(dbs, "page.escalated") == [] and paging.events(dbs, "direction.requested") == []
    assert len(paging.queued(dbs, DELIVER)) == 1 and len(paging.pages(dbs)) == 1
    assert len(smtp.mails) == 1


def test_an_ack_committed_while_the_escalation_job_is_claimed_still_stops_it(
    smtp: TimedSmtp,
    app: Flask,
    client: FlaskClient,
    dbs: Session,
    operator: dict[str, str],
    drill: dict,
    start_worker: Callable[..., Any],
) -> None:
    start_worker(env=_env(smtp, UCSC_PAGING_ESCALATION_GRACE_SECONDS="1.0"))
    incident_id = _start_drill(client, operator)
    smtp.wait_for(1)

    def claimed() -> Job | None:
        dbs.rollback()
        job = dbs.scalar(select(Job).where(Job.kind == WAIT))
        return job if job is not None and job.state == "running" else None

    job = eventually(claimed, timeout=10, interval=0.01)
    [page] = paging.pages(dbs, incident_id)
    assert client.post(f"/api/v1/pages/{page.id}/acks", json={}, headers=drill["lan"]).status_code == 200
    done = eventually(lambda: (dbs.rollback(), dbs.get(Job, job.id))[1].state == "done" and dbs.get(Job, job.id))
    acked = paging.pages(dbs, incident_id)[0]
    assert job.started_at < acked.acked_at < done.finished_at
    assert paging.events(dbs, "page.escalated") == [] and paging.events(dbs, "direction.requested") == []
    time.sleep(0.3)
    assert len(smtp.mails) == 1


def test_sigkills_mid_delivery_lose_nothing_and_repeat_at_most_the_send_concurrency_with_the_same_keys(
    receivers: tuple[TimedSmtp, HttpReceiver, HttpReceiver],
    app: Flask,
    client: FlaskClient,
    dbs: Session,
    operator: dict[str, str],
    start_worker: Callable[..., Any],
) -> None:
    smtp, hooks, sms = receivers
    paging.load_shipped(app, demo=False)
    contacts = [{"name": f"Email {n}", "email": f"e{n}@dost.example.vn", "channels": ["email"]} for n in range(50)]
    for n in range(HTTP_EACH):
        contacts.append({"name": f"Hook {n}", "webhook_url": f"{hooks.url}?n={n}", "webhook_secret": "s",
                         "channels": ["webhook"]})  # fmt: skip
        contacts.append({"name": f"Sms {n}", "phone": f"09120000{n:02d}", "channels": ["sms"]})
    paging.add_contacts(app, [{"organisation": "dost", **c} for c in contacts])
    env = _env(smtp, UCSC_SMS_GATEWAY_URL=sms.url)
    worker = start_worker(env=env)
    incident = client.post(URL, json=incident_payload(category="other", reporter=NO_MAIL), headers=operator).json
    r = client.post(f"{URL}/{incident['id']}/pages", json={"organisation": "dost", "pick": "all"}, headers=operator)
    assert r.status_code == 201, r.json
    for threshold in (10, 20, 30):
        eventually(lambda t=threshold: len(smtp.mails) >= t, timeout=20, interval=0.005)
        assert len(smtp.mails) <= 40
        worker.kill()
        worker = start_worker(env=env)

    def everything() -> bool:
        return (
            len({m.message["Message-ID"] for m in smtp.mails}) == 50
            and len(set(hooks.keys())) == HTTP_EACH
            and len({d.json["id"] for d in sms.deliveries}) == HTTP_EACH
        )

    eventually(everything, timeout=30)
    [page] = [p for p in paging.pages(dbs, incident["id"]) if p.target == "dost"]
    expected_keys = {f"page.{page.id}.{r.contact_id}.0" for r in page.recipients}
    mail_ids = Counter(m.message["Message-ID"] for m in smtp.mails)
    assert set(mail_ids) <= {f"<{k}@thanhhoa.gov.vn>" for k in expected_keys}
    keys = Counter(hooks.keys()) + Counter(d.json["id"] for d in sms.deliveries)
    assert set(keys) <= expected_keys
    duplicates = sum(mail_ids.values()) - len(mail_ids) + sum(keys.values()) - len(keys)
    assert duplicates <= 3 * THREADS, duplicates  # at most one send per thread repeats at each kill
    total = 50 + 2 * HTTP_EACH
    delivered = eventually(lambda: len(ev := paging.events(dbs, "page.delivered")) == total and ev, timeout=15)
    per = Counter((e.data["page_id"], e.data["contact_id"], e.data["channel"]) for e in delivered)
    assert set(per.values()) == {1} and len(per) == total
    assert {d.state for d in dbs.scalars(select(Delivery))} == {"delivered"}


def test_an_smtp_server_down_for_longer_than_three_retry_intervals_gets_everything_once_it_is_back(
    down_smtp: TimedSmtp,
    app: Flask,
    client: FlaskClient,
    dbs: Session,
    operator: dict[str, str],
    start_worker: Callable[..., Any],
) -> None:
    smtp = down_smtp
    paging.load_shipped(app, demo=False)
    paging.add_contacts(
        app,
        [{"organisation": "dost", "name": f"Email {n}", "email": f"e{n}@dost.example.vn", "channels": ["email"]}
         for n in range(5)],
    )  # fmt: skip
    retry, cap = 0.2, 0.4  # UCSC_PAGING_RETRY_SECONDS and its cap: short, so the outage need not be long
    start_worker(env=_env(smtp, UCSC_PAGING_RETRY_SECONDS=str(retry), UCSC_PAGING_RETRY_CAP_SECONDS=str(cap)))
    incident_id = client.post(URL, json=incident_payload(category="other", reporter=NO_MAIL), headers=operator).json[
        "id"
    ]
    assert (
        client.post(
            f"{URL}/{incident_id}/pages", json={"organisation": "dost", "pick": "all"}, headers=operator
        ).status_code
        == 201
    )
    # Retries after 0.2 s, then 0.4 s (capped): the fourth failed attempt means three retry intervals have passed.
    down_since = time.monotonic()

    def failed_four_times() -> bool:
        dbs.rollback()
        deliveries = dbs.scalars(select(Delivery)).all()
        return len(deliveries) == 5 and all(d.attempts >= 4 and d.state == "queued" for d in deliveries)

    eventually(failed_four_times, timeout=15)
    assert time.monotonic() - down_since > retry + cap + cap
    smtp.start()
    mails = smtp.wait_for(5, timeout=10)
    assert len({m.message["Message-ID"] for m in mails}) == 5
    eventually(lambda: len(paging.events(dbs, "page.delivered")) == 5)
    # Nothing failed for good (the automatic playbook's page to the desk, which has no contacts here, aside).
    assert [e.data for e in paging.events(dbs, "page.failed") if e.data.get("target") != "dic"] == []
