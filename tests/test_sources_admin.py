"""Alert sources as data, the silence watch, and maintenance windows (API, worker, audit)."""

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from app import db, source_watch
from app.auth import TOKEN_PREFIX
from incidents.clock import LOCAL_TZ
from incidents.models import AuditEntry, Event, Incident, Occurrence
from incidents.sources.models import Source
from playbooks.models import Page, PlaybookRun
from tests.test_sources_intake import wazuh
from tests.web import csrf, make_user, sign_in, text_of

API = "/api/v1"
PROBLEM = "application/problem+json"


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_source(client, headers, **fields) -> dict:
    response = client.post(f"{API}/sources", json={"kind": "wazuh", "name": "Wazuh SOC", **fields}, headers=headers)
    assert response.status_code == 201, response.json
    return response.json


def audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session().scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_admin_and_operator_register_list_and_change_sources_with_todays_counts(app, client, make_token) -> None:
    operator, admin = make_token("operator"), make_token("admin")
    made = new_source(client, operator, expected_interval_seconds=600, mapping={"fallback": {"priority": "P3"}})
    token = made["token"]["value"]
    assert made["token"]["name"] == "source:Wazuh SOC" and token.startswith(TOKEN_PREFIX)
    assert made["last_seen_at"] is None and made["silent_since"] is None
    for alert_id in ("1.1", "1.2"):  # the same rule on the same agent: one incident, two occurrences
        assert client.post(f"{API}/sources/wazuh", json=wazuh(alert_id), headers=bearer(token)).status_code in (
            200,
            201,
        )
    client.post(f"{API}/sources/wazuh", json=wazuh("1.2"), headers=bearer(token))  # a retry: no third occurrence

    listed = client.get(f"{API}/sources", headers=admin).json["items"]
    (shown,) = [s for s in listed if s["id"] == made["id"]]
    assert "value" not in shown["token"] and token not in str(listed)
    assert shown["today"] == {"occurrences": 2, "suppressed": 0, "incidents_opened": 1}
    assert shown["last_seen_at"] is not None and shown["kind"] == "wazuh"

    changed = client.patch(f"{API}/sources/{made['id']}", json={"expected_interval_seconds": None, "active": False},
                           headers=admin)  # fmt: skip
    assert changed.status_code == 200 and changed.json["expected_interval_seconds"] is None
    assert client.get(f"{API}/sources/{made['id']}", headers=operator).json["active"] is False
    # Switched off: its token files nothing more.
    assert client.post(f"{API}/sources/wazuh", json=wazuh("1.3"), headers=bearer(token)).status_code == 403
    assert client.get(f"{API}/sources/{made['id'] + 1000}", headers=admin).status_code == 404
    actions = audit_actions(app)
    assert actions.count("source.created") == 1 and actions.count("source.changed") == 1
    assert "token.created" in actions


def test_bad_source_input_is_a_problem_naming_the_field(client, make_token) -> None:
    operator = make_token("operator")
    bad = client.post(f"{API}/sources", json={"kind": "wazuh", "name": "x", "expected_interval_seconds": 5,
                                              "mapping": {"nonsense": {}}}, headers=operator)  # fmt: skip
    assert bad.status_code == 422 and bad.mimetype == PROBLEM
    assert {e["field"] for e in bad.json["errors"]} == {"expected_interval_seconds"}
    bad = client.post(f"{API}/sources", json={"kind": "wazuh", "name": "x", "mapping": {"nonsense": {}}},
                      headers=operator)  # fmt: skip
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "mapping.nonsense"
    new_source(client, operator, kind="mailbox", name="Hộp thư TBSC")
    again = client.post(f"{API}/sources", json={"kind": "splunk", "name": "Hộp thư TBSC"}, headers=operator)
    assert again.status_code == 409 and again.json["errors"][0]["field"] == "name"


@pytest.mark.parametrize("role", ["responder", "committee", "intake"])
def test_only_the_standing_body_manages_sources_and_windows(client, make_token, role) -> None:
    operator, caller = make_token("operator"), make_token(role)
    made = new_source(client, operator)
    window = client.post(f"{API}/sources/windows", headers=operator, json={
        "source_id": made["id"], "ends_at": later(hours=1), "reason": "r", "approved_by": "a"}).json  # fmt: skip
    tries = [
        ("GET", "/sources", None), ("POST", "/sources", {"kind": "splunk", "name": "s"}),
        ("GET", f"/sources/{made['id']}", None), ("PATCH", f"/sources/{made['id']}", {"active": False}),
        ("GET", "/sources/windows", None), ("DELETE", f"/sources/windows/{window['id']}", None),
        ("POST", "/sources/windows", {"source_id": made["id"], "ends_at": later(hours=1), "reason": "r",
                                      "approved_by": "a"}),
    ]  # fmt: skip
    for method, path, body in tries:
        response = client.open(f"{API}{path}", method=method, json=body, headers=caller)
        assert response.status_code == 403, (method, path, response.status_code)
    assert client.get(f"{API}/sources/windows", headers=operator).json["items"][0]["cancelled_at"] is None


