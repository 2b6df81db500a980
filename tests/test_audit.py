"""The audit trail: append-only in the database, hash-chained, verified and exported, on both backends."""

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError

from app import db
from incidents import audit
from incidents.models import AuditEntry
from incidents.uow import in_transaction
from tests.conftest import incident_payload

URL = "/api/v1/incidents"
AUDIT = AuditEntry.__table__


@pytest.fixture
def app_config() -> dict:
    # A revoked token must stop working at once, not when the verified-token cache forgets it.
    return {"TOKEN_CACHE_SECONDS": 0}


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def cli(runner: FlaskCliRunner, *args: str, input: str | None = None, code: int = 0) -> str:
    result = runner.invoke(args=list(args), input=input)
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.output


def token_headers(runner: FlaskCliRunner, name: str, role: str, *options: str) -> dict[str, str]:
    """Create a token through `flask create-token` and return its Authorization header."""
    token = cli(runner, "create-token", name, "--role", role, *options).strip().splitlines()[-1]
    return {"Authorization": f"Bearer {token}"}


def rows(app: Flask) -> list[AuditEntry]:
    with app.app_context():
        session = db.session()
        # Closed at teardown, which detaches the rows without expiring them.
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def tamper(app: Flask, statement: object) -> None:
    """Change audit_log behind the application's back, as someone with the database's credentials could."""
    with app.app_context(), db.engine().begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
        else:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # triggers do not fire
        conn.execute(statement)


def a_trail(app: Flask, runner: FlaskCliRunner, length: int = 5) -> list[AuditEntry]:
    for n in range(length):
        cli(runner, "create-token", f"siem-{n}", "--role", "intake")
    return rows(app)


def verify(runner: FlaskCliRunner, code: int) -> str:
    return cli(runner, "audit", "verify", code=code).strip()


def test_verify_passes_on_a_real_trail_of_logins_tokens_restricted_reads_and_exports(app, client, runner):
    start = datetime.now(UTC)
    cli(runner, "create-user", "reader", "--role", "operator", input="correct horse battery\n")
    filer = token_headers(runner, "filer", "operator")
    reader = token_headers(runner, "reader-laptop", "operator", "--user", "reader")
    admin = token_headers(runner, "auditor", "admin")
    assert client.get(URL, headers={"Authorization": "Bearer ucsc_forged-token"}).status_code == 401
    red = client.post(URL, json=incident_payload(tlp="red"), headers=filer).json
    assert client.post(f"{URL}/{red['id']}/participants", json={"user": "reader"}, headers=filer).status_code == 201
    assert client.get(f"{URL}/{red['ref']}", headers=reader).status_code == 200
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    exported = client.get("/api/v1/audit", query_string={"since": start.isoformat(), "until": until}, headers=admin)
    assert exported.status_code == 200, exported.json

    trail = rows(app)
    assert [e.action for e in trail] == [
        "user.created", "token.created", "token.created", "token.created",
        "login.failed", "read.restricted", "audit.exported",
    ]  # fmt: skip
    assert verify(runner, 0) == f"audit trail intact: {len(trail)} rows"
    failed, read, export = trail[4:]
    assert (failed.actor, failed.actor_id, failed.source_ip) == ("token:ucsc_for", None, "127.0.0.1")
    assert failed.data == {"reason": "unknown token"}
    assert (read.actor, read.target, read.data) == ("reader", red["ref"], {"what": "incident", "tlp": "red"})
    assert (export.actor, export.data["rows"]) == ("auditor", 6)
    assert [e["hash"] for e in exported.json["items"]] == [e.hash for e in trail[:6]]


@pytest.mark.parametrize(
    ("column", "value"),
    [("data", {"role": "admin", "token_id": 2, "user": "siem-2"}), ("actor", "someone-else"), ("target", "siem-9")],
)
def test_verify_fails_naming_the_row_whose_field_was_edited_in_the_database(app, runner, column, value):
    victim = a_trail(app, runner)[2]
    assert verify(runner, 0) == "audit trail intact: 5 rows"
    tamper(app, update(AUDIT).where(AUDIT.c.id == victim.id).values({column: value}))
    assert verify(runner, 1) == (
        f"audit trail broken at row {victim.id}: its contents do not match its hash (the row was edited)"
    )


