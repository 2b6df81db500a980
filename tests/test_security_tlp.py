"""TLP history and dedup visibility: what was red stays red after a lowering, and dedup never crosses visibility."""

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from incidents.models import Event, Occurrence, User
from incidents.records import Report
from tests.conftest import TokenFactory, incident_payload
from tests.live import LiveServer
from tests.sockets import LiveClient
from tests.test_intake import parallel
from tests.test_migrations import _alembic, empty_engine  # noqa: F401  (the fixture: a database with no tables)
from tests.web import make_user, sign_in, text_of

URL = "/api/v1/incidents"
TIMEOUT = 10.0
RED_TEXT = "Khóa VPN lộ: vpn-admin/Mk2026"
RED_NOTE = "Nguồn tin từ đơn vị A05"
Headers = dict[str, str]


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, Any]:
    return {"EVIDENCE_DIR": str(tmp_path / "evidence")}


def file(client: FlaskClient, headers: Headers, **overrides: object) -> dict[str, Any]:
    r = client.post(URL, json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def lowered_red_incident(client: FlaskClient, filer: Headers, **overrides: object) -> dict[str, Any]:
    """A red incident with red-era text in its description and a transition note, then sanitised to amber."""
    incident = file(client, filer, tlp="red", description=RED_TEXT, **overrides)
    r = client.post(f"{URL}/{incident['id']}/transitions", json={"to": "triage", "note": RED_NOTE}, headers=filer)
    assert r.status_code == 200, r.json
    r = client.patch(f"{URL}/{incident['id']}", json={"description": "sanitised", "tlp": "amber"}, headers=filer)
    assert r.status_code == 200, r.json
    return incident


def test_finding_2_a_lowered_incident_keeps_its_red_era_timeline_from_amber_readers(
    app: Flask, client: FlaskClient, make_token: TokenFactory
) -> None:
    filer = make_token("operator", "dic", username="filer")
    colleague = make_token("operator", "dic", username="colleague")
    incident = lowered_red_incident(client, filer)
    url = f"{URL}/{incident['id']}"
    assert client.get(url, headers=colleague).json["description"] == "sanitised"

    theirs = client.get(f"{url}/events", query_string={"limit": 500}, headers=colleague)
    assert theirs.status_code == 200
    text = json.dumps(theirs.json, ensure_ascii=False)
    assert RED_TEXT not in text and RED_NOTE not in text, text
    mine = json.dumps(client.get(f"{url}/events", query_string={"limit": 500}, headers=filer).json, ensure_ascii=False)
    assert RED_TEXT in mine and RED_NOTE in mine, "named participants keep the whole timeline"
    change = [e for e in client.get(f"{url}/events", headers=filer).json["items"] if e["kind"] == "incident.updated"]
    assert change[0]["data"]["changes"]["tlp"] == ["red", "amber"]

    # Later amber-era events reach the amber reader as before.
    r = client.post(f"{url}/transitions", json={"to": "first_response", "note": "đã xác minh"}, headers=filer)
    assert r.status_code == 200
    kinds = [e["kind"] for e in client.get(f"{url}/events", headers=colleague).json["items"]]
    assert kinds == ["incident.status_changed"]

    make_user(app, "reader", role="operator")
    sign_in(client, "reader")
    page = text_of(client.get(f"/incidents/{incident['ref']}").text)
    assert "đã xác minh" in page
    assert RED_TEXT not in page and RED_NOTE not in page

    bundle = client.get(f"{url}/stix", headers=colleague)
    assert bundle.status_code == 200
    assert RED_TEXT not in bundle.text and RED_NOTE not in bundle.text


def test_finding_2_comment_edits_keep_the_tlp_they_were_written_under(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    filer = make_token("operator", "dic", username="filer")
    colleague = make_token("operator", "dic", username="colleague")
    incident = file(client, filer, tlp="amber")
    url = f"{URL}/{incident['id']}/comments"
    created = client.post(url, json={"body": RED_TEXT, "tlp": "red"}, headers=filer)
    assert created.status_code == 201
    cid = created.json["id"]
    assert (
        client.patch(f"{url}/{cid}", json={"body": "đã thu hồi khóa", "tlp": "amber"}, headers=filer).status_code == 200
    )

    theirs = client.get(url, headers=colleague).json["items"]
    assert [(c["body"], c["tlp"]) for c in theirs] == [("đã thu hồi khóa", "amber")]
    assert theirs[0]["edits"] == [], "the red-era body is not theirs to read"
    mine = client.get(url, headers=filer).json["items"]
    assert [(e["body"], e["tlp"]) for e in mine[0]["edits"]] == [(RED_TEXT, "red")]
    kinds = [e["kind"] for e in client.get(f"{URL}/{incident['id']}/events", headers=colleague).json["items"]]
    assert kinds == ["incident.created"], "writing a red comment and lowering it are red events"


def test_finding_2_evidence_under_a_stricter_tlp_keeps_its_timeline_entry_there(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    filer = make_token("operator", "dic", username="filer")
    colleague = make_token("operator", "dic", username="colleague")
    responder = make_token("responder", "dic", username="responder")
    incident = file(client, filer, tlp="amber", participants=[{"user": "responder"}])
    url = f"{URL}/{incident['id']}"

    def upload(headers: Headers, name: str, tlp: str) -> Any:
        body = {"file": (io.BytesIO(b"log line"), name), "kind": "log", "tlp": tlp}
        return client.post(f"{url}/evidence", data=body, headers=headers, content_type="multipart/form-data")

    assert upload(filer, "nguon-tin-A05.log", "red").status_code == 201
    assert "nguon-tin-A05" not in client.get(f"{url}/events", headers=colleague).text
    assert "nguon-tin-A05" in client.get(f"{url}/events", headers=filer).text
    r = upload(responder, "cong-khai.log", "clear")
    assert (r.status_code, [e["field"] for e in r.json["errors"]]) == (403, ["tlp"]), "below the incident's TLP"


def test_finding_2_only_operators_and_admins_lower_a_tlp(client: FlaskClient, make_token: TokenFactory) -> None:
    operator = make_token("operator", "dic", username="filer")
    responder = make_token("responder", "doh", username="responder")
    incident = file(client, operator, tlp="amber+strict", participants=[{"user": "responder"}, {"organisation": "doh"}])
    url = f"{URL}/{incident['id']}"

    r = client.patch(url, json={"tlp": "clear", "description": "công khai"}, headers=responder)
    assert r.status_code == 403, r.json
    assert r.mimetype == "application/problem+json"
    assert [e["field"] for e in r.json["errors"]] == ["tlp"]
    after = client.get(url, headers=operator).json
    assert (after["tlp"], after["description"]) == ("amber+strict", incident_payload()["description"])
    assert client.patch(url, json={"tlp": "red"}, headers=responder).status_code == 200, "raising is allowed"

    comments = f"{url}/comments"
    r = client.post(comments, json={"body": "ghi chú", "tlp": "green"}, headers=responder)
    assert (r.status_code, [e["field"] for e in r.json["errors"]]) == (403, ["tlp"]), "below the incident's TLP"
    cid = client.post(comments, json={"body": "ghi chú đỏ"}, headers=responder).json["id"]
    r = client.patch(f"{comments}/{cid}", json={"tlp": "amber"}, headers=responder)
    assert (r.status_code, [e["field"] for e in r.json["errors"]]) == (403, ["tlp"])
    assert client.get(comments, headers=responder).json["items"][0]["tlp"] == "red"

    r = client.patch(url, json={"tlp": "amber"}, headers=operator)
    assert (r.status_code, r.json["tlp"]) == (200, "amber")
    admin = make_token("admin", "dic", username="root")
    assert client.patch(url, json={"tlp": "green"}, headers=admin).json["tlp"] == "green"


def test_finding_2_reports_frozen_while_red_stay_red(
    client: FlaskClient, make_token: TokenFactory, dbs: Session
) -> None:
    filer = make_token("operator", "dic", username="filer")
    colleague = make_token("operator", "dic", username="colleague")
    incident = file(client, filer, tlp="red", description=RED_TEXT)
    reports = f"{URL}/{incident['id']}/reports"
    assert client.post(f"{reports}/initial", json={}, headers=filer).status_code == 201
    assert client.post(f"{reports}/initial", json={}, headers=filer).status_code == 201
    # A version made before versions stored their TLP is judged by the level its Form 03 printed.
    with dbs.begin():
        legacy = dbs.scalar(select(Report).where(Report.version == 1))
        legacy.data = {k: v for k, v in legacy.data.items() if k != "tlp"}
    r = client.patch(f"{URL}/{incident['id']}", json={"description": "sanitised", "tlp": "amber"}, headers=filer)
    assert r.status_code == 200

    assert client.get(reports, headers=colleague).json["items"] == []
    assert client.get(f"{reports}/initial", headers=colleague).status_code == 404
    assert client.get(f"{reports}/initial", query_string={"version": 1}, headers=colleague).status_code == 404
    assert [i["version"] for i in client.get(reports, headers=filer).json["items"]] == [1, 2]
    assert client.get(f"{reports}/initial", headers=filer).status_code == 200

    assert client.post(f"{reports}/initial", json={}, headers=filer).status_code == 201
    assert [i["version"] for i in client.get(reports, headers=colleague).json["items"]] == [3]
    assert client.get(f"{reports}/initial", headers=colleague).status_code == 200


def test_finding_2_periodic_report_quotes_no_recommendation_written_while_red(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    filer = make_token("operator", "dic", username="filer")
    incident = file(client, filer, tlp="red", detected_at="2026-03-02T08:00:00+07:00")
    end = client.post(f"{URL}/{incident['id']}/reports/end", json={"recommendations": RED_NOTE}, headers=filer)
    assert end.status_code == 201
    r = client.patch(f"{URL}/{incident['id']}", json={"tlp": "amber"}, headers=filer)
    assert r.status_code == 200
    r = client.get("/api/v1/reports/periodic?from=2026-01-01&to=2026-06-30&format=json", headers=filer)
    assert r.status_code == 200
    assert RED_NOTE not in r.text


def test_finding_2_live_feed_never_sends_red_era_changes_to_amber_readers(
    live_server: LiveServer, make_token: TokenFactory
) -> None:
    filer = make_token("operator", "dic", username="filer")
    colleague = make_token("operator", "dic", username="colleague")
    server = live_server
    watching = LiveClient(server.url).connect(colleague)
    ready = watching.wait_for("ready", TIMEOUT)
    api = f"{server.url}{URL}"
    try:
        r = requests.post(api, json=incident_payload(tlp="red", description=RED_TEXT), headers=filer, timeout=10)
        assert r.status_code == 201, r.text
        incident = r.json()
        r = requests.patch(
            f"{api}/{incident['id']}", json={"description": "sanitised", "tlp": "amber"}, headers=filer, timeout=10
        )
        assert r.status_code == 200, r.text
        r = requests.post(f"{api}/{incident['id']}/transitions", json={"to": "triage"}, headers=filer, timeout=10)
        assert r.status_code == 200, r.text
        watching.wait_for(lambda f: isinstance(f.data, dict) and f.data.get("kind") == "incident.status_changed")
        assert not [f for f in watching.frames if f.mentions(RED_TEXT)], watching.frames
    finally:
        watching.disconnect()

    again = LiveClient(server.url).connect(colleague, last_event_id=ready.data["event_id"])
    try:
        done = again.wait_for("ready", TIMEOUT)
        replayed = again.frames[: again.frames.index(done)]
        assert [f.data["kind"] for f in replayed] == ["incident.status_changed"], replayed
    finally:
        again.disconnect()


def test_finding_2_migration_raises_changes_recorded_under_the_tlp_they_lowered_to(empty_engine: Engine) -> None:  # noqa: F811
    _alembic(empty_engine, ("upgrade", "0007"))
    rows = [
        ({"changes": {"description": [RED_TEXT, "sanitised"], "tlp": ["red", "amber"]}}, "amber"),
        ({"changes": {"tlp": ["green", "amber+strict"]}}, "amber+strict"),
        ({"changes": {"priority": ["P2", "P1"]}}, "green"),
    ]
    with empty_engine.begin() as conn:
        for data, tlp in rows:
            values = {"kind": "incident.updated", "actor": "filer", "at": datetime.now(UTC), "data": data, "tlp": tlp}
            conn.execute(insert(Event).values(**values))
    _alembic(empty_engine, ("upgrade", "0008"))
    with empty_engine.connect() as conn:
        assert list(conn.scalars(select(Event.tlp).order_by(Event.id))) == ["red", "amber+strict", "green"]
    with pytest.raises(DBAPIError, match="append-only"), empty_engine.begin() as conn:
        conn.execute(update(Event).values(tlp="clear"))


def test_finding_3_dedup_key_never_groups_into_an_invisible_incident(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    siem = make_token("intake", "dic", username="siem")
    scanner = make_token("intake", "dic", username="scanner")
    colleague = make_token("operator", "dic", username="colleague")
    fresh = client.post(URL, json=incident_payload(dedup_key="fresh"), headers=scanner)
    for tlp in ("amber", "red"):
        key = f"ids:rule-{tlp}"
        theirs = file(client, siem, tlp=tlp, dedup_key=key)
        r = client.post(URL, json=incident_payload(tlp="amber", dedup_key=key), headers=scanner)
        assert r.status_code == fresh.status_code == 201, r.json
        assert sorted(r.json) == sorted(fresh.json) and sorted(r.headers.keys()) == sorted(fresh.headers.keys())
        assert (r.json["created"], r.json["occurrence_count"]) == (True, 1)
        mine = r.json
        assert mine["id"] != theirs["id"]
        assert client.get(f"{URL}/{theirs['id']}", headers=scanner).status_code == 404

        again = client.post(URL, json=incident_payload(dedup_key=key), headers=siem)
        assert (again.status_code, again.json["id"], again.json["occurrence_count"]) == (200, theirs["id"], 2)
        again = client.post(URL, json=incident_payload(dedup_key=key), headers=scanner)
        assert (again.status_code, again.json["id"], again.json["occurrence_count"]) == (200, mine["id"], 2)

        bulk = client.post(
            f"{URL}/bulk", json={"incidents": [incident_payload(dedup_key=key) for _ in range(2)]}, headers=scanner
        )
        assert bulk.status_code == 200, bulk.json
        assert [(i["id"], i["created"]) for i in bulk.json["items"]] == [(mine["id"], False)] * 2

    red_key = "ids:rule-red"
    r = client.post(URL, json=incident_payload(dedup_key=red_key), headers=colleague)
    assert (r.status_code, r.json["created"]) == (201, True), "an operator not named on the red one files anew"
    assert client.get(f"{URL}/{r.json['id']}", headers=colleague).status_code == 200


def test_finding_3_a_repeat_grouped_before_the_fix_opens_no_door(
    client: FlaskClient, make_token: TokenFactory, dbs: Session
) -> None:
    siem = make_token("intake", "dic", username="siem")
    scanner = make_token("intake", "dic", username="scanner")
    theirs = file(client, siem, tlp="amber", dedup_key="shared-alert")
    # What an earlier release wrote when the scanner repeated the siem's key: an occurrence by the scanner.
    with dbs.begin():
        scanner_id = dbs.scalar(select(User.id).where(User.username == "scanner"))
        dbs.add(Occurrence(incident_id=theirs["id"], created_by_id=scanner_id, received_at=datetime.now(UTC)))
    assert client.get(f"{URL}/{theirs['id']}", headers=scanner).status_code == 404
    assert theirs["id"] not in {i["id"] for i in client.get(URL, headers=scanner).json["items"]}


def test_finding_3_bulk_filing_never_groups_into_an_invisible_incident(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    siem = make_token("intake", "dic", username="siem")
    scanner = make_token("intake", "dic", username="scanner")
    theirs = file(client, siem, tlp="red", dedup_key="scan-1")
    items = [incident_payload(dedup_key="scan-1"), incident_payload(dedup_key="scan-2"),
             incident_payload(dedup_key="scan-1")]  # fmt: skip
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=scanner)
    assert r.status_code == 201, r.json
    got = r.json["items"]
    assert theirs["id"] not in {i["id"] for i in got}
    assert [i["created"] for i in got] == [True, True, False]
    assert got[0]["id"] == got[2]["id"] and got[2]["occurrence_count"] == 2
    assert client.get(f"{URL}/{theirs['id']}", headers=siem).json["occurrence_count"] == 1
    assert client.get(f"{URL}/{theirs['id']}", headers=scanner).status_code == 404


def test_finding_3_parallel_filings_beside_an_invisible_incident_make_one_incident_of_their_own(
    live_server: LiveServer, make_token: TokenFactory
) -> None:
    siem = make_token("intake", "dic", username="siem")
    scanner = make_token("intake", "dic", username="scanner")
    api = f"{live_server.url}{URL}"
    theirs = requests.post(api, json=incident_payload(tlp="red", dedup_key="rule-7"), headers=siem, timeout=10)
    assert theirs.status_code == 201

    def post(i: int) -> requests.Response:
        body = incident_payload(dedup_key="rule-7", detected_at=f"2026-11-20T08:{i:02d}:00+07:00")
        return requests.post(api, json=body, headers=scanner, timeout=30)

    answers = parallel(20, post)
    assert sorted(r.status_code for r in answers) == [200] * 19 + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert answers[0].json()["id"] != theirs.json()["id"]
    assert max(r.json()["occurrence_count"] for r in answers) == 20
    r = requests.get(f"{api}/{theirs.json()['id']}", headers=siem, timeout=10)
    assert r.json()["occurrence_count"] == 1