def test_window_suppresses_matching_alerts_without_paging_and_is_audited(app, client, make_token) -> None:
    operator = make_token("operator")
    made = new_source(client, operator)
    token = bearer(made["token"]["value"])
    window = client.post(f"{API}/sources/windows", headers=operator, json={
        "dedup_pattern": "wazuh:31106:*", "ends_at": later(hours=2), "reason": "Nâng cấp WAF",
        "approved_by": "Phó Giám đốc Sở"})  # fmt: skip
    assert window.status_code == 201 and window.json["active"] is True

    held = client.post(f"{API}/sources/wazuh", json=wazuh("2.1"), headers=token)
    assert held.status_code == 201 and held.json["suppressed"] is True
    other = client.post(f"{API}/sources/wazuh", json=wazuh("2.2", id="5712"), headers=token)
    assert other.status_code == 201 and other.json["suppressed"] is False
    with app.app_context():
        s = db.session()
        (occurrence,) = s.scalars(select(Occurrence).where(Occurrence.incident_id == held.json["id"]))
        assert occurrence.suppressed is True and occurrence.source_id == made["id"]
        for model in (Page, PlaybookRun):  # a suppressed first alert opens its incident and starts nothing
            assert s.scalar(select(func.count()).select_from(model).where(model.incident_id == held.json["id"])) == 0
        kinds = s.scalars(select(Event.kind).where(Event.incident_id == held.json["id"]))
        assert "source.suppressed" in list(kinds)

    cancelled = client.delete(f"{API}/sources/windows/{window.json['id']}", headers=operator)
    assert cancelled.status_code == 200 and cancelled.json["cancelled_at"] is not None
    assert client.delete(f"{API}/sources/windows/{window.json['id']}", headers=operator).status_code == 200
    after = client.post(f"{API}/sources/wazuh", json=wazuh("2.3"), headers=token)
    assert after.status_code == 200 and after.json["suppressed"] is False  # grouped, and no longer held
    assert client.get(f"{API}/sources/windows", headers=operator).json["items"] == []
    assert client.get(f"{API}/sources/windows?all=true", headers=operator).json["items"][0]["reason"] == "Nâng cấp WAF"
    today = client.get(f"{API}/sources/{made['id']}", headers=operator).json["today"]
    assert today == {"occurrences": 3, "suppressed": 1, "incidents_opened": 2}
    assert [a for a in audit_actions(app) if a.startswith("window.")] == ["window.created", "window.cancelled"]


def test_window_over_its_maximum_length_or_unbounded_is_422(client, make_token) -> None:
    operator = make_token("operator")
    made = new_source(client, operator)
    base = {"source_id": made["id"], "reason": "r", "approved_by": "a"}
    cases = [
        ({**base, "ends_at": later(days=8)}, "ends_at"),
        ({**base, "starts_at": later(hours=2), "ends_at": later(hours=1)}, "ends_at"),
        ({"reason": "r", "approved_by": "a", "ends_at": later(hours=1)}, "source_id"),
        ({**base, "ends_at": later(hours=1), "approved_by": ""}, "approved_by"),
        ({**base, "source_id": made["id"] + 1000, "ends_at": later(hours=1)}, "source_id"),
        ({k: v for k, v in base.items() if k != "reason"} | {"ends_at": later(hours=1)}, "reason"),
    ]
    for body, field in cases:
        response = client.post(f"{API}/sources/windows", json=body, headers=operator)
        assert response.status_code == 422 and response.mimetype == PROBLEM, (body, response.json)
        assert field in {e["field"] for e in response.json["errors"]}, (body, response.json)
    ok = client.post(f"{API}/sources/windows", json={**base, "ends_at": later(days=6, hours=23)}, headers=operator)
    assert ok.status_code == 201


