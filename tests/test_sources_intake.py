"""POST /api/v1/sources/<kind>: senders' own formats filed as incidents, repeats grouped, notices applied."""

import copy
from datetime import UTC, datetime, timedelta

import pytest
from gunicorn.config import Config
from sqlalchemy import func, select

from app import db
from app.access_log import RedactingLogger
from incidents.models import Event, Incident, Observable, Occurrence
from incidents.records import DeadlineClock
from incidents.sources.models import MaintenanceWindow, Source
from playbooks.models import Page, PlaybookRun
from tests import paging

PROBLEM = "application/problem+json"

WAZUH_ALERT = {
    "timestamp": "2026-12-06T10:15:02.123+0700",
    "id": "1733454902.1234567",
    "rule": {
        "id": "31106",
        "level": 12,
        "description": "A web attack returned code 200 (success).",
        "groups": ["web", "accesslog", "attack"],
        "mitre": {"id": ["T1190", "T1059.004"], "tactic": ["Initial Access"], "technique": ["Exploit"]},
    },
    "agent": {"id": "003", "name": "web-dvc-01", "ip": "203.0.113.10"},
    "manager": {"name": "wazuh-manager"},
    "data": {
        "srcip": "198.51.100.7",
        "srcuser": "www-data",
        "url": "https://dichvucong.thanhhoa.gov.vn/index.php?id=1%27%20or%201=1",
        "id": "200",
    },
    "syscheck": {
        "path": "/var/www/html/shell.php",
        "md5_after": "d41d8cd98f00b204e9800998ecf8427e",
        "sha256_after": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    "full_log": '198.51.100.7 - - [06/Dec/2026:10:15:02 +0700] "GET /index.php?id=1\' or 1=1 HTTP/1.1" 200 512',
    "location": "/var/log/nginx/access.log",
}


def wazuh(alert_id: str = "1733454902.1", **rule: object) -> dict:
    body = copy.deepcopy(WAZUH_ALERT)
    body["id"] = alert_id
    body["rule"].update(rule)
    return body


def alertmanager(status: str, fingerprint: str = "c8a1f3b2d4e5f607", **labels: str) -> dict:
    alert = {
        "status": status,
        "labels": {"alertname": "InstanceDown", "instance": "203.0.113.20:9100", "severity": "critical", **labels},
        "annotations": {"summary": "Cổng dịch vụ công không phản hồi", "description": "down for 5 minutes"},
        "startsAt": "2026-12-06T03:00:00.123456789Z",
        "endsAt": "2026-12-06T03:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="InstanceDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "ucsc",
        "groupLabels": {"alertname": "InstanceDown"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


@pytest.fixture
def intake(make_token):
    return make_token("intake", username="siem")


def events_of(app, incident_id: int) -> list[Event]:
    with app.app_context():
        return list(db.session().scalars(select(Event).where(Event.incident_id == incident_id).order_by(Event.id)))


def test_a_raw_wazuh_alert_files_an_incident_with_mapped_fields_observables_and_techniques(app, client, intake):
    r = client.post("/api/v1/sources/wazuh", json=WAZUH_ALERT, headers=intake)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["created"] is True and body["occurrence_count"] == 1 and body["suppressed"] is False
    assert r.headers["Location"] == f"/api/v1/incidents/{body['id']}"
    with app.app_context():
        s = db.session()
        incident = s.get_one(Incident, body["id"])
        assert incident.title == "A web attack returned code 200 (success)."
        assert (incident.priority, incident.category) == ("P2", "unauthorized_access")  # level 12, group "attack"
        assert incident.dedup_key == "wazuh:31106:web-dvc-01"
        assert "www-data" in incident.description and "nginx/access.log" in incident.description
        observables = {(o.type, o.value): o.hashes for o in s.scalars(select(Observable))}
        assert ("ipv4-addr", "198.51.100.7") in observables and ("ipv4-addr", "203.0.113.10") in observables
        assert ("url", WAZUH_ALERT["data"]["url"]) in observables
        assert observables[("file", "/var/www/html/shell.php")] == {
            "MD5": "d41d8cd98f00b204e9800998ecf8427e",
            "SHA-256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        }
        occurrence = s.scalars(select(Occurrence)).one()
        source = s.scalars(select(Source)).one()
        assert (source.kind, source.name, source.last_seen_at is not None) == ("wazuh", "wazuh:t-siem", True)
        assert occurrence.source_id == source.id and occurrence.suppressed is False
        assert occurrence.payload["source"]["context"]["agent"]["name"] == "web-dvc-01"
    techniques = [e.data["techniques"] for e in events_of(app, body["id"]) if e.kind.endswith("techniques_added")]
    assert techniques == [["T1190", "T1059.004"]]


def test_wazuh_repeats_group_by_rule_and_agent_and_a_resent_alert_id_is_a_replay(app, client, intake):
    first = client.post("/api/v1/sources/wazuh", json=wazuh("1.1"), headers=intake).get_json()
    again = client.post("/api/v1/sources/wazuh", json=wazuh("1.2"), headers=intake)
    assert again.status_code == 200
    assert (again.get_json()["id"], again.get_json()["occurrence_count"]) == (first["id"], 2)
    replay = client.post("/api/v1/sources/wazuh", json=wazuh("1.2"), headers=intake)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    other_agent = wazuh("1.3")
    other_agent["agent"] = {"id": "004", "name": "mail-01"}
    assert client.post("/api/v1/sources/wazuh", json=other_agent, headers=intake).status_code == 201
    with app.app_context():
        assert len(db.session().scalars(select(Occurrence).where(Occurrence.incident_id == first["id"])).all()) == 2


def test_repeats_add_only_techniques_their_incident_lacks_and_one_it_lacks_is_never_skipped(app, client, intake):
    """A repeat naming the techniques its incident has adds nothing (and need not read its timeline again); one
    naming a new technique adds it, however many repeats came before."""
    first = client.post("/api/v1/sources/wazuh", json=wazuh("5.1"), headers=intake).get_json()
    for n in range(2, 5):
        assert client.post("/api/v1/sources/wazuh", json=wazuh(f"5.{n}"), headers=intake).status_code == 200
    wider = wazuh("5.5", mitre={"id": ["T1190", "T1110"], "tactic": ["Credential Access"], "technique": ["Brute"]})
    assert client.post("/api/v1/sources/wazuh", json=wider, headers=intake).status_code == 200
    assert client.post("/api/v1/sources/wazuh", json=wazuh("5.6"), headers=intake).status_code == 200
    added = [e.data["techniques"] for e in events_of(app, first["id"]) if e.kind.endswith("techniques_added")]
    assert added == [["T1190", "T1059.004"], ["T1110"]]


def test_the_shuffle_integration_message_groups_with_the_raw_alert_of_the_same_rule_and_agent(client, intake):
    raw = client.post("/api/v1/sources/wazuh", json=wazuh("2.1"), headers=intake).get_json()
    alert = wazuh("2.2")
    shuffle = {
        "severity": 3,
        "pretext": "WAZUH Alert",
        "title": alert["rule"]["description"],
        "text": alert["full_log"],
        "rule_id": alert["rule"]["id"],
        "timestamp": alert["timestamp"],
        "id": alert["id"],
        "all_fields": alert,
    }
    r = client.post("/api/v1/sources/wazuh", json=shuffle, headers=intake)
    assert r.status_code == 200 and r.get_json()["id"] == raw["id"]


def test_the_key_may_come_in_the_query_for_senders_that_cannot_set_headers(client, intake):
    token = intake["Authorization"].removeprefix("Bearer ")
    assert client.post(f"/api/v1/sources/wazuh?key={token}", json=wazuh("3.1")).status_code == 201
    assert client.post("/api/v1/sources/wazuh?key=ucsc_wrong", json=wazuh("3.2")).status_code == 401
    assert client.post("/api/v1/sources/wazuh", json=wazuh("3.3")).status_code == 401
    # Only the intake of sources takes a key in the URL: the rest of the API wants the header.
    assert client.get(f"/api/v1/incidents?key={token}").status_code == 401


@pytest.mark.parametrize(
    ("kind", "payload", "fields"),
    [
        ("wazuh", {"rule": {"level": "high"}, "agent": {}},
         {"rule.id", "rule.description", "agent.name", "rule.level"}),
        ("wazuh", {"all_fields": {"rule": {"id": "5710"}}, "id": "x"}, {"all_fields.rule.description",
                                                                         "all_fields.agent.name"}),
        ("alertmanager", {"version": "4", "alerts": [{"status": "firing", "labels": {}}]},
         {"alerts[0].fingerprint", "alerts[0].startsAt"}),
        ("alertmanager", {"version": "3", "alerts": []}, {"version", "alerts"}),
        ("splunk", {"result": "x"}, {"search_name", "sid", "result"}),
        ("thehive", {"type": "wazuh", "severity": 9, "tlp": 7, "observables": [{"data": "1.2.3.4"}]},
         {"source", "sourceRef", "title", "description", "severity", "tlp", "observables[0].dataType"}),
        ("kibana", {"rule": {"id": "r1"}, "alerts": {}}, {"rule.name", "alerts"}),
        ("wazuh", [1, 2], {"body"}),
    ],
)  # fmt: skip
def test_bad_input_is_problem_json_naming_each_field_and_files_nothing(app, client, intake, kind, payload, fields):
    r = client.post(f"/api/v1/sources/{kind}", json=payload, headers=intake)
    assert r.status_code == 422 and r.mimetype == PROBLEM
    assert {e["field"] for e in r.get_json()["errors"]} == fields
    with app.app_context():
        assert db.session().scalars(select(Incident)).all() == []


def test_an_unknown_kind_is_404_and_a_non_json_body_415(client, intake):
    assert client.post("/api/v1/sources/nagios", json={}, headers=intake).status_code == 404
    assert client.post("/api/v1/sources/mailbox", json={}, headers=intake).status_code == 404
    r = client.post("/api/v1/sources/wazuh", data="rule=1", headers=intake, content_type="text/plain")
    assert r.status_code == 415 and r.mimetype == PROBLEM


def test_alertmanager_fires_once_repeats_as_occurrences_and_resolved_is_a_timeline_notice(app, client, intake):
    fired = client.post("/api/v1/sources/alertmanager", json=alertmanager("firing"), headers=intake)
    assert fired.status_code == 201
    incident_id = fired.get_json()["id"]
    repeat = client.post("/api/v1/sources/alertmanager", json=alertmanager("firing"), headers=intake)
    assert repeat.status_code == 200 and repeat.get_json()["id"] == incident_id
    resolved = client.post("/api/v1/sources/alertmanager", json=alertmanager("resolved"), headers=intake)
    assert resolved.status_code == 202
    assert resolved.get_json() == {"id": incident_id, "ref": fired.get_json()["ref"], "status": "new",
                                   "notice": "resolved", "applied": True}  # fmt: skip
    with app.app_context():
        incident = db.session().get_one(Incident, incident_id)
        assert (incident.status, incident.priority, incident.category) == ("new", "P1", "dos")
        assert incident.title == "InstanceDown: Cổng dịch vụ công không phản hồi"
    notices = [e for e in events_of(app, incident_id) if e.kind == "source.resolved"]
    assert len(notices) == 1 and notices[0].data["ended_at"] == "2026-12-06T03:20:00+00:00"
    unknown = client.post("/api/v1/sources/alertmanager", json=alertmanager("resolved", "ffff"), headers=intake)
    assert unknown.status_code == 202 and unknown.get_json()["applied"] is False


def test_one_alertmanager_payload_with_several_fingerprints_makes_one_incident_each(client, intake):
    payload = alertmanager("firing", "aaaa")
    second = copy.deepcopy(payload["alerts"][0]) | {"fingerprint": "bbbb"}
    second["labels"] = {"alertname": "HighErrorRate", "severity": "warning", "service": "portal"}
    grafana = {"dashboardURL": "http://grafana/d/x", "panelURL": "http://grafana/d/x?viewPanel=2", "values": {"B": 9}}
    payload["alerts"].append(second | grafana)
    r = client.post("/api/v1/sources/alertmanager", json=payload, headers=intake)
    assert r.status_code == 201
    items = r.get_json()["items"]
    assert len(items) == 2 and items[0]["id"] != items[1]["id"] and all(i["created"] for i in items)


def test_grafana_managed_alert_fields_are_kept_as_context(app, client, intake):
    payload = alertmanager("firing", "gggg")
    payload |= {"orgId": 1, "title": "[FIRING:1] InstanceDown", "state": "alerting", "message": "m"}
    payload["alerts"][0] |= {"dashboardURL": "http://grafana/d/x", "valueString": "[ var='B' value=0 ]"}
    r = client.post("/api/v1/sources/alertmanager", json=payload, headers=intake)
    with app.app_context():
        occurrence = db.session().scalars(select(Occurrence).where(Occurrence.incident_id == r.get_json()["id"])).one()
    context = occurrence.payload["source"]["context"]
    assert context["dashboardURL"] == "http://grafana/d/x" and context["valueString"] == "[ var='B' value=0 ]"
    assert context["group"]["orgId"] == 1 and context["group"]["title"] == "[FIRING:1] InstanceDown"


def test_a_source_mapping_overrides_the_shipped_one_and_unknown_values_fall_back_to_other(app, client, intake):
    client.post("/api/v1/sources/wazuh", json=wazuh("4.1"), headers=intake)
    with app.app_context():
        s = db.session()
        with s.begin():
            s.scalars(select(Source)).one().mapping = {
                "level_priority": [{"min": 0, "priority": "P1"}],
                "group_category": {"accesslog": "defacement"},
            }
    r = client.post("/api/v1/sources/wazuh", json=wazuh("4.2", id="999", groups=["accesslog"]), headers=intake)
    unmapped = client.post("/api/v1/sources/wazuh", json=wazuh("4.3", id="998", groups=["ossec"]), headers=intake)
    with app.app_context():
        s = db.session()
        mapped = s.get_one(Incident, r.get_json()["id"])
        assert (mapped.priority, mapped.category) == ("P1", "defacement")
        assert s.get_one(Incident, unmapped.get_json()["id"]).category == "other"


def test_a_source_switched_off_is_refused(app, client, intake):
    client.post("/api/v1/sources/wazuh", json=wazuh("5.1"), headers=intake)
    with app.app_context():
        s = db.session()
        with s.begin():
            s.scalars(select(Source)).one().active = False
    r = client.post("/api/v1/sources/wazuh", json=wazuh("5.2", id="5"), headers=intake)
    assert r.status_code == 403 and r.mimetype == PROBLEM


def test_a_committee_token_may_not_file_through_a_source(client, make_token):
    r = client.post("/api/v1/sources/wazuh", json=wazuh("6.1"), headers=make_token("committee"))
    assert r.status_code == 403


def test_splunk_and_thehive_bodies_file_with_their_own_idempotency(app, client, intake):
    splunk = {
        "result": {"src_ip": "198.51.100.9", "user": "admin", "count": "57", "host": "vpn-gw", "severity": "high"},
        "sid": "scheduler__admin__search__RMD5_at_1733454000_42",
        "results_link": "https://splunk:8000/app/search/@go?sid=scheduler__admin__search__RMD5_at_1733454000_42",
        "search_name": "VPN brute force",
        "owner": "admin",
        "app": "search",
    }
    r = client.post("/api/v1/sources/splunk", json=splunk, headers=intake)
    assert r.status_code == 201
    assert client.post("/api/v1/sources/splunk", json=splunk, headers=intake).headers["Idempotent-Replayed"] == "true"
    hive = {
        "type": "external", "source": "wazuh-to-thehive", "sourceRef": "a1b2c3", "title": "Phishing mail reported",
        "description": "User forwarded a phishing mail", "severity": 3, "date": 1733454000000, "tags": ["phishing"],
        "tlp": 3, "pap": 2,
        "observables": [{"dataType": "mail", "data": "ceo@examp1e.vn"}, {"dataType": "domain", "data": "examp1e.vn"},
                        {"dataType": "hash", "data": "d41d8cd98f00b204e9800998ecf8427e"},
                        {"dataType": "registry", "data": "HKLM\\Run\\x"}],
    }  # fmt: skip
    h = client.post("/api/v1/sources/thehive", json=hive, headers=intake)
    assert h.status_code == 201
    with app.app_context():
        s = db.session()
        vpn = s.get_one(Incident, r.get_json()["id"])
        assert (vpn.priority, vpn.category, vpn.dedup_key) == (
            "P2",
            "unauthorized_access",
            "splunk:VPN brute force:vpn-gw",
        )
        mail = s.get_one(Incident, h.get_json()["id"])
        assert (mail.priority, mail.category, mail.tlp) == ("P2", "phishing", "red")
        kinds = {o.type for o in s.scalars(select(Observable).where(Observable.incident_id == mail.id))}
        assert kinds == {"email-addr", "domain-name", "file"}
        assert "registry=HKLM" in mail.description


def _paging_work(app, incident_id: int) -> tuple[int, int, int]:
    """Once the worker's jobs ran (the filing's follow-up among them): the incident's playbook runs, pages and
    deadline clocks. A held alert's incident is stored and timed, but nobody is paged."""
    paging.run_jobs(app)
    with app.app_context():
        s = db.session()
        count = lambda model, *where: len(s.scalars(select(model).where(*where)).all())  # noqa: E731
        return (count(PlaybookRun, PlaybookRun.incident_id == incident_id),
                count(Page, Page.incident_id == incident_id),
                count(DeadlineClock, DeadlineClock.incident_id == incident_id))  # fmt: skip


def test_an_alert_inside_a_maintenance_window_is_stored_suppressed_and_pages_nobody(app, client, intake):
    paging.add_contact(app, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn", channels=["email"])
    paging.load_shipped(app, demo=False)
    paged = client.post("/api/v1/sources/wazuh", json=wazuh("7.1"), headers=intake).get_json()
    runs, pages, clocks = _paging_work(app, paged["id"])
    assert paged["suppressed"] is False and runs > 0 and pages > 0 and clocks > 0
    now = datetime.now(UTC)
    with app.app_context():
        s = db.session()
        with s.begin():
            s.add(MaintenanceWindow(dedup_pattern="wazuh:*:backup-01", starts_at=now - timedelta(minutes=1),
                                    ends_at=now + timedelta(hours=1), reason="Nightly backup reboots",
                                    approved_by="Trưởng phòng ATTT"))  # fmt: skip
    held = wazuh("7.2")
    held["agent"] = {"id": "009", "name": "backup-01", "ip": "203.0.113.99"}
    r = client.post("/api/v1/sources/wazuh", json=held, headers=intake)
    assert r.status_code == 201 and r.get_json()["suppressed"] is True
    incident_id = r.get_json()["id"]
    runs, pages, clocks = _paging_work(app, incident_id)
    assert (runs, pages) == (0, 0) and clocks > 0
    again = client.post("/api/v1/sources/wazuh", json=held | {"id": "7.3"}, headers=intake)
    assert again.status_code == 200 and again.get_json()["suppressed"] is True
    with app.app_context():
        rows = db.session().scalars(select(Occurrence).where(Occurrence.incident_id == incident_id)).all()
        assert [o.suppressed for o in rows] == [True, True]
    notes = [e.note for e in events_of(app, incident_id) if e.kind == "source.suppressed"]
    assert notes == ["Nightly backup reboots", "Nightly backup reboots"]


def test_gunicorns_error_log_redacts_a_key_in_the_uri_of_a_request_that_failed(capsys):
    """A request failing past the app is logged by gunicorn with its URI; the key must not be in it."""
    logger = RedactingLogger(Config())
    try:
        raise RuntimeError("worker failure")
    except RuntimeError:
        logger.exception("Error handling request %s", "/api/v1/sources/splunk?key=ucsc_s3cr3t&x=1")
    logger.error("Error handling request %s %s", "POST", "/api/v1/sources/wazuh?a=1&KEY=ucsc_s3cr3t")
    err = capsys.readouterr().err
    assert "ucsc_s3cr3t" not in err and err.count("key=[redacted]") + err.count("KEY=[redacted]") == 2


def test_a_payload_whose_second_alert_is_refused_files_none_of_its_alerts(app, client, intake):
    """A payload is one transaction: an alert the source's mapping cannot file (a priority that does not exist)
    refuses the whole payload with its field, and the alert before it, valid alone, is not written either."""
    first = client.post("/api/v1/sources/alertmanager", json=alertmanager("firing", "1111"), headers=intake)
    assert first.status_code == 201
    with app.app_context():
        s = db.session()
        with s.begin():
            s.scalars(select(Source)).one().mapping = {"severity_priority": {"bogus": "P9"}}
        before = (s.scalar(select(func.count()).select_from(Incident)),
                  s.scalar(select(func.count()).select_from(Occurrence)))  # fmt: skip
    payload = alertmanager("firing", "2222")
    bad = copy.deepcopy(payload["alerts"][0]) | {"fingerprint": "3333"}
    bad["labels"] = bad["labels"] | {"severity": "bogus", "alertname": "DiskFull"}
    payload["alerts"].append(bad)
    r = client.post("/api/v1/sources/alertmanager", json=payload, headers=intake)
    assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json"
    assert [e["field"] for e in r.get_json()["errors"]] == ["mapping.priority"]
    with app.app_context():
        s = db.session()
        after = (s.scalar(select(func.count()).select_from(Incident)),
                 s.scalar(select(func.count()).select_from(Occurrence)))  # fmt: skip
    assert after == before
