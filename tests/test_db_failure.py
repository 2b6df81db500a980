"""A database that fails under a request answers 500 or 503 (never a 4xx), and nothing is half-written."""

import sqlite3
import threading
import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app import db
from incidents.events import FEED_LOCK_KEY
from tests.conftest import PG_ADMIN_URL, incident_payload

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
TABLES = ("incidents", "observables", "participants", "occurrences", "events", "idempotency_keys")


@pytest.fixture
def app_config() -> dict:
    # Short waits, so a held lock or an exhausted pool fails the request quickly; one pooled connection
    # (plus SQLAlchemy's five overflow) so the test can hold them all.
    return {"SQLITE_BUSY_TIMEOUT": 0.2, "DB_POOL_SIZE": 1, "DB_POOL_TIMEOUT": 0.3}


def _rows(app) -> dict[str, int]:
    """How many rows each table the filing transaction writes holds, and where the reference counter stands."""
    with app.app_context(), db.engine().connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
        counts["ref_counter"] = conn.execute(text("SELECT coalesce(sum(value), 0) FROM ref_counters")).scalar()
    return counts


def _assert_unavailable(response, min_seconds: float = 0.0, elapsed: float = 0.0) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert elapsed >= min_seconds


def _admin_pg() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


def _pg_database(database_url: str) -> str:
    return database_url.rsplit("/", 1)[1]


@SQLITE
def test_sqlite_write_locked_longer_than_busy_timeout_answers_503_and_writes_nothing(app, client, database_url,
                                                                                     make_token):  # fmt: skip
    headers = make_token("operator")
    first = client.post("/api/v1/incidents", json=incident_payload(title="trước khi khóa"), headers=headers)
    assert first.status_code == 201
    before = _rows(app)
    # Another process holds the write lock (a long migration, a backup, a stuck writer) past busy_timeout.
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        blocked = client.post("/api/v1/incidents", json=incident_payload(title="bị khóa"), headers=headers)
        _assert_unavailable(blocked, 0.2, time.monotonic() - started)
        patched = client.patch(f"/api/v1/incidents/{first.json['id']}", json={"priority": "P1"}, headers=headers)
        _assert_unavailable(patched)
        # WAL: readers are not blocked by the writer, so reads still answer.
        assert client.get(f"/api/v1/incidents/{first.json['id']}", headers=headers).json["priority"] == "P2"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _rows(app) == before
    after = client.post("/api/v1/incidents", json=incident_payload(title="bị khóa"), headers=headers)
    assert after.status_code == 201
    assert int(after.json["ref"].rsplit("-", 1)[1]) == int(first.json["ref"].rsplit("-", 1)[1]) + 1