def test_an_edit_that_recomputes_its_own_hash_fails_its_mac_under_the_audit_key(app, runner):
    trail = a_trail(app, runner)
    victim, after = trail[1], trail[2]
    forged = {"role": "admin", "token_id": victim.data["token_id"], "user": victim.data["user"]}
    fields = {c: getattr(victim, c) for c in ("prev_hash", "at", "action", "actor_id", "actor", "target", "source_ip")}
    tamper(
        app,
        update(AUDIT).where(AUDIT.c.id == victim.id).values(data=forged, hash=audit.entry_hash(**fields, data=forged)),
    )
    # The row's MAC (keyed, outside the database) no longer matches; the next row's link is broken too.
    assert verify(runner, 1) == (
        f"audit trail broken at row {victim.id}: its MAC does not match its hash under the audit key "
        "(rewritten by someone without the key)"
    )
    assert rows(app)[2].prev_hash == after.prev_hash != rows(app)[1].hash


def test_a_row_deleted_from_the_middle_is_detected_and_the_row_after_it_named(app, runner):
    trail = a_trail(app, runner)
    tamper(app, delete(AUDIT).where(AUDIT.c.id == trail[2].id))
    assert verify(runner, 1) == (
        f"audit trail broken at row {trail[3].id}: its prev_hash is not the hash of row {trail[1].id}: "
        f"a row between them was deleted, or row {trail[1].id}'s hash was rewritten"
    )


def test_deleting_the_first_rows_is_detected(app, runner):
    trail = a_trail(app, runner)
    tamper(app, delete(AUDIT).where(AUDIT.c.id <= trail[1].id))
    assert verify(runner, 1) == (
        f"audit trail broken at row {trail[2].id}: the first row does not start the chain (rows before it were deleted)"
    )


@pytest.mark.parametrize(
    "statement", [update(AUDIT).values(actor="someone-else"), delete(AUDIT)], ids=["update", "delete"]
)
def test_the_database_refuses_to_update_or_delete_audit_rows(app, runner, statement):
    trail = a_trail(app, runner, 2)
    with app.app_context():
        session = db.session()
        with pytest.raises(DBAPIError, match="audit_log is append-only"):
            in_transaction(session, lambda: session.execute(statement))
    assert [(e.id, e.actor, e.hash) for e in rows(app)] == [(e.id, e.actor, e.hash) for e in trail]
    assert verify(runner, 0) == "audit trail intact: 2 rows"


def test_each_row_carries_the_previous_row_s_hash_and_a_hash_of_its_own_fields(app, runner):
    trail = a_trail(app, runner, 4)
    assert trail[0].prev_hash == "0" * 64
    for previous, entry in itertools.pairwise(trail):
        assert entry.prev_hash == previous.hash
    for entry in trail:
        fields = ("prev_hash", "at", "action", "actor_id", "actor", "target", "source_ip", "data")
        assert entry.hash == audit.entry_hash(**{f: getattr(entry, f) for f in fields})
    assert len({e.hash for e in trail}) == 4


def test_the_export_endpoint_is_for_admins_and_returns_the_range_page_by_page(app, client, runner, make_token):
    before = datetime.now(UTC)
    trail = a_trail(app, runner, 3)
    after = datetime.now(UTC)  # the exports below are recorded later, outside this span
    span = {"since": before.isoformat(), "until": after.isoformat()}
    operator = make_token("operator")
    refused = client.get("/api/v1/audit", query_string=span, headers=operator)
    assert (refused.status_code, refused.mimetype) == (403, "application/problem+json")
    admin = make_token("admin", username="auditor")

    first = client.get("/api/v1/audit", query_string={**span, "limit": 2}, headers=admin)
    assert first.status_code == 200, first.json
    assert [e["id"] for e in first.json["items"]] == [trail[0].id, trail[1].id]
    rest = client.get("/api/v1/audit", query_string={**span, "cursor": first.json["next_cursor"]}, headers=admin)
    assert [e["id"] for e in rest.json["items"]] == [trail[2].id]
    assert rest.json["next_cursor"] is None
    item = rest.json["items"][0]
    assert (item["action"], item["target"], item["prev_hash"], item["hash"]) == (
        "token.created", "siem-2", trail[1].hash, trail[2].hash,
    )  # fmt: skip

    empty = client.get("/api/v1/audit", query_string={"since": "2000-01-01T00:00:00Z", "until": span["since"]},
                       headers=admin)  # fmt: skip
    assert empty.json == {"items": [], "next_cursor": None}
    backwards = client.get(
        "/api/v1/audit", query_string={"since": span["until"], "until": span["since"]}, headers=admin
    )
    assert backwards.status_code == 422
    assert backwards.json["errors"] == [{"field": "until", "message": "must be later than since"}]

    exports = [e for e in rows(app) if e.action == "audit.exported"]
    assert [(e.actor, e.data["rows"]) for e in exports] == [("auditor", 2), ("auditor", 1), ("auditor", 0)]
    assert verify(runner, 0) == "audit trail intact: 6 rows"


