"""Production topology on PostgreSQL: two gunicorn instances and two workers sharing the feed and the jobs."""

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from incidents.models import Incident
from playbooks.models import Delivery, Page
from tests import paging
from tests.conftest import incident_payload
from tests.live import LiveServer
from tests.receivers import HttpReceiver, SmtpServer, eventually, give_webhook
from tests.sockets import LiveClient

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

INCIDENTS = 1000
FILERS = 8
WORKER_THREADS = 4  # the workers' send concurrency: what one SIGKILL may at most deliver twice


def _file(servers: list[LiveServer], headers: dict[str, str], numbers: range, accepted: dict[int, str],
          errors: list[str], lock: threading.Lock) -> None:  # fmt: skip
    sessions = [requests.Session() for _ in servers]
    for n in numbers:
        index = n % len(servers)
        body = incident_payload(
            title=f"Tải hai máy chủ số {n}",
            category="other",
            observables=[{"type": "ipv4-addr", "value": f"198.51.100.{n % 250}"}],
        )
        for _attempt in range(20):  # a 503 (busy pool) is retried, as a SIEM would; anything else is an error
            try:
                response = sessions[index].post(
                    servers[index].url + "/api/v1/incidents",
                    json=body,
                    headers={**headers, "Idempotency-Key": f"topo-{n}"},
                    timeout=15,
                )
            except requests.RequestException as exc:
                errors.append(f"{n}: {exc!r}")
                break
            if response.status_code == 503:
                time.sleep(0.2)
                continue
            if response.status_code != 201:
                errors.append(f"{n}: {response.status_code} {response.text[:200]}")
            else:
                with lock:
                    accepted[response.json()["id"]] = body["title"]
            break
    for s in sessions:
        s.close()


def _created(client: LiveClient) -> list[dict[str, Any]]:
    return client.named("incident.created")


def test_a_thousand_incidents_through_two_instances_while_a_worker_is_killed_lose_and_double_nothing(
    app, database_url: str, tmp_path: Path, make_token, session, start_worker
) -> None:
    # The shipped playbook for "other" pages the standing body's on-call contact, by e-mail, for every incident.
    paging.load_shipped(app, demo=True)
    smtp = SmtpServer().start()
    receiver = HttpReceiver().start()
    siem = make_token("intake", username="siem-topology")
    give_webhook(session, siem, receiver.url, "topology-secret")
    viewer = make_token("operator", username="op-topology")
    # Every process shares one configuration, as in a deployment; the storm limit is lifted so each page is
    # its own e-mail (the storm limit and its digest have their own test).
    shared = {"UCSC_SMTP_URL": smtp.url, "UCSC_PAGING_RATE_LIMIT": "100000"}
    servers = [LiveServer(database_url, tmp_path / f"web-{i}.log", shared).start() for i in range(2)]
    worker_env = {"UCSC_WORKER_THREADS": str(WORKER_THREADS), **shared}
    workers = [start_worker(worker_env), start_worker(worker_env)]
    clients = [LiveClient(server.url).connect(viewer) for server in servers for _ in range(2)]
    try:
        for client in clients:
            client.wait_for("ready")
        accepted: dict[int, str] = {}
        errors: list[str] = []
        lock = threading.Lock()
        filers = [threading.Thread(target=_file, args=(servers, siem, range(i, INCIDENTS, FILERS), accepted, errors,
                                                        lock)) for i in range(FILERS)]  # fmt: skip
        started = time.monotonic()
        for thread in filers:
            thread.start()
        eventually(lambda: len(accepted) >= INCIDENTS // 3, timeout=120)
        workers[0].kill()  # SIGKILL mid-load: its leased receipts are reclaimed by the other worker or its successor
        killed_at = len(accepted)
        time.sleep(0.5)
        workers[0] = start_worker(worker_env)
        for thread in filers:
            thread.join()
        filing_seconds = time.monotonic() - started

        assert errors == []
        assert len(accepted) == INCIDENTS
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Incident)) == INCIDENTS
        assert session.scalar(select(func.count(func.distinct(Incident.title)))) == INCIDENTS

        for client in clients:
            frames = client.wait_count("incident.created", INCIDENTS, timeout=60)
            assert {f["id"] for f in frames} == set(accepted)
            assert len(frames) == INCIDENTS  # none twice
            ids = [f["event_id"] for f in frames]
            assert ids == sorted(ids), "incident.created frames arrived out of feed order"

        deliveries = receiver.wait_for(INCIDENTS, timeout=180)
        eventually(lambda: {d.json["id"] for d in receiver.deliveries} == set(accepted), timeout=60)
        time.sleep(1.0)  # let any redelivery of a reclaimed lease arrive before counting repeats
        repeats = Counter(d.key for d in receiver.deliveries)
        doubled = sum(n - 1 for n in repeats.values())
        assert doubled <= WORKER_THREADS, f"{doubled} receipts delivered twice after one SIGKILL"
        assert all(key == f"receipt.webhook:{d.json['id']}" for d in deliveries for key in [d.key])

        # Every page delivered at least once; repeats only from the kill, each with its page's stable Message-ID.
        def delivered() -> list[Page] | None:
            session.rollback()
            pages = list(session.scalars(select(Page)))
            done = session.scalars(select(Delivery.page_id).where(Delivery.state == "delivered")).all()
            return pages if len(pages) >= INCIDENTS and {p.id for p in pages} <= set(done) else None

        pages = eventually(delivered, timeout=180)
        assert {p.incident_id for p in pages} == set(accepted)
        # A page to the desk reaches each person it names (one delivery per page, person and channel).
        session.rollback()
        emails = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.channel == "email"))
        assert emails >= len(pages)
        smtp.wait_for(emails, timeout=60)
        time.sleep(1.0)
        # The sink also holds the reporters' receipts (receipt.email.N); pages are page.PAGE.CONTACT.WAVE.
        page_mails = [m for m in smtp.mails if m.message["Message-ID"].startswith("<page.")]
        ids = Counter(m.message["Message-ID"] for m in page_mails)
        mail_repeats = sum(n - 1 for n in ids.values())
        assert len(ids) == emails, f"{len(ids)} distinct Message-IDs for {emails} e-mail deliveries"
        assert mail_repeats <= WORKER_THREADS, f"{mail_repeats} e-mails sent twice after one SIGKILL"
        assert all("[TBSC]" in m.message["Subject"] for m in page_mails)
        print(f"{INCIDENTS} incidents through 2 instances in {filing_seconds:.1f} s; worker killed after "
              f"{killed_at}; {len(receiver.deliveries)} receipts ({doubled} repeats), {len(pages)} pages, "
              f"{len(page_mails)} page e-mails ({mail_repeats} repeats)")  # fmt: skip
    finally:
        smtp.close()
        for client in clients:
            client.disconnect()
        for server in servers:
            server.stop()
        receiver.close()
        for worker in workers:
            worker.kill()


