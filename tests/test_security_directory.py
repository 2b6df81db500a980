"""The directory's personal data by role, intake's narrow rights, and paging use cases bound by visibility."""

from datetime import UTC, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from playbooks.models import Page
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.web import make_user, sign_in, text_of

API = "/api/v1"
PHONE, EMAIL, CHAT = "0912 345 678", "hoa@dic.example.vn", "777001"
PERSONAL = ("phone", "email", "telegram_chat_id", "webhook_url")


def _directory(client: FlaskClient, operator: dict[str, str], own_user: str) -> dict[str, int]:
    """Two contacts of the standing body (one of them the reader's own), on a rotation with a leave override."""
    hoa = client.post(f"{API}/contacts", headers=operator, json={
        "organisation": "dic", "name": "Phạm Thị Hoa", "title": "Trực ban", "phone": PHONE, "email": EMAIL,
        "telegram_chat_id": CHAT, "webhook_url": "https://hooks.example.vn/hoa", "roles": ["duty"],
    })  # fmt: skip
    assert hoa.status_code == 201, hoa.json
    own = client.post(f"{API}/contacts", headers=operator, json={
        "organisation": "dic", "name": "Chính tôi", "phone": "0988 000 111", "email": "me@dic.example.vn",
        "user": own_user,
    })  # fmt: skip
    assert own.status_code == 201, own.json
    start = datetime.now(UTC) - timedelta(hours=1)
    schedule = client.post(f"{API}/schedules", headers=operator, json={
        "code": "dic-duty", "name": "Trực DIC", "organisation": "dic", "starts_at": start.isoformat(),
        "shift_hours": 168, "members": [hoa.json["id"], own.json["id"]],
    })  # fmt: skip
    assert schedule.status_code == 201, schedule.json
    override = client.post(f"{API}/schedules/dic-duty/overrides", headers=operator, json={
        "contact_id": own.json["id"], "starts_at": (start + timedelta(days=2)).isoformat(),
        "ends_at": (start + timedelta(days=3)).isoformat(), "reason": "nghỉ ốm",
    })  # fmt: skip
    assert override.status_code == 201, override.json
    group = client.post(f"{API}/groups", headers=operator, json={
        "code": "dic-team", "name_vi": "Tổ DIC", "organisation": "dic", "members": [hoa.json["id"]],
    })  # fmt: skip
    assert group.status_code == 201, group.json
    return {"hoa": hoa.json["id"], "own": own.json["id"]}


