"""Filings that arrive together share one write transaction (group commit): each is answered as it would be alone."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from app import db
from app.api.incidents import GROUP_COMMIT
from app.auth import check_token
from incidents.errors import Forbidden, ValidationFailed
from incidents.filing import FilingSettings, IdempotencyClaim
from incidents.filing_together import Filing, file_each
from incidents.models import IdempotencyKey, Incident, Occurrence
from incidents.schemas.base import parse
from incidents.schemas.incidents import IncidentCreate
from incidents.uow import GroupCommit, RunAlone, in_transaction
from tests.conftest import incident_payload

URL = "/api/v1/incidents"


def _actor(headers: dict[str, str]):
    actor, refusal = check_token(headers["Authorization"].removeprefix("Bearer "))
    assert actor is not None, refusal
    return actor


def test_filings_in_one_transaction_each_answer_as_alone_and_a_refused_one_costs_the_others_nothing(
    app, operator, make_token
):
    committee = make_token("committee")
    with app.test_request_context():
        actor, settings = _actor(operator), FilingSettings()
        item = lambda **fields: parse(IncidentCreate, incident_payload(**fields))  # noqa: E731
        claim = IdempotencyClaim(token_id=actor.token_id or 0, key="k-1", request_hash="h-1")
        filings = [
            Filing(item(dedup_key="ids:1"), actor, settings, claim),  # opens an incident
            Filing(item(dedup_key="ids:1"), actor, settings),  # a repeat of it, in the same transaction
            Filing(item(affected_system="no-such-system"), actor, settings),  # refused: names no system
            Filing(item(dedup_key="ids:2"), actor, settings, claim),  # k-1 again: runs after this commits
            Filing(item(), _actor(committee), settings),  # refused: the committee does not file
            Filing(item(dedup_key="ids:3"), actor, settings),  # another incident
        ]
        session = db.session()
        opened, grouped, refused, again, forbidden, other = in_transaction(session, lambda: file_each(session, filings))
        assert (opened.status_code, opened.body["occurrence_count"]) == (201, 1)
        assert grouped.status_code == 200
        assert (grouped.body["id"], grouped.body["occurrence_count"]) == (opened.body["id"], 2)
        assert isinstance(refused, ValidationFailed) and refused.errors[0].field == "affected_system"
        assert isinstance(again, RunAlone) and isinstance(forbidden, Forbidden)
        assert other.status_code == 201 and other.body["id"] != opened.body["id"]
        per_incident = select(Occurrence.incident_id, func.count()).group_by(Occurrence.incident_id)
        assert dict(session.execute(per_incident).all()) == {opened.body["id"]: 2, other.body["id"]: 1}
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def storm(app, senders: int, post) -> list[list[tuple[int, dict]]]:
    """`post(client, n)` run by `senders` threads released together, each on its own client: each one's answers.
    `post` sends its last request twice, so that one is answered as a replay."""
    barrier = threading.Barrier(senders)

    def send(n: int) -> list[tuple[int, dict]]:
        client = app.test_client()
        barrier.wait()
        return [(r.status_code, r.get_json()) for r in post(client, n)]

    with ThreadPoolExecutor(senders) as pool:
        return list(pool.map(send, range(senders)))


def assert_nothing_lost_or_doubled(app, sent: list[list[tuple[int, dict]]], keys: int, shared: GroupCommit) -> None:
    """`keys` incidents took every filing of `sent` but the replays, each incident's answers counted its
    occurrences one by one (no count given twice), each replay answered as first, and transactions were shared."""
    answers = [a for each in sent for a in each[:-1]]
    assert [code for code, _ in answers].count(201) == keys, answers
    assert [code for code, _ in answers].count(200) == len(answers) - keys
    assert all(each[-1] == each[-2] for each in sent)
    with app.app_context():
        session = db.session()
        assert session.scalar(select(func.count()).select_from(Incident)) == keys
        assert session.scalar(select(func.count()).select_from(Occurrence)) == len(answers)
    by_incident: dict[int, list[int]] = {}
    for _, body in answers:
        by_incident.setdefault(body["id"], []).append(body["occurrence_count"])
    assert all(sorted(counts) == list(range(1, len(counts) + 1)) for counts in by_incident.values())
    assert shared.jobs == len(answers) + len(sent) and shared.transactions < shared.jobs


def test_a_storm_of_single_filings_shares_transactions_and_loses_or_doubles_nothing(app, operator):
    senders, per_sender, keys = 16, 5, 4

    def post(client, n: int) -> list:
        answers = []
        for k in range(per_sender):
            body = incident_payload(dedup_key=f"ids:rule-{(n * per_sender + k) % keys}")
            answers.append(client.post(URL, json=body, headers={**operator, "Idempotency-Key": f"f-{n}-{k}"}))
        return [*answers, client.post(URL, json=body, headers={**operator, "Idempotency-Key": f"f-{n}-{k}"})]

    assert_nothing_lost_or_doubled(app, storm(app, senders, post), keys, app.extensions[GROUP_COMMIT])


def test_a_shared_transaction_that_fails_runs_each_of_its_jobs_alone(app):
    gate, started = threading.Event(), threading.Event()
    alone: list[str] = []

    def run_batch(session, jobs):
        if jobs == ["first"]:
            started.set()
            gate.wait(10)  # the others queue meanwhile, to share the next transaction
        if "poison" in jobs:
            raise RuntimeError("the shared transaction failed")
        return [job.upper() for job in jobs]

    def run_alone(session, job):
        alone.append(job)
        if job == "poison":
            raise ValueError("poison alone")
        return job.upper() + " alone"

    shared = GroupCommit(run_batch, run_alone)

    def submit(job):
        with app.app_context():
            try:
                return shared.submit(db.session, job)
            except ValueError as exc:
                return str(exc)

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(submit, "first")
        assert started.wait(10)
        later = [pool.submit(submit, job) for job in ("poison", "third")]
        deadline = time.monotonic() + 10
        while len(shared._queue) < 2 and time.monotonic() < deadline:  # both queued behind the first
            time.sleep(0.01)
        gate.set()
        assert first.result(10) == "FIRST"
        assert [f.result(10) for f in later] == ["poison alone", "THIRD alone"]
    assert sorted(alone) == ["poison", "third"]
    assert (shared.transactions, shared.jobs) == (2, 3)


def test_a_job_alone_runs_at_once_in_a_transaction_of_its_own(app):
    shared = GroupCommit(lambda session, jobs: [j.upper() for j in jobs], lambda session, j: "never")
    with app.app_context():
        assert shared.submit(db.session, "only") == "ONLY"
    assert (shared.transactions, shared.jobs) == (1, 1)
