"""The change feed's guarantees: commits follow id order on PostgreSQL, and rooms mirror who may see what."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from incidents.access import audience
from incidents.base import utcnow
from incidents.events import record_event, write_pending
from incidents.models import Event, Incident, Organisation, User
from incidents.uow import in_transaction
from tests.conftest import TokenFactory, incident_payload

pg_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class IdReader:
    """The tailer's query: every row past the last id seen, in id order."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[int] = []
        with engine.connect() as conn:
            self.cursor: Any = conn.scalar(select(func.coalesce(func.max(Event.id), 0)))

    def query(self) -> Any:
        return select(Event.id).where(Event.id > self.cursor).order_by(Event.id)

    def key(self, row: Any) -> Any:
        return row.id

    def poll(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(self.query()).all()
        self.seen += [row.id for row in rows]
        if rows:
            self.cursor = self.key(rows[-1])

    def run(self, stop: threading.Event) -> None:
        """Poll continuously until `stop`, then once more."""
        while not stop.is_set():
            self.poll()
            time.sleep(0.002)
        self.poll()


class TimeReader(IdReader):
    """A TAXII-style reader: every row whose time is past the last time seen (like `date_added`), in time order."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        with engine.connect() as conn:
            self.cursor = conn.scalar(select(func.max(Event.at))) or datetime(2000, 1, 1, tzinfo=UTC)

    def query(self) -> Any:
        return select(Event.id, Event.at).where(Event.at > self.cursor).order_by(Event.at, Event.id)

    def key(self, row: Any) -> Any:
        return row.at


def _waiting_for_advisory_lock(engine: Engine) -> int:
    with engine.connect() as conn:
        # pg_locks spans the cluster: count only this test's database (the other test process has its own).
        waiting = text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return conn.scalar(waiting) or 0


def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def polling(readers: list[IdReader]) -> Iterator[None]:
    """Run `readers` in threads for the duration of the block; they poll once more after it."""
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in readers]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(5)


@pg_only
def test_second_writer_waits_for_the_first_so_no_cursor_reader_skips(app: Flask) -> None:
    """Events are written at commit, under the feed lock: a writer whose events are inserted but not yet
    committed holds the lock, and the next writer's commit waits for it, so ids become visible in id order."""
    engine: Engine = app.extensions["ucsc.engine"]
    sessions = sessionmaker(engine, expire_on_commit=False)
    reader = IdReader(engine)
    done: list[bool] = []

    def write_second() -> None:
        with sessions() as s:
            in_transaction(s, lambda: record_event(s, kind="test.second", actor=None))
            done.append(True)

    writer = threading.Thread(target=write_second, daemon=True)
    with polling([reader]), sessions() as first_writer:  # closing it rolls back: a failure leaves no lock behind
        first_writer.begin()
        record_event(first_writer, kind="test.first", actor=None)
        with engine.connect() as conn:
            before = conn.scalar(select(func.count()).where(Event.kind == "test.first"))
        assert before == 0, "an event is written at commit, not when it is recorded"
        write_pending(first_writer)  # what the commit does first: lock, INSERT (the row has its id now)
        writer.start()
        _until(lambda: _waiting_for_advisory_lock(engine) == 1 or not writer.is_alive())
        writer.join(0.5)
        assert writer.is_alive(), "the second writer's commit must wait for the feed lock while the first commits"
        assert reader.seen == []
        first_writer.commit()
        writer.join(5)
        assert done == [True]
        _until(lambda: len(reader.seen) >= 2)

    with engine.connect() as conn:
        committed = list(conn.scalars(select(Event.id).where(Event.kind.like("test.%")).order_by(Event.id)))
        kinds = list(conn.scalars(select(Event.kind).where(Event.kind.like("test.%")).order_by(Event.id)))
    assert kinds == ["test.first", "test.second"]
    assert reader.seen == committed


@pg_only
def test_a_long_transaction_does_not_hold_the_feed_lock_until_it_commits(app: Flask) -> None:
    """The lock is taken at commit: an open writer that has recorded events does not stop another from committing."""
    engine: Engine = app.extensions["ucsc.engine"]
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions() as long_writer, sessions() as other:
        long_writer.begin()
        record_event(long_writer, kind="test.long", actor=None)
        long_writer.flush()
        in_transaction(other, lambda: record_event(other, kind="test.quick", actor=None))
        long_writer.commit()
    with engine.connect() as conn:
        kinds = list(conn.scalars(select(Event.kind).where(Event.kind.like("test.%")).order_by(Event.id)))
    assert kinds == ["test.quick", "test.long"]


def test_a_rolled_back_transaction_writes_none_of_its_events(app: Flask) -> None:
    engine: Engine = app.extensions["ucsc.engine"]
    with sessionmaker(engine)() as s:

        def fail() -> None:
            record_event(s, kind="test.rolled_back", actor=None)
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            in_transaction(s, fail)
        in_transaction(s, lambda: record_event(s, kind="test.kept", actor=None))
    with engine.connect() as conn:
        kinds = list(conn.scalars(select(Event.kind).where(Event.kind.like("test.%"))))
    assert kinds == ["test.kept"]


@pg_only
def test_without_the_feed_lock_a_first_writer_committing_last_is_skipped(app: Flask) -> None:
    """The counterfactual, scheduled by hand: ids and times are taken at insert, visibility comes at commit."""
    engine: Engine = app.extensions["ucsc.engine"]
    readers = [IdReader(engine), TimeReader(engine)]
    raw = insert(Event).values(kind="raw", actor="test", data={}).returning(Event.id)
    with engine.connect() as a, engine.connect() as b:
        first = a.execute(raw.values(at=utcnow())).scalar_one()
        second = b.execute(raw.values(at=utcnow())).scalar_one()
        b.commit()
        for r in readers:
            r.poll()
        a.commit()
        for r in readers:
            r.poll()
    assert first < second
    for reader in readers:
        assert reader.seen == [second], f"{type(reader).__name__} skipped event {first} for good"


def test_a_playbook_start_that_fails_in_the_filing_keeps_the_filing_and_its_events(
    app: Flask, client: FlaskClient, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filing starts no playbook: its follow-up job does, each incident in a savepoint. A failure there
    (injected after the playbook's own writes) rolls back only that savepoint: the incident, its event and its
    deadline clocks stay, and the playbooks retry on a job of their own, which starts them once the fault is gone."""
    from incidents import followup
    from incidents.records import DeadlineClock
    from playbooks import triggers
    from playbooks.models import PlaybookRun
    from tests import paging

    paging.load_shipped(app, demo=True)
    real = triggers.evaluate

    def fails_after_writing(session: Session, incident_id: int, settings: Any) -> Any:
        assert real(session, incident_id, settings), "the shipped playbooks start on this incident"
        raise RuntimeError("injected: a playbook failed after writing its run and events")

    monkeypatch.setattr(triggers, "evaluate", fails_after_writing)
    filed = _file(client, make_token("operator"), category="ransomware")

    def census() -> tuple[list[str], int, int, dict[str, str]]:
        with sessionmaker(app.extensions["ucsc.engine"])() as s:
            kinds = list(s.scalars(select(Event.kind).where(Event.incident_id == filed["id"]).order_by(Event.id)))
            count = lambda model: s.scalar(  # noqa: E731
                select(func.count()).select_from(model).where(model.incident_id == filed["id"])
            )
            rows = s.execute(text("SELECT kind, state FROM jobs WHERE kind IN (:a, :b)"),
                             {"a": followup.FILED, "b": triggers.EVALUATE})  # fmt: skip
            jobs = {kind: state for kind, state in rows}  # noqa: C416 - Rows are not pairs to dict()
            return kinds, count(PlaybookRun), count(DeadlineClock), jobs

    kinds, runs, clocks, jobs = census()
    assert kinds == ["incident.created"] and runs == 0 and clocks == 0
    assert jobs == {followup.FILED: "queued"}  # the filing's one job, nothing else

    assert paging.run_jobs(app, (followup.FILED,)) == 1
    kinds, runs, clocks, jobs = census()
    assert "playbook.started" not in kinds and "page.sent" not in kinds
    assert runs == 0 and clocks > 0
    assert jobs == {followup.FILED: "done", triggers.EVALUATE: "queued"}

    monkeypatch.setattr(triggers, "evaluate", real)
    assert paging.run_jobs(app, (triggers.EVALUATE,)) == 1
    kinds, runs, clocks, jobs = census()
    assert "playbook.started" in kinds and runs > 0
    assert jobs == {followup.FILED: "done", triggers.EVALUATE: "done"}


@pytest.fixture
def reader(app: Flask) -> Iterator[Session]:
    """A session of its own: under `session`'s open app context, test-client requests share `g` and its actor."""
    with sessionmaker(app.extensions["ucsc.engine"])() as s:
        yield s


def _file(client: FlaskClient, headers: dict[str, str], **overrides: object) -> dict[str, Any]:
    r = client.post("/api/v1/incidents", json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def test_audience_names_the_rooms_allowed_each_tlp(
    client: FlaskClient, reader: Session, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    make_token("responder", "police", username="named")
    siem = make_token("intake", "dic", username="siem")
    people = [{"organisation": "doh"}, {"user": "named"}]
    filed = {tlp: _file(client, operator, tlp=tlp, participants=people) for tlp in ("clear", "amber+strict", "red")}
    filed["amber by intake"] = _file(client, siem, tlp="amber", participants=people)
    org = dict(reader.execute(select(Organisation.code, Organisation.id)).all())
    user = dict(reader.execute(select(User.username, User.id)).all())
    dic, doh = org["dic"], org["doh"]
    named, op1 = f"user:{user['named']}", f"user:{user['op1']}"
    expected = {
        "clear": {"desk", f"responders:{dic}", f"responders:{doh}", op1, named},
        "amber by intake": {"desk", f"responders:{dic}", f"responders:{doh}", f"user:{user['siem']}", named},
        "amber+strict": {f"desk:{dic}", f"desk:{doh}", f"responders:{dic}", f"responders:{doh}", op1, named},
        "red": {op1, named},
    }
    events = list(reader.scalars(select(Event).where(Event.kind == "incident.created")))
    rooms = audience(reader, events)
    by_incident = {ev.incident_id: ev.id for ev in events}
    for label, incident in filed.items():
        got, ref, status = rooms[by_incident[incident["id"]]]
        assert set(got) == expected[label], label
        assert len(got) == len(set(got)), label
        assert (ref, status) == (incident["ref"], "new")
    red_rooms = rooms[by_incident[filed["red"]["id"]]][0]
    assert not [r for r in red_rooms if r.startswith(("desk", "responders:"))], "red never names desk or responders"
    assert audience(reader, [SimpleNamespace(id=0, incident_id=None, tlp=None)])[0] == (["desk"], None, None)


def test_raising_an_incidents_tlp_narrows_the_audience_of_its_older_events(
    client: FlaskClient, reader: Session, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    incident = _file(client, operator, tlp="amber")
    r = client.patch(f"/api/v1/incidents/{incident['id']}", json={"tlp": "red"}, headers=operator)
    assert r.status_code == 200, r.json
    op1 = reader.scalar(select(User.id).where(User.username == "op1"))
    created = reader.scalar(select(Event).where(Event.incident_id == incident["id"], Event.kind == "incident.created"))
    assert created is not None and created.tlp == "amber"
    assert reader.scalar(select(Incident.tlp).where(Incident.id == incident["id"])) == "red"
    assert audience(reader, [created])[created.id][0] == [f"user:{op1}"]