def test_cli_export_writes_json_lines_of_the_range_and_is_itself_audited(app, runner, tmp_path: Path):
    before = datetime.now(UTC)
    trail = a_trail(app, runner, 3)
    out = tmp_path / "audit.jsonl"
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    cli(runner, "audit", "export", "--since", before.isoformat(), "--until", until, "--output", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["prev_hash"], r["hash"]) for r in lines] == [(e.id, e.prev_hash, e.hash) for e in trail]
    last = rows(app)[-1]
    assert (last.action, last.actor_id, last.data["rows"]) == ("audit.exported", None, 3)
    assert last.actor.startswith("cli")
    assert verify(runner, 0) == "audit trail intact: 4 rows"


def test_reads_of_amber_strict_and_red_data_are_audited_and_other_reads_are_not(app, client, make_token):
    filer = make_token("operator", username="filer")
    amber = client.post(URL, json=incident_payload(tlp="amber"), headers=filer).json
    strict = client.post(URL, json=incident_payload(tlp="amber+strict", title="Nội bộ"), headers=filer).json
    for path in ("", "/events", "/comments"):
        assert client.get(f"{URL}/{amber['id']}{path}", headers=filer).status_code == 200
    assert rows(app) == []

    assert client.get(f"{URL}/{strict['id']}/events", headers=filer).status_code == 200
    comment = {"body": "Nguồn tin mật", "tlp": "red"}
    assert client.post(f"{URL}/{amber['id']}/comments", json=comment, headers=filer).status_code == 201
    assert client.get(f"{URL}/{amber['id']}/comments", headers=filer).status_code == 200
    reads = [(e.action, e.actor, e.target, e.data) for e in rows(app)]
    assert reads == [
        ("read.restricted", "filer", strict["ref"], {"what": "events", "tlp": "amber+strict"}),
        ("read.restricted", "filer", amber["ref"], {"what": "comments", "tlp": "red"}),
    ]


def test_a_flood_of_bad_tokens_writes_one_row_per_address_and_window(app, client):
    for _ in range(20):
        assert client.get(URL, headers={"Authorization": "Bearer ucsc_guess"}).status_code == 401
    other = client.get(URL, headers={"Authorization": "Bearer ucsc_guess"}, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 401
    assert [(e.action, e.source_ip) for e in rows(app)] == [
        ("login.failed", "127.0.0.1"),
        ("login.failed", "192.0.2.7"),
    ]
    assert client.get(URL).status_code == 401, "no token at all is not a failed login"
    assert len(rows(app)) == 2


def test_revoke_token_is_audited_and_the_token_then_fails_as_a_login_failure(app, client, runner):
    headers = token_headers(runner, "scanner", "intake")
    assert client.get(URL, headers=headers).status_code == 200
    assert "1 token(s) named 'scanner' revoked" in cli(runner, "revoke-token", "scanner")
    assert client.get(URL, headers=headers).status_code == 401
    assert "no live token named 'scanner'" in cli(runner, "revoke-token", "scanner", code=1)
    trail = rows(app)
    assert [e.action for e in trail] == ["token.created", "token.revoked", "login.failed"]
    assert trail[1].target == "scanner"
    assert trail[2].data == {"reason": "token revoked or expired"}
    assert verify(runner, 0) == "audit trail intact: 3 rows"


def test_concurrent_appends_keep_one_unbroken_chain(app, runner):
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with app.app_context():
                session = db.session()
                for i in range(10):
                    in_transaction(
                        session, lambda i=i: audit.append(session, action="export", actor=f"w{n}", data={"i": i})
                    )
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert verify(runner, 0) == "audit trail intact: 60 rows"