def test_finding_4_directory_reads_follow_one_role_table_on_the_api(
    client: FlaskClient, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    readers = {
        role: make_token(role, organisation="dic", username=f"{role}-reader")
        for role in ("responder", "committee", "intake")
    }
    admin = make_token("admin", organisation="dic")
    ids = _directory(client, operator, own_user="responder-reader")
    reads = [
        "/contacts",
        f"/contacts/{ids['hoa']}",
        "/on-call?organisation=dic",
        "/on-call?group=dic-team",
        "/schedules",
        "/groups",
        "/contacts.csv",
        f"/contacts/{ids['hoa']}/personal-data",
    ]
    # Intake clients file and read back their own incidents: nothing of the directory.
    for path in reads:
        r = client.get(API + path, headers=readers["intake"])
        assert r.status_code == 403 and r.mimetype == "application/problem+json", (path, r.status_code)

    # Responders and committee members see who people are and who is on call, never how to reach them...
    for role in ("responder", "committee"):
        headers = readers[role]
        listed = client.get(f"{API}/contacts", headers=headers)
        assert listed.status_code == 200
        hoa = next(c for c in listed.json["items"] if c["id"] == ids["hoa"])
        assert (hoa["name"], hoa["organisation"], hoa["title"], hoa["roles"]) == ("Phạm Thị Hoa", "dic", "Trực ban",
                                                                                  ["duty"])  # fmt: skip
        assert all(hoa[f] is None for f in PERSONAL), hoa
        one = client.get(f"{API}/contacts/{ids['hoa']}", headers=headers)
        assert one.status_code == 200 and all(one.json[f] is None for f in PERSONAL), one.json
        on_call = client.get(f"{API}/on-call?organisation=dic", headers=headers)
        assert on_call.status_code == 200 and "Phạm Thị Hoa" in [c["name"] for c in on_call.json["items"]]
        assert all(c[f] is None for c in on_call.json["items"] if c["id"] == ids["hoa"] for f in PERSONAL)
        schedules = client.get(f"{API}/schedules", headers=headers)
        [duty] = [s for s in schedules.json["items"] if s["code"] == "dic-duty"]
        assert duty["on_call_now"] == ids["hoa"] and [o["reason"] for o in duty["overrides"]] == [None]
        assert client.get(f"{API}/groups", headers=headers).json["items"][0]["members"] == [ids["hoa"]]
        body = " ".join(r.get_data(as_text=True) for r in (listed, one, on_call, schedules))
        assert PHONE not in body and EMAIL not in body and CHAT not in body and "nghỉ ốm" not in body
        for path in ("/contacts.csv", f"/contacts/{ids['hoa']}/personal-data"):
            assert client.get(API + path, headers=headers).status_code == 403, (role, path)
        # Refused for the role before anything about this server's Telegram set-up is said.
        assert client.post(f"{API}/contacts/{ids['hoa']}/telegram-link", headers=headers).status_code == 403
    # ... except their own entry, so they can check and confirm it.
    own = client.get(f"{API}/contacts/{ids['own']}", headers=readers["responder"]).json
    assert (own["phone"], own["email"]) == ("0988 000 111", "me@dic.example.vn")
    assert client.get(f"{API}/contacts/{ids['own']}", headers=readers["committee"]).json["phone"] is None

    # Operators and admins run the directory and see all of it.
    for headers in (operator, admin):
        one = client.get(f"{API}/contacts/{ids['hoa']}", headers=headers).json
        assert (one["phone"], one["email"], one["telegram_chat_id"]) == (PHONE, EMAIL, CHAT)
        duty = next(s for s in client.get(f"{API}/schedules", headers=headers).json["items"] if s["code"] == "dic-duty")
        assert [o["reason"] for o in duty["overrides"]] == ["nghỉ ốm"]


def test_finding_4_the_web_directory_follows_the_same_table(
    app: Flask, client: FlaskClient, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    for name, role in (("web-op", "operator"), ("web-resp", "responder"), ("web-board", "committee")):
        make_user(app, name, role, "dic")
    ids = _directory(client, operator, own_user="web-resp")
    seen = {}
    for name in ("web-op", "web-resp", "web-board"):
        web = app.test_client()
        assert sign_in(web, name).status_code == 302
        page = web.get("/directory")
        assert page.status_code == 200
        seen[name] = text_of(page.text)
    assert PHONE in seen["web-op"] and EMAIL in seen["web-op"]
    for name in ("web-resp", "web-board"):
        # Names and who a page reaches now, as on the API; no phone, e-mail or Telegram of anybody else.
        assert "Phạm Thị Hoa" in seen[name] and "Trực ban" in seen[name]
        assert PHONE not in seen[name] and EMAIL not in seen[name], name
        assert "Telegram link" not in seen[name] and "Liên kết Telegram" not in seen[name]
    assert "0988 000 111" in seen["web-resp"] and "0988 000 111" not in seen["web-board"]
    assert ids["hoa"]


def test_finding_4_intake_files_and_reads_its_own_incidents_but_may_not_comment(
    client: FlaskClient, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    intake = make_token("intake", organisation="dic", username="siem")
    filed = client.post(f"{API}/incidents", json=incident_payload(), headers=intake)
    assert filed.status_code == 201
    incident_id = filed.json["id"]
    assert client.get(f"{API}/incidents/{incident_id}", headers=intake).status_code == 200
    r = client.post(f"{API}/incidents/{incident_id}/comments", json={"body": "từ SIEM"}, headers=intake)
    assert r.status_code == 403 and r.mimetype == "application/problem+json", r.get_data(as_text=True)
    comments = client.get(f"{API}/incidents/{incident_id}/comments", headers=operator).json["items"]
    assert comments == []
    # Nor does it read the response around its incident: the discussion, who takes part, evidence, reports, who was
    # paged, tasks, runs, metrics, the playbooks, nor the registry of organisations and systems.
    for path in (f"/incidents/{incident_id}/comments", f"/incidents/{incident_id}/participants",
                 f"/incidents/{incident_id}/evidence", f"/incidents/{incident_id}/reports", "/metrics",
                 "/pages", f"/pages?incident={incident_id}", "/tasks", "/direction-requests",
                 f"/incidents/{incident_id}/runs", "/playbooks", "/playbooks/ddos/versions", "/organisations",
                 "/systems", "/systems/cong-dvc"):  # fmt: skip
        r = client.get(API + path, headers=intake)
        assert r.status_code == 403 and r.mimetype == "application/problem+json", (path, r.status_code)
    assert client.get(f"{API}/pages?incident={incident_id}", headers=operator).status_code == 200
    assert client.get(f"{API}/incidents/{incident_id}/runs", headers=operator).status_code == 200
    assert client.post(f"{API}/incidents/{incident_id}/comments", json={"body": "đã nhận"},
                       headers=operator).status_code == 201  # fmt: skip


def test_finding_5_paging_use_cases_answer_404_on_an_incident_the_caller_may_not_see(
    app: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    paging.load_shipped(app, demo=False)
    binh = {"organisation": "dic", "name": "Ngô Văn Bình", "email": "binh@dic.example.vn"}
    contact = client.post(f"{API}/contacts", headers=operator, json=binh)
    assert contact.status_code == 201
    red = client.post(f"{API}/incidents", json=incident_payload(tlp="red", category="other"), headers=operator)
    assert red.status_code == 201
    incident_id = red.json["id"]
    page = client.post(f"{API}/incidents/{incident_id}/pages", json={"contact": contact.json["id"]}, headers=operator)
    assert page.status_code == 201, page.json
    page_id = page.json["id"]

    # Another operator of the same body, not named on the red incident: it does not exist for them.
    outsider = make_token("operator", organisation="dic", username="op-unnamed")
    missing = client.get(f"{API}/incidents/{incident_id}", headers=outsider)
    assert missing.status_code == 404
    before = dbs.scalar(select(func.count()).select_from(Page))
    attempts = {
        "support": client.post(f"{API}/pages/{page_id}/support-requests", json={"note": "cần hỗ trợ"},
                               headers=outsider),
        "ack": client.post(f"{API}/pages/{page_id}/acks", json={"note": "thay mặt"}, headers=outsider),
        "page": client.get(f"{API}/pages/{page_id}", headers=outsider),
        "repage": client.post(f"{API}/incidents/{incident_id}/pages", json={"contact": contact.json["id"]},
                              headers=outsider),
        "runs": client.get(f"{API}/incidents/{incident_id}/runs", headers=outsider),
        "start": client.post(f"{API}/incidents/{incident_id}/runs", json={"playbook": "ddos"}, headers=outsider),
        "direction": client.post(f"{API}/incidents/{incident_id}/direction-requests", json={"question_vi": "?"},
                                 headers=outsider),
    }  # fmt: skip
    for name, r in attempts.items():
        assert r.status_code == 404 and r.mimetype == "application/problem+json", (name, r.status_code)
    assert client.get(f"{API}/pages?incident={incident_id}", headers=outsider).json["items"] == []
    dbs.rollback()
    assert dbs.scalar(select(func.count()).select_from(Page)) == before
    assert dbs.get(Page, page_id).state == "open"
    ghost = client.post(f"{API}/pages/999999/support-requests", json={"note": "x"}, headers=outsider)
    assert ghost.status_code == 404 and ghost.json["title"] == attempts["support"].json["title"]

    # A run on the red incident is as missing as a run that never was, and stays running.
    paging.run_jobs(app)  # the worker starts the filing's playbooks
    [run] = client.get(f"{API}/incidents/{incident_id}/runs", headers=operator).json["items"]
    stop = client.delete(f"{API}/runs/{run['id']}", headers=outsider)
    assert stop.status_code == 404 and stop.json["detail"] == f"no run {run['id']}", stop.json
    assert client.delete(f"{API}/runs/999999", headers=outsider).json["detail"] == "no run 999999"
    assert client.get(f"{API}/incidents/{incident_id}/runs", headers=operator).json["items"][0]["state"] != "stopped"

    # The named operator still asks for support on the same page.
    support = client.post(f"{API}/pages/{page_id}/support-requests", json={"note": "cần hỗ trợ"}, headers=operator)
    assert support.status_code == 201, support.json
    assert support.json["incident_id"] == incident_id and support.json["escalation"] is True
