"""STIX 2.1 export and import against consumers nobody here wrote: stix2-validator, stix2.parse, misp-stix."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import stix2
from sqlalchemy import func, select
from stix2validator import ValidationOptions, validate_string

from app import db
from incidents.access import Actor
from incidents.enums import Role
from incidents.models import Incident, StixObject, User
from incidents.stix import projector, taxii_query
from incidents.stix.store import StixSettings
from tests.conftest import incident_payload

# Warnings the validator gives on every export, and why we accept them:
# 202: `indicates incident` and `based-on <observable>` are what OpenCTI's relationship map uses;
# 302: the incident's external reference links back to UCSC by URL, with no hash to give.
ACCEPTED_WARNINGS = {"202", "302"}
TLP_AMBER = "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"

OBSERVABLES = [
    {"type": "ipv4-addr", "value": "203.0.113.7"},
    {"type": "ipv6-addr", "value": "2001:db8::7"},
    {"type": "domain-name", "value": "evil.example.com"},
    {"type": "url", "value": "http://evil.example.com/login.php?u=o'brien"},
    {"type": "email-addr", "value": "attacker@evil.example.com"},
    {"type": "file", "value": "invoice.exe", "hashes": {"SHA-256": "e3b0c442" * 8, "MD5": "d41d8cd9" * 4}},
]


MISP_CONVERT = """
import json, sys
import stix2
from misp_stix_converter import ExternalSTIX2toMISPParser
parser = ExternalSTIX2toMISPParser()
parser.load_stix_bundle(stix2.parse(sys.stdin.read(), allow_custom=True))
parser.parse_stix_bundle()
event = parser.misp_event
values = [a.value for a in event.attributes] + [a.value for o in event.objects for a in o.attributes]
errors = [m for msgs in parser.errors.values() for m in msgs]
print(json.dumps({"info": event.info, "tags": [t.name for t in event.tags], "values": values, "errors": errors}))
"""


def _validate(text: str) -> set[str]:
    result = validate_string(text, ValidationOptions(version="2.1"))
    assert result.is_valid, [str(e) for e in result.errors]
    assert result.errors == []
    codes = {m.group(1) for w in result.warnings if (m := re.search(r"\{(\d+)\}", str(w)))}
    return codes


def _file(client, headers, **overrides) -> dict:
    response = client.post("/api/v1/incidents", json=incident_payload(**overrides), headers=headers)
    assert response.status_code == 201, response.json
    return response.json


def _export(client, headers, incident_id, **params) -> str:
    response = client.get(f"/api/v1/incidents/{incident_id}/stix", headers=headers, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "application/stix+json;version=2.1"
    return response.get_data(as_text=True)


def _objects(text: str) -> dict[str, dict]:
    return {o["id"]: o for o in json.loads(text)["objects"]}


def _of_type(text: str, kind: str) -> list[dict]:
    return [o for o in json.loads(text)["objects"] if o["type"] == kind]


def test_every_export_passes_the_validator_with_only_the_accepted_warnings_and_parses_without_allow_custom(
    client, operator
):
    filed = _file(client, operator, observables=OBSERVABLES, category="ransomware", priority="P1")
    client.post(f"/api/v1/incidents/{filed['id']}/transitions", json={"to": "triage"}, headers=operator)
    exports = [
        _export(client, operator, filed["id"]),
        client.get("/api/v1/stix/objects", headers=operator).get_data(as_text=True),
    ]
    for text in exports:
        warnings = _validate(text)
        assert warnings <= ACCEPTED_WARNINGS, f"new validator warning(s): {warnings - ACCEPTED_WARNINGS}"
        bundle = stix2.parse(text)  # no allow_custom: the extension is registered, nothing else is custom
        assert bundle.type == "bundle"
    incident = _of_type(exports[0], "incident")[0]
    ext = incident["extensions"]["extension-definition--ef765651-680c-498d-9894-99799f2fa126"]
    assert ext["investigation_status"] == "open" and ext["determination"] == "suspected"
    assert ext["criticality"] == 90 and ext["incident_types"] == ["ransomware"]
    assert "severity" not in incident
    assert incident["object_marking_refs"] == ["marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"]
    objects = _objects(exports[0])
    assert all(o.get("object_marking_refs") for o in objects.values() if o["type"] != "marking-definition"), (
        "every object carries its TLP"
    )
    patterns = sorted(o["pattern"] for o in objects.values() if o["type"] == "indicator")
    assert "[url:value = 'http://evil.example.com/login.php?u=o\\'brien']" in patterns
    assert any("file:hashes.'SHA-256'" in p for p in patterns)
    scos = {o["type"] for o in objects.values() if o["type"] in {ob["type"] for ob in OBSERVABLES}}
    assert scos == {ob["type"] for ob in OBSERVABLES}
    report = _of_type(exports[0], "report")[0]
    assert set(report["object_refs"]) >= {
        incident["id"],
        *(o["id"] for o in objects.values() if o["type"] == "ipv4-addr"),
    }


def test_the_opencti_profile_adds_opencti_fields_and_is_documented_to_fail_the_strict_validator(client, operator):
    filed = _file(client, operator, priority="P1", category="phishing")
    text = _export(client, operator, filed["id"], profile="opencti")
    incident = _of_type(text, "incident")[0]
    assert incident["severity"] == "critical" and incident["incident_type"] == "phishing"
    assert incident["source"] == "UCSC" and incident["first_seen"]
    result = validate_string(text, ValidationOptions(version="2.1"))
    assert not result.is_valid
    assert any("reserved property" in str(e) for e in result.errors)


def test_re_export_of_an_unchanged_incident_is_identical_and_only_stix_visible_changes_make_a_version(
    client, operator, app
):
    filed = _file(client, operator)
    first = _export(client, operator, filed["id"])
    assert _export(client, operator, filed["id"]) == first
    # A comment and a participant are not STIX-visible: nothing is versioned, the bundle stays byte-identical.
    client.post(f"/api/v1/incidents/{filed['id']}/comments", json={"body": "đã gọi VNPT"}, headers=operator)
    assert _export(client, operator, filed["id"]) == first
    before = _of_type(first, "incident")[0]
    time.sleep(0.002)
    response = client.patch(f"/api/v1/incidents/{filed['id']}", json={"priority": "P1"}, headers=operator)
    assert response.status_code == 200
    second = _export(client, operator, filed["id"])
    after = _of_type(second, "incident")[0]
    assert after["id"] == before["id"] and after["created"] == before["created"]
    assert after["modified"] > before["modified"]
    # The SCOs are not versioned and keep their deterministic ids.
    assert {o["id"] for o in _of_type(first, "ipv4-addr")} == {o["id"] for o in _of_type(second, "ipv4-addr")}
    with app.app_context():
        versions = db.session().scalar(select(func.count()).where(StixObject.stix_id == before["id"]))
    assert versions == 2


def test_attack_techniques_given_to_an_incident_export_as_attack_patterns_the_incident_uses(
    client, operator, make_token
):
    filed = _file(client, operator)
    url = f"/api/v1/incidents/{filed['id']}/attack-techniques"
    bad = client.post(url, json={"techniques": ["T1566.001", "phishing"]}, headers=operator)
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert "techniques[1]" in json.dumps(bad.json), bad.json
    assert client.post(url, json={"techniques": ["T1190"]}, headers=make_token("committee")).status_code == 403
    added = client.post(url, json={"techniques": ["T1566.001", "T1190"]}, headers=operator)
    assert added.status_code == 200 and added.json == {"techniques": ["T1566.001", "T1190"]}
    text = _export(client, operator, filed["id"])
    warnings = _validate(text)
    assert warnings <= ACCEPTED_WARNINGS, f"new validator warning(s): {warnings - ACCEPTED_WARNINGS}"
    stix2.parse(text)
    patterns = _of_type(text, "attack-pattern")
    refs = {p["external_references"][0]["external_id"]: p["external_references"][0] for p in patterns}
    assert set(refs) == {"T1566.001", "T1190"}
    assert refs["T1566.001"] == {
        "source_name": "mitre-attack",
        "external_id": "T1566.001",
        "url": "https://attack.mitre.org/techniques/T1566/001/",
    }
    assert all(p["object_marking_refs"] == [TLP_AMBER] for p in patterns)
    incident = _of_type(text, "incident")[0]
    uses = {
        (r["source_ref"], r["target_ref"]) for r in _of_type(text, "relationship") if r["relationship_type"] == "uses"
    }
    assert uses == {(incident["id"], p["id"]) for p in patterns}
    assert {p["id"] for p in patterns} <= set(_of_type(text, "report")[0]["object_refs"])
    # An id the incident has already changes nothing: no event, the same bundle.
    again = client.post(url, json={"techniques": ["T1190"]}, headers=operator)
    assert again.json == {"techniques": ["T1566.001", "T1190"]}
    assert _export(client, operator, filed["id"]) == text
    assert client.get(url, headers=operator).json == {"techniques": ["T1566.001", "T1190"]}


def test_misp_stix_turns_an_export_into_a_misp_event_with_every_observable_and_the_tlp_tag(client, operator):
    observables = [o for o in OBSERVABLES if o["type"] != "url"] + [
        {"type": "url", "value": "http://evil.example.com/x"}
    ]
    filed = _file(client, operator, observables=observables, tlp="green")
    text = _export(client, operator, filed["id"])
    # In a process of its own: misp-stix pulls in mixbox, whose vendored six trips `filterwarnings = error`.
    run = subprocess.run([sys.executable, "-c", MISP_CONVERT], input=text, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    event = json.loads(run.stdout.strip().splitlines()[-1])
    assert filed["ref"] in event["info"]
    assert "tlp:green" in event["tags"]
    values = set(event["values"])
    for obs in observables:
        if obs["type"] == "file":
            assert obs["hashes"]["SHA-256"] in values
        else:
            assert obs["value"] in values, (obs, values)
    assert [m for m in event["errors"] if "incident" not in m] == []


def _actor(app, username: str) -> Actor:
    with app.app_context():
        user = db.session().scalar(select(User).where(User.username == username))
        return Actor(
            user_id=user.id, username=user.username, role=Role(user.role), organisation_id=user.organisation_id
        )


def _visible_ids(app, actor: Actor, max_tlp: str = "red") -> set[str]:
    with app.app_context():
        page = taxii_query.query_objects(
            db.session(), actor, max_tlp, taxii_query.Filters(versions=("all",)), limit=100_000, next_token=None
        )
        return {r.stix_id for r in page.rows}


def test_raising_the_tlp_withdraws_earlier_versions_and_a_shared_observable_keeps_one_copy_per_level(
    client, operator, make_token, app
):
    make_token("committee", username="board-member")
    board = _actor(app, "board-member")
    shared_ip = [{"type": "ipv4-addr", "value": "198.51.100.77"}]
    red_only = [*shared_ip, {"type": "domain-name", "value": "secret.example.org"}]
    amber = _file(client, operator, observables=shared_ip, title="amber")
    red = _file(client, operator, observables=red_only, title="red")
    amber_text = _export(client, operator, amber["id"])
    red_text = _export(client, operator, red["id"])
    red_incident = _of_type(red_text, "incident")[0]["id"]
    assert red_incident in _visible_ids(app, board)
    response = client.patch(f"/api/v1/incidents/{red['id']}", json={"tlp": "red"}, headers=operator)
    assert response.status_code == 200
    with app.app_context():
        projector.ensure_projected(db.session(), red["id"], StixSettings())
    seen = _visible_ids(app, board)
    assert red_incident not in seen, "a committee member not named on a red incident still sees it"
    domain = _of_type(red_text, "domain-name")[0]["id"]
    assert domain not in seen
    ip = _of_type(amber_text, "ipv4-addr")[0]["id"]
    assert ip in seen, "the amber incident's copy of the shared IP stays visible"
    with app.app_context():
        copies = db.session().execute(select(StixObject.tlp).where(StixObject.stix_id == ip)).scalars().all()
    assert sorted(copies) == ["amber", "red"]
    # The operator who filed is a named participant of the red incident: the red copies reach them.
    assert {ip, domain, red_incident} <= _visible_ids(app, _actor(app, "op1"))


def _bundle(objects: list) -> dict:
    return {"type": "bundle", "id": "bundle--6f3c1d9e-5b7a-4c2e-9d8f-1a2b3c4d5e6f", "objects": objects}


def _external_bundle() -> dict:
    """What a MISP or OpenCTI export looks like: a report wrapping an incident, an indicator, an SCO, a malware."""
    org = stix2.Identity(name="VNCERT/CC", identity_class="organization")
    inc = stix2.Incident(
        name="Chiến dịch lừa đảo ngân hàng",
        description="phishing wave",
        created_by_ref=org.id,
        object_marking_refs=[stix2.TLP_GREEN],
    )
    ind = stix2.Indicator(
        name="C2",
        pattern="[domain-name:value = 'bank-login.example.net']",
        pattern_type="stix",
        valid_from="2026-11-01T00:00:00Z",
        object_marking_refs=[stix2.TLP_GREEN],
    )
    ip = stix2.IPv4Address(value="192.0.2.200", object_marking_refs=[stix2.TLP_GREEN])
    mal = stix2.Malware(name="FakeBank", is_family=True, object_marking_refs=[stix2.TLP_GREEN])
    rels = [stix2.Relationship(ind, "indicates", inc), stix2.Relationship(inc, "related-to", mal)]
    rep = stix2.Report(
        name="Báo cáo",
        published="2026-11-02T00:00:00Z",
        object_refs=[inc.id, ind.id, ip.id, mal.id, *(r.id for r in rels)],
        object_marking_refs=[stix2.TLP_GREEN],
    )
    unknown = {
        "type": "x-acme-ticket",
        "spec_version": "2.1",
        "id": "x-acme-ticket--0b5f8a7e-3c1d-4e2f-9a8b-7c6d5e4f3a2b",
        "created": "2026-11-02T00:00:00.000Z",
        "modified": "2026-11-02T00:00:00.000Z",
        "ticket": "ACME-1",
    }
    objs = [org, inc, ind, ip, mal, *rels, rep, stix2.TLP_GREEN]
    return _bundle([json.loads(o.serialize()) for o in objs] + [unknown])


def _count(app) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(StixObject))


def test_import_creates_an_incident_from_a_report_and_keeps_unknown_types_and_dedups_a_repeat(client, operator, app):
    bundle = _external_bundle()
    response = client.post("/api/v1/stix/bundles", json=bundle, headers=operator)
    assert response.status_code == 200, response.json
    result = response.json
    assert len(result["incidents_created"]) == 1 and result["stored"] == len(bundle["objects"])
    ref = result["incidents_created"][0]
    incident = client.get(f"/api/v1/incidents/{ref}", headers=operator).json
    assert incident["title"] == "Chiến dịch lừa đảo ngân hàng" and incident["tlp"] == "green"
    values = {(o["type"], o["value"]) for o in incident["observables"]}
    assert {("domain-name", "bank-login.example.net"), ("ipv4-addr", "192.0.2.200")} <= values
    unknown = client.get("/api/v1/stix/objects", headers=operator).get_data(as_text=True)
    assert "x-acme-ticket--0b5f8a7e-3c1d-4e2f-9a8b-7c6d5e4f3a2b" in unknown
    stored = _count(app)
    again = client.post("/api/v1/stix/bundles", json=bundle, headers=operator).json
    assert again["stored"] == 0 and again["duplicates"] == len(bundle["objects"])
    assert again["incidents_created"] == []
    assert _count(app) == stored
    # The same IP under another id (a tool that mints UUIDv4 SCO ids) is the same observable: not stored twice.
    other = {
        "type": "ipv4-addr",
        "spec_version": "2.1",
        "id": "ipv4-addr--2f0c9b1e-7d6a-4b5c-8e9f-0a1b2c3d4e5f",
        "value": "192.0.2.200",
        "object_marking_refs": [stix2.TLP_GREEN.id],
    }
    dup = client.post("/api/v1/stix/bundles", json=_bundle([other]), headers=operator).json
    assert dup == {"stored": 0, "duplicates": 1, "incidents_created": [], "incidents_enriched": []}


def test_import_of_an_exported_incident_enriches_it_instead_of_creating_one(client, operator):
    filed = _file(client, operator)
    exported = json.loads(_export(client, operator, filed["id"]))
    inc = next(o for o in exported["objects"] if o["type"] == "incident")
    ind = stix2.Indicator(
        name="new", pattern="[ipv4-addr:value = '203.0.113.99']", pattern_type="stix", valid_from="2026-11-01T00:00:00Z"
    )
    rel = stix2.Relationship(ind.id, "indicates", inc["id"])
    response = client.post(
        "/api/v1/stix/bundles",
        json=_bundle([json.loads(ind.serialize()), json.loads(rel.serialize())]),
        headers=operator,
    )
    assert response.status_code == 200, response.json
    assert response.json["incidents_enriched"] == [filed["ref"]] and response.json["incidents_created"] == []
    values = {o["value"] for o in client.get(f"/api/v1/incidents/{filed['id']}", headers=operator).json["observables"]}
    assert "203.0.113.99" in values


def _indicator(i: int, pattern: str | None = None) -> dict:
    """Templated JSON (not stix2) so volume and broken inputs reach the server as sent."""
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{i:08x}-1111-4222-8333-444455556666",
        "created": "2026-11-01T00:00:00.000Z",
        "modified": "2026-11-01T00:00:00.000Z",
        "name": f"bulk {i}",
        "pattern": pattern or f"[ipv4-addr:value = '10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}']",
        "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00Z",
        "object_marking_refs": ["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"],
    }


@pytest.mark.parametrize(
    ("case", "status", "needle"),
    [
        ("broken pattern", 422, "pattern"),
        ("dangling reference", 422, "neither in the bundle nor stored"),
        ("too many objects", 422, "at most 20000 objects"),
        ("oversize body", 413, "larger than the limit"),
    ],
)
def test_a_bad_bundle_gets_a_clear_error_and_leaves_the_store_unchanged(client, operator, app, case, status, needle):
    before = _count(app)
    incidents_before = client.get("/api/v1/incidents", headers=operator).json["items"]
    good = [_indicator(i) for i in range(3)]
    if case == "broken pattern":
        objects = [*good, _indicator(99, "[ipv4-addr:value = '10.0.0.1'")]
    elif case == "dangling reference":
        rel = {
            "type": "relationship",
            "spec_version": "2.1",
            "id": "relationship--0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
            "created": "2026-11-01T00:00:00.000Z",
            "modified": "2026-11-01T00:00:00.000Z",
            "relationship_type": "indicates",
            "source_ref": good[0]["id"],
            "target_ref": "incident--9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
        }
        objects = [*good, rel]
    elif case == "too many objects":
        objects = [_indicator(i) for i in range(20_001)]
    else:
        filler = "x" * 2000
        objects = [{**_indicator(i), "description": filler} for i in range(6000)]
    body = json.dumps(_bundle(objects))
    response = client.post("/api/v1/stix/bundles", data=body, content_type="application/stix+json", headers=operator)
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json"
    assert needle in json.dumps(response.json), response.json
    assert _count(app) == before
    assert client.get("/api/v1/incidents", headers=operator).json["items"] == incidents_before


def test_the_worker_projects_committed_events_without_any_export(client, operator, app, start_worker):
    filed = _file(client, operator)
    start_worker()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with app.app_context():
            n = db.session().scalar(select(func.count()).where(StixObject.incident_id == filed["id"]))
        if n:
            break
        time.sleep(0.1)
    assert n > 0, "the worker's projector wrote nothing"
    with app.app_context():
        rows = db.session().execute(select(StixObject.id, StixObject.date_added).order_by(StixObject.id)).all()
    dates = [r.date_added for r in rows]
    assert dates == sorted(dates) and len(set(dates)) == len(dates), "date_added is strictly increasing"


def test_stix_import_cli_streams_a_file_in_batches_with_a_progress_bar(app, tmp_path: Path, make_token):
    make_token("admin", username="root")
    path = tmp_path / "big.json"
    path.write_text(json.dumps(_bundle([_indicator(i) for i in range(120)])))
    result = app.test_cli_runner().invoke(args=["stix", "import", str(path), "--batch", "50"])
    assert result.exit_code == 0, result.output
    assert "120 stored" in result.output
    with app.app_context():
        assert db.session().scalar(select(func.count()).where(StixObject.type == "indicator")) == 120
        assert db.session().scalar(select(func.count()).select_from(Incident)) == 0