def test_silent_source_is_recorded_and_pages_once_then_its_return_is_recorded(app, client, make_token) -> None:
    operator = make_token("operator")
    made = new_source(client, operator, expected_interval_seconds=300)
    token = bearer(made["token"]["value"])
    assert client.post(f"{API}/sources/wazuh", json=wazuh("3.1"), headers=token).status_code == 201
    sessions = app.extensions["ucsc.sessionmaker"]
    now = datetime.now(UTC) + timedelta(minutes=4)
    assert source_watch.check_once(sessions, app.config, now) == []  # within its interval
    now += timedelta(minutes=2)
    found: list[list[int]] = []
    racers = [threading.Thread(target=lambda: found.append(source_watch.check_once(sessions, app.config, now)))
              for _ in range(3)]  # fmt: skip
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert sorted(found) == [[], [], [made["id"]]]  # several workers: one records it
    assert source_watch.check_once(sessions, app.config, now + timedelta(minutes=30)) == []  # still the same silence
    with app.app_context():
        s = db.session()
        source = s.get_one(Source, made["id"])
        assert source.silent_since is not None
        (page,) = s.scalars(select(Page).where(Page.key.like("source-silent:%")))
        assert page.target == "dic" and "Wazuh SOC" in page.reason_vi
        incident = s.get_one(Incident, page.incident_id)
        assert s.scalars(
            select(Event.kind).where(Event.incident_id == incident.id, Event.kind == "source.silent")
        ).all()
        assert (
            s.scalar(select(func.count()).select_from(PlaybookRun).where(PlaybookRun.incident_id == incident.id)) == 0
        )

    assert client.post(f"{API}/sources/wazuh", json=wazuh("3.2"), headers=token).status_code == 200
    shown = client.get(f"{API}/sources/{made['id']}", headers=operator).json
    assert shown["silent_since"] is None
    with app.app_context():
        returned = db.session().scalars(select(Event).where(Event.kind == "source.returned")).all()
        assert [e.data["source_id"] for e in returned] == [made["id"]]


def test_the_worker_watches_for_silence(app, client, make_token, start_worker) -> None:
    operator = make_token("operator")
    made = new_source(client, operator, expected_interval_seconds=60)
    with app.app_context():
        s = db.session()
        with s.begin():
            s.execute(update(Source).where(Source.id == made["id"])
                      .values(created_at=datetime.now(UTC) - timedelta(minutes=5)))  # fmt: skip
    start_worker({"UCSC_SOURCE_WATCH_SECONDS": "0.3"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.get(f"{API}/sources/{made['id']}", headers=operator).json["silent_since"]:
            break
        time.sleep(0.2)
    with app.app_context():
        pages = db.session().scalars(select(Page).where(Page.key.like(f"source-silent:{made['id']}:%"))).all()
    assert len(pages) == 1


def test_sources_page_registers_a_source_shows_its_token_once_and_opens_a_window_the_board_shows(app, client) -> None:
    make_user(app, "soc", "operator")
    make_user(app, "uyvien", "committee")
    sign_in(client, "soc")
    page = client.get("/sources")
    assert page.status_code == 200 and "Nguồn cảnh báo" in text_of(page.text)
    made = client.post("/sources", data={"csrf_token": csrf(page.text), "kind": "wazuh", "name": "Wazuh tỉnh",
                                         "interval_minutes": "15"})  # fmt: skip
    assert made.status_code == 201
    token = re.search(r'<code class="token">([^<]+)</code>', made.text).group(1)
    assert token.startswith(TOKEN_PREFIX)
    again = client.get("/sources")
    assert token not in again.text and "Wazuh tỉnh" in again.text and "source:Wazuh tỉnh" in again.text
    with app.app_context():
        source_id = db.session().scalar(select(Source.id).where(Source.name == "Wazuh tỉnh"))
    ends = (datetime.now(LOCAL_TZ) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    too_long = (datetime.now(LOCAL_TZ) + timedelta(days=9)).strftime("%Y-%m-%dT%H:%M")
    form = {"csrf_token": csrf(again.text), "source_id": str(source_id), "reason": "Nâng cấp máy chủ Wazuh",
            "approved_by": "Trưởng phòng ATTT"}  # fmt: skip
    refused = client.post("/sources/windows", data={**form, "ends_at": too_long})
    assert refused.status_code == 422 and "168" in refused.text
    opened = client.post("/sources/windows", data={**form, "ends_at": ends})
    assert opened.status_code == 302
    assert "Nâng cấp máy chủ Wazuh" in client.get("/sources").text

    committee = app.test_client()
    sign_in(committee, "uyvien")
    assert committee.get("/sources").status_code == 403
    board = text_of(committee.get("/board").text)
    assert "Khung bảo trì đang hiệu lực" in board and "Nâng cấp máy chủ Wazuh" in board and "Wazuh tỉnh" in board
