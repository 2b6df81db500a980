"""SIGKILL of the worker after filings committed and before their playbooks started, and of gunicorn between a
filing's insert and its commit: every committed filing gets its playbooks started, each exactly once."""

import signal
import threading
import time

import pytest
import requests
from sqlalchemy import func, select

from app import db
from incidents.followup import FILED
from incidents.models import Incident, Job
from playbooks.models import PlaybookRun
from playbooks.triggers import EVALUATE
from tests import paging
from tests.conftest import incident_payload

# The jobs that start playbooks: a filing's follow-up, and a retry of one incident's start.
STARTS = (FILED, EVALUATE)

THREADS = 4


def _file_until(url: str, headers: dict[str, str], stop: threading.Event, answered: list[int]) -> None:
    http = requests.Session()
    n = 0
    while not stop.is_set():
        n += 1
        body = incident_payload(category="other", title=f"crash {threading.get_ident()} {n}")
        try:
            r = http.post(f"{url}/api/v1/incidents", json=body, headers=headers, timeout=10)
        except requests.RequestException:
            time.sleep(0.05)  # the server is down (killed) until the test starts it again
            continue
        if r.status_code == 201:
            answered.append(r.json()["id"])


def _filing(url: str, headers: dict[str, str], answered: list[int]) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    threads = [threading.Thread(target=_file_until, args=(url, headers, stop, answered)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    return stop, threads


def _wait(answered: list[int], count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(answered) < count:
        assert time.monotonic() < deadline, f"only {len(answered)} filings answered"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_of_worker_and_web_starts_each_committed_filings_playbooks_once(
    app, live_server, start_worker, make_token
):
    paging.load_shipped(app, demo=False)
    headers = make_token("intake", username="siem")
    env = {"UCSC_WORKER_POLL_SECONDS": "0.05", "UCSC_PAGING_LEASE_SECONDS": "2", "UCSC_SQLITE_SYNCHRONOUS": "NORMAL"}
    answered: list[int] = []
    worker = start_worker(env)
    stop, threads = _filing(live_server.url, headers, answered)

    # The worker dies while filings keep committing their evaluate jobs: those wait for the next worker.
    _wait(answered, 30)
    worker.kill(signal.SIGKILL)
    _wait(answered, 60)
    # The web dies mid-filing: some filings are cut off between their insert and their commit.
    live_server.kill(signal.SIGKILL)
    time.sleep(0.3)
    live_server.start()
    worker = start_worker(env)
    _wait(answered, 100)
    worker.kill(signal.SIGKILL)  # again, with evaluate jobs leased to it
    worker = start_worker(env)
    stop.set()
    for t in threads:
        t.join(15)

    with app.app_context():
        s = db.session()
        deadline = time.monotonic() + 60
        while True:
            pending = s.scalar(
                select(func.count()).select_from(Job).where(Job.kind.in_(STARTS), Job.state.in_(("queued", "running")))
            )
            s.rollback()
            if not pending:
                break
            assert time.monotonic() < deadline, f"{pending} follow-up and evaluate jobs still pending"
            time.sleep(0.1)
        incidents = set(s.scalars(select(Incident.id)))
        assert set(answered) <= incidents
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind.in_(STARTS), Job.state == "dead")) == 0
        runs = s.execute(
            select(PlaybookRun.incident_id, PlaybookRun.name, func.count())
            .where(PlaybookRun.trigger == "auto")
            .group_by(PlaybookRun.incident_id, PlaybookRun.name)
        ).all()
    started = {incident_id for incident_id, _, _ in runs}
    assert started == incidents, f"without a run: {sorted(incidents - started)[:10]}"
    assert all(count == 1 for _, _, count in runs)
    # Each filing of the same category started the same playbooks.
    names = {i: frozenset(name for incident_id, name, _ in runs if incident_id == i) for i in incidents}
    assert len(set(names.values())) == 1, set(names.values())