def test_sqlite_write_waits_for_a_lock_released_within_busy_timeout_and_keeps_the_timeout(tmp_path):
    """A write polls for the write lock in short pauses of its own (app/db.py), so it gets the lock soon after
    another writer lets go, and the connection's busy_timeout is what it was for every other statement."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'lock.db'}", busy_timeout=2.0)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    holder = sqlite3.connect(tmp_path / "lock.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    with engine.connect().execution_options(ucsc_write=True) as conn, conn.begin():
        waited = time.monotonic() - started
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
    assert 0.25 <= waited < 1.0, waited
    holder.close()
    engine.dispose()


def test_a_request_waiting_for_the_sqlite_lock_gets_it_before_a_worker_that_gives_way(tmp_path):
    """The worker's writers try for the lock less often (db.give_way): when a writer lets go, a request that was
    waiting beside one of them gets it first, even though the worker began waiting earlier."""
    path = tmp_path / "lock.db"
    web, worker = (db.make_engine(f"sqlite:///{path}", busy_timeout=5.0) for _ in range(2))
    db.give_way(worker)
    with web.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def write(engine, who: str) -> None:
        with engine.connect().execution_options(ucsc_write=True) as conn, conn.begin():
            conn.execute(text("INSERT INTO t VALUES (:who)"), {"who": who})
            time.sleep(0.05)  # the other waiter is still waiting when this commits

    firsts = []
    for n in range(5):
        holder.execute("BEGIN IMMEDIATE")
        # Let go at a moment out of step with the worker's pauses, a different one each round.
        threading.Timer(0.3 + 0.007 * n, lambda: holder.execute("COMMIT")).start()
        waiting = [threading.Thread(target=write, args=(worker, "worker"))]
        waiting[0].start()
        time.sleep(0.05)
        waiting.append(threading.Thread(target=write, args=(web, "web")))
        waiting[1].start()
        for thread in waiting:
            thread.join(10)
        with web.connect() as conn:
            firsts.append(conn.execute(text("SELECT who FROM t ORDER BY rowid DESC LIMIT 2")).scalars().all()[-1])
    holder.close()
    web.dispose()
    worker.dispose()
    # Chance decides only when both try within the same few milliseconds: most rounds go to the request.
    assert firsts.count("web") >= 3, firsts


@POSTGRES
def test_postgres_backend_terminated_mid_write_answers_503_and_rolls_back(app, client, database_url, make_token):
    headers = make_token("operator")
    first = client.post("/api/v1/incidents", json=incident_payload(title="trước sự cố"), headers=headers)
    assert first.status_code == 201
    before = _rows(app)
    answer: dict = {}
    with psycopg.connect(database_url, autocommit=True) as holder, _admin_pg() as admin:
        # Hold the change-feed lock, so the filing blocks after it has inserted the incident, its observables
        # and participants and moved the reference counter, waiting to write its event.
        holder.execute("SELECT pg_advisory_lock(%s)", [FEED_LOCK_KEY])
        worker = threading.Thread(
            target=lambda: answer.update(
                r=client.post("/api/v1/incidents", json=incident_payload(title="giữa chừng"), headers=headers)
            )
        )
        worker.start()
        waiting = None
        deadline = time.monotonic() + 10
        while waiting is None and time.monotonic() < deadline:
            waiting = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
                " AND query LIKE %s", [_pg_database(database_url), "%pg_advisory_xact_lock%"],
            ).fetchone()  # fmt: skip
            time.sleep(0.02)
        assert waiting is not None, "the filing never reached the feed lock"
        # The server ends that backend, as a failover, an OOM kill or an admin would.
        assert admin.execute("SELECT pg_terminate_backend(%s)", [waiting[0]]).fetchone() == (True,)
        worker.join(10)
        holder.execute("SELECT pg_advisory_unlock(%s)", [FEED_LOCK_KEY])
    _assert_unavailable(answer["r"])
    assert _rows(app) == before
    # The pool replaces the dead connection; the next filing takes the next reference.
    after = client.post("/api/v1/incidents", json=incident_payload(title="giữa chừng"), headers=headers)
    assert after.status_code == 201, after.json
    assert int(after.json["ref"].rsplit("-", 1)[1]) == int(first.json["ref"].rsplit("-", 1)[1]) + 1


@POSTGRES
def test_postgres_pool_exhausted_answers_503_not_401(app, client, make_token):
    warm = make_token("operator")
    assert client.post("/api/v1/incidents", json=incident_payload(), headers=warm).status_code == 201
    cold = make_token("operator")  # never used: its lookup needs the database
    before = _rows(app)
    with app.app_context():
        held = []
        try:
            while True:  # take every connection the pool will give
                try:
                    held.append(db.engine().connect())
                except PoolTimeout:
                    break
            for method, path, headers in [("post", "/api/v1/incidents", warm), ("get", "/api/v1/incidents", warm),
                                          ("get", "/api/v1/incidents", cold)]:  # fmt: skip
                started = time.monotonic()
                r = getattr(client, method)(path, json=incident_payload(), headers=headers)
                _assert_unavailable(r, 0.3, time.monotonic() - started)
        finally:
            for conn in held:
                conn.close()
    assert _rows(app) == before
    assert client.get("/api/v1/incidents", headers=cold).status_code == 200


@POSTGRES
def test_postgres_pings_a_pooled_connection_only_after_it_sat_idle(app, client, database_url, make_token,
                                                                   monkeypatch):  # fmt: skip
    headers = make_token("operator")
    assert client.post("/api/v1/incidents", json=incident_payload(), headers=headers).status_code == 201
    dialect = app.extensions["ucsc.engine"].dialect
    pings = []
    real_ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: pings.append(conn) or real_ping(conn))
    for _ in range(3):  # one request after another: the connection was in use a moment ago
        assert client.post("/api/v1/incidents", json=incident_payload(), headers=headers).status_code == 201
    assert pings == []
    # The server cuts the pooled connection while it sits idle (a restart, an idle timeout): the next request is
    # served on a new one, not answered 503.
    with _admin_pg() as admin:
        cut = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> "
            "pg_backend_pid()", [_pg_database(database_url)],
        ).fetchone()[0]  # fmt: skip
    assert cut >= 1
    time.sleep(db.PING_AFTER_IDLE + 0.2)
    before = _rows(app)["incidents"]
    assert client.post("/api/v1/incidents", json=incident_payload(), headers=headers).status_code == 201
    assert len(pings) >= 1
    assert _rows(app)["incidents"] == before + 1


@POSTGRES
def test_postgres_refusing_connections_answers_503_not_401(app, client, database_url, make_token):
    warm = make_token("operator")
    assert client.post("/api/v1/incidents", json=incident_payload(), headers=warm).status_code == 201
    cold = make_token("operator")
    before = _rows(app)
    name = _pg_database(database_url)
    with _admin_pg() as admin:
        try:
            # The database goes away under the app: its connections are cut and new ones are refused.
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
            for method, headers in [("post", warm), ("get", warm), ("get", cold)]:
                r = getattr(client, method)("/api/v1/incidents", json=incident_payload(), headers=headers)
                _assert_unavailable(r)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert _rows(app) == before
    assert client.get("/api/v1/incidents", headers=cold).status_code == 200


def _break_event_inserts(app, dialect: str) -> str:
    """Make the database itself fail every insert into `events` (a corrupt page, a failing extension)."""
    with app.app_context(), db.engine().begin() as conn:
        if dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER test_fault BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
            return "DROP TRIGGER test_fault"
        conn.exec_driver_sql(
            "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = 'XX001'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER test_fault BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_fault()"
        )
        return "DROP TRIGGER test_fault ON events; DROP FUNCTION test_fault()"


def test_database_error_mid_transaction_answers_500_and_rolls_back(app, client, database_url, make_token, caplog):
    headers = make_token("operator")
    first = client.post("/api/v1/incidents", json=incident_payload(), headers=headers)
    assert first.status_code == 201
    before = _rows(app)
    undo = _break_event_inserts(app, "sqlite" if database_url.startswith("sqlite") else "postgresql")
    try:
        # The incident, its observables and participants are inserted before the event fails.
        r = client.post("/api/v1/incidents", json=incident_payload(title="lỗi cơ sở dữ liệu"), headers=headers)
        assert r.status_code == 500, r.json
        assert r.mimetype == "application/problem+json"
        assert r.json["request_id"] == r.headers["X-Request-ID"]
        t = client.post(f"/api/v1/incidents/{first.json['id']}/transitions", json={"to": "triage"}, headers=headers)
        assert t.status_code == 500, t.json
    finally:
        with app.app_context(), db.engine().begin() as conn:
            for statement in undo.split("; "):
                conn.exec_driver_sql(statement)
    assert _rows(app) == before
    assert client.get(f"/api/v1/incidents/{first.json['id']}", headers=headers).json["status"] == "new"
    assert any(rec.getMessage() == "unhandled error" for rec in caplog.records)