def test_clients_of_a_killed_instance_reconnect_to_either_instance_and_catch_up(
    app, database_url: str, tmp_path: Path, operator
) -> None:
    a = LiveServer(database_url, tmp_path / "web-a.log").start()
    b = LiveServer(database_url, tmp_path / "web-b.log").start()
    on_a = LiveClient(a.url).connect(operator)
    try:
        on_a.wait_for("ready")
        first = requests.post(b.url + "/api/v1/incidents", json=incident_payload(title="Trước khi máy A tắt"),
                              headers=operator, timeout=10).json()  # fmt: skip
        seen = on_a.wait_for(lambda f: f.name == "incident.created" and f.data["id"] == first["id"]).data
        a.kill()  # SIGKILL: no goodbye to its clients
        missed = [
            requests.post(b.url + "/api/v1/incidents", json=incident_payload(title=f"Khi máy A tắt {n}"),
                          headers=operator, timeout=10).json()["id"]
            for n in range(5)
        ]  # fmt: skip

        to_b = LiveClient(b.url).connect(operator, last_event_id=seen["event_id"])
        a.start()
        to_a = LiveClient(a.url).connect(operator, last_event_id=seen["event_id"])
        try:
            for client in (to_b, to_a):
                client.wait_for("ready")
                caught_up = [f["id"] for f in _created(client)]
                assert caught_up == missed, client.url  # exactly the missed ones, in order, before `ready`
                names = [f.name for f in client.frames]
                assert names.index("ready") > max(i for i, n in enumerate(names) if n == "incident.created")
            later = requests.post(a.url + "/api/v1/incidents", json=incident_payload(title="Sau khi A trở lại"),
                                  headers=operator, timeout=10).json()  # fmt: skip
            for client in (to_b, to_a):
                client.wait_for(lambda f, i=later["id"]: f.name == "incident.created" and f.data["id"] == i)
        finally:
            to_b.disconnect()
            to_a.disconnect()
    finally:
        a.stop()
        b.stop()
