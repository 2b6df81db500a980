"""Issue 14, findings 10 and 11: an anchored audit trail, audited restricted reads, expiring e-mail ack links."""

import io
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app import create_app, db
from app.auth import new_token
from incidents import accounts, audit
from incidents.enums import Role
from incidents.models import AuditEntry, User
from playbooks import links
from playbooks.models import Contact, Page
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.receivers import SmtpServer, eventually
from tests.web import make_user, sign_in

URL = "/api/v1/incidents"
AUDIT = AuditEntry.__table__
BASE_URL = "https://ucsc.thanhhoa.gov.vn"
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")


@pytest.fixture
def app_config(tmp_path: Path) -> dict:
    return {"TOKEN_CACHE_SECONDS": 0, "EVIDENCE_DIR": str(tmp_path / "evidence")}


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def cli(runner: FlaskCliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(args=list(args))
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.output.strip()


def rows(app: Flask) -> list[AuditEntry]:
    with app.app_context():
        return list(db.session().scalars(select(AuditEntry).order_by(AuditEntry.id)))


def a_trail(app: Flask, runner: FlaskCliRunner, length: int = 5, prefix: str = "siem") -> list[AuditEntry]:
    for n in range(length):
        cli(runner, "create-token", f"{prefix}-{n}", "--role", "intake")
    return rows(app)


def as_superuser(app: Flask, work) -> None:
    """Change audit_log as someone holding the database's superuser could: append-only triggers off."""
    with app.app_context(), db.engine().begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        else:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        work(conn)


def other_app(app: Flask, **config: object) -> Flask:
    """A second app on the same database and anchor, with other audit keys."""
    return create_app({
        "DATABASE_URL": app.config["DATABASE_URL"], "TESTING": True, "SECRET_KEY": "test",
        "AUDIT_ANCHOR_FILE": app.config["AUDIT_ANCHOR_FILE"], **config,
    })  # fmt: skip


def test_finding_10_rewriting_a_row_and_recomputing_every_later_hash_fails_verify_naming_the_row(app, runner):
    trail = a_trail(app, runner)
    victim = trail[1]
    assert cli(runner, "audit", "verify") == "audit trail intact: 5 rows"

    def rewrite(conn) -> None:
        # The forger recomputes the whole chain from the edited row on, exactly as `verify` computes it.
        prev = victim.prev_hash
        for entry in trail[1:]:
            data = {**entry.data, "role": "admin"} if entry.id == victim.id else entry.data
            fields = {c: getattr(entry, c) for c in ("at", "action", "actor_id", "actor", "target", "source_ip")}
            new_hash = audit.entry_hash(prev_hash=prev, data=data, **fields)
            conn.execute(update(AUDIT).where(AUDIT.c.id == entry.id).values(data=data, prev_hash=prev, hash=new_hash))
            prev = new_hash

    as_superuser(app, rewrite)
    assert rows(app)[1].data["role"] == "admin"
    out = cli(runner, "audit", "verify", code=1)
    assert out.startswith(f"audit trail broken at row {victim.id}: "), out
    assert "audit key" in out


def test_finding_10_deleting_the_tail_after_a_checkpoint_fails_verify(app, runner):
    trail = a_trail(app, runner)
    out = cli(runner, "audit", "checkpoint")
    checkpoint = rows(app)[-1]
    assert checkpoint.action == "audit.checkpoint"
    assert checkpoint.data == {"last_id": trail[-1].id, "last_hash": trail[-1].hash, "count": 5}
    assert out == f"audit checkpoint at row {checkpoint.id} (6 rows), anchored in {app.config['AUDIT_ANCHOR_FILE']}"
    anchor = json.loads(Path(app.config["AUDIT_ANCHOR_FILE"]).read_text())
    assert (anchor["id"], anchor["hash"], anchor["count"]) == (checkpoint.id, checkpoint.hash, 6)
    a_trail(app, runner, 2, prefix="later")
    assert cli(runner, "audit", "verify") == "audit trail intact: 8 rows"

    as_superuser(app, lambda conn: conn.execute(delete(AUDIT).where(AUDIT.c.id >= trail[3].id)))
    assert [e.id for e in rows(app)] == [e.id for e in trail[:3]]
    out = cli(runner, "audit", "verify", code=1)
    assert out.startswith(f"audit trail broken at row {checkpoint.id}: "), out
    assert "deleted" in out


def test_finding_10_an_untouched_chain_verifies_and_a_wrong_key_fails(app, runner):
    trail = a_trail(app, runner, 3)
    cli(runner, "audit", "checkpoint")
    a_trail(app, runner, 2, prefix="later")
    cli(runner, "audit", "checkpoint")  # counted on from the first checkpoint
    assert rows(app)[-1].data["count"] == 6
    assert cli(runner, "audit", "verify") == "audit trail intact: 7 rows"
    assert all(e.mac and e.key_id for e in rows(app))

    wrong = other_app(app, AUDIT_KEY="not-the-key-that-signed-the-trail")
    try:
        out = cli(wrong.test_cli_runner(), "audit", "verify", code=1)
    finally:
        with wrong.app_context():
            db.engine().dispose()
    assert out.startswith(f"audit trail broken at row {trail[0].id}: "), out
    assert "audit key" in out


def test_finding_10_a_rotated_key_verifies_old_rows_with_the_listed_old_key_and_not_without_it(app, runner):
    trail = a_trail(app, runner, 2)
    old_key = app.config["AUDIT_KEY"]
    rotated = other_app(app, AUDIT_KEY="the-new-audit-key", AUDIT_KEYS_OLD=old_key)
    forgetful = other_app(app, AUDIT_KEY="the-new-audit-key")
    try:
        r = rotated.test_cli_runner()
        cli(r, "create-token", "after-rotation", "--role", "intake")
        cli(r, "audit", "checkpoint")
        assert cli(r, "audit", "verify") == "audit trail intact: 4 rows"
        newer = rows(app)[2]
        assert newer.key_id != trail[0].key_id
        # The old key alone does not know the new rows; the new key alone does not know the old ones.
        assert cli(runner, "audit", "verify", code=1).startswith(f"audit trail broken at row {newer.id}: ")
        assert cli(forgetful.test_cli_runner(), "audit", "verify", code=1).startswith(
            f"audit trail broken at row {trail[0].id}: "
        )
        # A process still holding the retired key (leaked, or not restarted) cannot add rows after the rotation.
        cli(runner, "create-token", "with-the-retired-key", "--role", "intake")
        late = rows(app)[-1]
        assert late.key_id == trail[0].key_id
        assert cli(r, "audit", "verify", code=1) == (
            f"audit trail broken at row {late.id}: it is signed by retired audit key {late.key_id} "
            "after rows signed by a newer one"
        )
    finally:
        for other in (rotated, forgetful):
            with other.app_context():
                db.engine().dispose()


def test_finding_10_unsigned_rows_pass_only_as_the_prefix_written_before_audit_keys(app, runner):
    trail = a_trail(app, runner, 3)
    as_superuser(app, lambda conn: conn.execute(update(AUDIT).where(AUDIT.c.id == trail[1].id).values(mac=None)))
    assert cli(runner, "audit", "verify", code=1).startswith(f"audit trail broken at row {trail[1].id}: ")
    # A trail from before the keys (no MAC anywhere) is refused until a signed row (init-db's checkpoint) pins it.
    as_superuser(app, lambda conn: conn.execute(update(AUDIT).values(mac=None, key_id=None)))
    out = cli(runner, "audit", "verify", code=1)
    assert out == f"audit trail broken at row {trail[-1].id}: no row is signed with an audit key"
    cli(runner, "audit", "checkpoint")
    assert cli(runner, "audit", "verify") == "audit trail intact: 4 rows"


def test_finding_10_the_worker_writes_signed_checkpoints_that_detect_a_deleted_tail(app, runner, start_worker):
    trail = a_trail(app, runner, 3)
    anchor = Path(app.config["AUDIT_ANCHOR_FILE"])
    start_worker(env={"UCSC_AUDIT_CHECKPOINT_SECONDS": "1", "UCSC_AUDIT_ANCHOR_FILE": str(anchor)})
    eventually(lambda: anchor.exists() and json.loads(anchor.read_text())["count"] == 4, timeout=30)
    [checkpoint] = [e for e in rows(app) if e.action == "audit.checkpoint"]
    assert checkpoint.data["last_id"] == trail[-1].id and checkpoint.actor == "worker"
    assert cli(runner, "audit", "verify") == "audit trail intact: 4 rows"
    as_superuser(app, lambda conn: conn.execute(delete(AUDIT).where(AUDIT.c.id > trail[1].id)))
    assert cli(runner, "audit", "verify", code=1).startswith(f"audit trail broken at row {checkpoint.id}: ")


def _reads(app: Flask, since: int) -> list[tuple[str, dict]]:
    return [(e.actor, e.data) for e in rows(app) if e.id > since and e.action == "read.restricted"]


def _last_id(app: Flask) -> int:
    trail = rows(app)
    return trail[-1].id if trail else 0


def test_finding_10_restricted_list_participant_and_evidence_reads_are_audited_once_per_request(
    app: Flask, client: FlaskClient, make_token: TokenFactory
):
    filer = make_token("operator", username="filer")
    red = client.post(URL, json=incident_payload(tlp="red", title="Đỏ"), headers=filer).json
    strict = client.post(URL, json=incident_payload(tlp="amber+strict", title="Nội bộ"), headers=filer).json
    amber = client.post(URL, json=incident_payload(tlp="amber"), headers=filer).json
    evidence = {"file": (io.BytesIO(b"log line\n"), "auth.log"), "kind": "log"}
    r = client.post(f"{URL}/{strict['id']}/evidence", data=evidence, headers=filer, content_type="multipart/form-data")
    assert r.status_code == 201, r.json

    start = _last_id(app)
    assert client.get(URL, query_string={"tlp": "amber"}, headers=filer).status_code == 200
    assert client.get(f"{URL}/{amber['id']}/participants", headers=filer).status_code == 200
    assert client.get(f"{URL}/{amber['id']}/evidence", headers=filer).status_code == 200
    assert _reads(app, start) == []

    listed = client.get(URL, query_string={"tlp": "red"}, headers=filer)
    assert [i["id"] for i in listed.json["items"]] == [red["id"]]
    assert _reads(app, start) == [
        ("filer", {"what": "incidents", "tlp": "red", "incidents": [red["id"]], "refs": [red["ref"]]}),
    ]
    start = _last_id(app)
    everything = client.get(URL, query_string={"sort": "created"}, headers=filer)
    assert len(everything.json["items"]) == 3
    assert _reads(app, start) == [
        ("filer", {"what": "incidents", "tlp": "red", "incidents": [red["id"], strict["id"]],
                   "refs": [red["ref"], strict["ref"]]}),
    ]  # fmt: skip
    start = _last_id(app)
    assert client.get(f"{URL}/{red['id']}/participants", headers=filer).status_code == 200
    assert client.get(f"{URL}/{strict['id']}/evidence", headers=filer).status_code == 200
    assert [(e.target, e.data) for e in rows(app) if e.id > start] == [
        (red["ref"], {"what": "participants", "tlp": "red"}),
        (strict["ref"], {"what": "evidence", "tlp": "amber+strict"}),
    ]


def test_finding_10_the_web_incident_page_of_a_restricted_incident_is_audited(app: Flask, client: FlaskClient):
    make_user(app, "hoa", "operator")
    raw, digest = new_token()
    with app.app_context():
        s = db.session()
        with s.begin():
            accounts.create_token(session=s, name="t-hoa", role=Role.OPERATOR, digest=digest, user="hoa")
    headers = {"Authorization": f"Bearer {raw}"}
    red = client.post(URL, json=incident_payload(tlp="red"), headers=headers).json
    amber = client.post(URL, json=incident_payload(tlp="amber"), headers=headers).json
    assert sign_in(client, "hoa").status_code == 302
    start = _last_id(app)
    assert client.get(f"/incidents/{amber['ref']}").status_code == 200
    assert _reads(app, start) == []
    page = client.get(f"/incidents/{red['ref']}")
    assert page.status_code == 200
    assert [(e.actor, e.target, e.data) for e in rows(app) if e.id > start] == [
        ("hoa", red["ref"], {"what": "web:incident", "tlp": "red"}),
    ]


@pytest.fixture
def smtp(app_config: dict) -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    app_config.update(SMTP_URL=server.url, MAIL_FROM="ucsc@thanhhoa.gov.vn", BASE_URL=BASE_URL)
    yield server
    server.close()


def _paged_by_email(app: Flask, client: FlaskClient, make_token: TokenFactory, dbs: Session) -> tuple[Page, int]:
    operator = make_token("operator", username="op1")
    contact_id = paging.add_contact(
        app, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn", channels=["email"]
    )
    make_token("responder", organisation="dic", username="lan")
    with app.app_context():
        s = db.session()
        with s.begin():
            s.get(Contact, contact_id).user_id = s.scalar(select(User.id).where(User.username == "lan"))
    paging.load_shipped(app, demo=False)
    incident_id = client.post(URL, json=incident_payload(category="other"), headers=operator).json["id"]
    paging.run_jobs(app)
    [page] = paging.pages(dbs, incident_id)
    paging.run_jobs(app, ("page.deliver",), send=True)
    return page, contact_id


def _link(mail_text: str) -> str:
    return re.search(rf"{re.escape(BASE_URL)}(/ack/\S+)", mail_text).group(1)


def test_finding_11_the_email_states_until_when_its_ack_link_works_by_default_seven_days(
    smtp: SmtpServer, app: Flask, client: FlaskClient, make_token: TokenFactory, dbs: Session
):
    before = datetime.now(UTC)
    _paged_by_email(app, client, make_token, dbs)
    [mail] = smtp.wait_for(1)
    after = datetime.now(UTC)
    stated = re.search(r"đến (\d\d:\d\d \d\d/\d\d/\d{4})", mail.text)
    assert stated, mail.text
    until = datetime.strptime(stated.group(1), "%H:%M %d/%m/%Y").replace(tzinfo=LOCAL)
    assert before + timedelta(days=7) - timedelta(minutes=1) <= until <= after + timedelta(days=7)
    found = links.read_ack_token(app.config["SECRET_KEY"], _link(mail.text).rsplit("/", 1)[1])
    assert found is not None
    link_end = found[2]
    assert until <= link_end < until + timedelta(minutes=1), "the e-mail never states more time than the link has"
    assert "until" in mail.text  # the English line says it too
    r = client.get(_link(mail.text))
    assert r.status_code == 200 and 'data-state="open"' in r.text and stated.group(1) in r.text


@pytest.fixture
def one_second_links(app_config: dict) -> None:
    app_config["ACK_LINK_TTL_HOURS"] = 1 / 3600


def test_finding_11_an_expired_email_ack_link_shows_an_expiry_page_and_acknowledges_nothing(
    smtp: SmtpServer, one_second_links: None, app: Flask, client: FlaskClient, make_token: TokenFactory, dbs: Session
):
    page, _ = _paged_by_email(app, client, make_token, dbs)
    [mail] = smtp.wait_for(1)
    link = _link(mail.text)
    time.sleep(2.1)
    for response in (client.get(link), client.post(link, data={"note": "muộn"})):
        assert response.status_code == 410
        assert "hết hạn" in response.text and "expired" in response.text
        assert "<form" not in response.text
    dbs.rollback()
    assert dbs.get(Page, page.id).state == "open"
    assert paging.events(dbs, "page.acknowledged") == []
    refused = [e for e in rows(app) if e.action == "ack.refused"]
    assert [(e.target, e.data["reason"]) for e in refused] == [(f"page:{page.id}", "link expired")]
