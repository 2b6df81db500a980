"""The STIX import stays beside the projection, never over it; request bodies are judged before anything is stored."""

import json
import socket
import time
from datetime import UTC, datetime

import pytest
import stix2
from sqlalchemy import select, update

from app import db
from incidents.models import StixObject
from incidents.stix.mapping import TLP_MARKING_IDS
from tests.conftest import ROOT, incident_payload

URL = "/api/v1/incidents"
TAXII = "application/taxii+json;version=2.1"
CLEAR, GREEN, RED = TLP_MARKING_IDS["clear"], TLP_MARKING_IDS["green"], TLP_MARKING_IDS["red"]


def _file(client, headers, **overrides) -> dict:
    response = client.post(URL, json=incident_payload(**overrides), headers=headers)
    assert response.status_code == 201, response.json
    return response.json


def _export(client, headers, incident_id) -> list[dict]:
    response = client.get(f"{URL}/{incident_id}/stix", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())["objects"]


def _bundle(objects: list) -> dict:
    return {"type": "bundle", "id": "bundle--6f3c1d9e-5b7a-4c2e-9d8f-1a2b3c4d5e6f", "objects": objects}


def _raw_bundle(objects: str) -> str:
    """A bundle around objects given as JSON text (text the json module would not write)."""
    return json.dumps(_bundle([]))[:-2] + objects + "]}"


def _import(client, headers, objects: list):
    return client.post("/api/v1/stix/bundles", json=_bundle(objects), headers=headers)


def _collection(client, headers, alias: str) -> list[dict]:
    response = client.get(f"/taxii2/ucsc/collections/{alias}/objects/", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())["objects"]


def _later(obj: dict, **changes) -> dict:
    return {**obj, "modified": "2099-01-01T00:00:00.000Z", **changes}


def _indicator_for(incident_stix_id: str, value: str, marking: str | None = None) -> list[dict]:
    markings = {"object_marking_refs": [marking]} if marking else {}
    ind = stix2.Indicator(name=f"C2 {value}", pattern=f"[ipv4-addr:value = '{value}']", pattern_type="stix",
                          valid_from="2026-11-01T00:00:00Z", **markings)  # fmt: skip
    rel = stix2.Relationship(ind.id, "indicates", incident_stix_id, **markings)
    return [json.loads(ind.serialize()), json.loads(rel.serialize())]


def test_finding_1_an_import_never_supersedes_or_sits_beside_a_projected_object(client, operator, app):
    filed = _file(client, operator, title="Projected title")
    exported = _export(client, operator, filed["id"])
    incident = next(o for o in exported if o["type"] == "incident")
    authors = {o.get("created_by_ref") for o in exported}
    board = next(o for o in exported if o["type"] == "identity" and o["id"] in authors)
    forged = _later(incident, name="Defaced by an import", object_marking_refs=[CLEAR])
    response = _import(client, operator, [forged])
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert [e["field"] for e in response.json["errors"]] == [f"objects ({incident['id']})"]
    response = _import(client, operator, [_later(board, name="Not the board", object_marking_refs=[CLEAR])])
    assert response.status_code == 422 and board["id"] in response.json["errors"][0]["field"]
    # TAXII writes are refused alike, and nothing was stored by either path.
    envelope = {"objects": [forged]}
    taxii = client.post("/taxii2/ucsc/collections/working-group/objects/", data=json.dumps(envelope),
                        headers={**operator, "Content-Type": TAXII})  # fmt: skip
    assert taxii.status_code == 422, taxii.get_data(as_text=True)
    with app.app_context():
        rows = db.session().execute(select(StixObject.imported_by_id).where(StixObject.stix_id == incident["id"])).all()
    assert rows and all(r.imported_by_id is None for r in rows)
    for alias in ("public", "national", "working-group"):
        served = [o for o in _collection(client, operator, alias) if o["id"] == incident["id"]]
        assert all(o["name"] == incident["name"] for o in served), alias
    assert not [o for o in _collection(client, operator, "public") if o["id"] == incident["id"]]
    again = next(o for o in _export(client, operator, filed["id"]) if o["type"] == "incident")
    assert again == incident
    # The version we published, sent back unchanged, is a duplicate: nothing stored, nothing refused.
    response = _import(client, operator, [incident])
    assert response.status_code == 200 and response.json["duplicates"] == 1 and response.json["stored"] == 0


def test_finding_1_an_import_enriches_only_incidents_the_importer_can_see_and_hides_the_others(
    client, operator, make_token
):
    responder = make_token("responder", "doh")
    filed = _file(client, operator, title="Amber then red", tlp="amber")
    assert client.post(f"{URL}/{filed['id']}/participants", json={"organisation": "doh"},
                       headers=operator).status_code == 201  # fmt: skip
    incident_id = next(o for o in _export(client, responder, filed["id"]) if o["type"] == "incident")["id"]
    seen = _import(client, responder, _indicator_for(incident_id, "203.0.113.5"))
    assert seen.status_code == 200 and seen.json["incidents_enriched"] == [filed["ref"]]
    assert client.patch(f"{URL}/{filed['id']}", json={"tlp": "red"}, headers=operator).status_code == 200
    assert client.get(f"{URL}/{filed['id']}", headers=responder).status_code == 404
    hidden = _import(client, responder, _indicator_for(incident_id, "203.0.113.66"))
    unknown_id = "incident--0d5e1c3b-2a4f-4b6d-8e9f-a1b2c3d4e5f6"
    unknown = _import(client, responder, _indicator_for(unknown_id, "203.0.113.66"))
    assert hidden.status_code == unknown.status_code == 422, hidden.get_data(as_text=True)
    assert [e["message"].replace(incident_id, "X") for e in hidden.json["errors"]] == [
        e["message"].replace(unknown_id, "X") for e in unknown.json["errors"]
    ], "the answer must not tell a hidden incident from one that does not exist"
    values = {o["value"] for o in client.get(f"{URL}/{filed['id']}", headers=operator).json["observables"]}
    assert "203.0.113.66" not in values and "203.0.113.5" in values


def test_finding_1_an_imported_object_is_never_marked_below_its_incident(client, operator, make_token, app):
    red = _file(client, operator, title="Red incident", tlp="red")
    incident_id = next(o for o in _export(client, operator, red["id"]) if o["type"] == "incident")["id"]
    objects = _indicator_for(incident_id, "198.51.100.9", marking=CLEAR)
    response = _import(client, operator, objects)
    assert response.status_code == 200, response.json
    with app.app_context():
        stored = db.session().execute(select(StixObject.tlp, StixObject.body).where(
            StixObject.stix_id.in_([o["id"] for o in objects]))).all()  # fmt: skip
    assert sorted(r.tlp for r in stored) == ["red", "red"]
    assert all(json.loads(r.body)["object_marking_refs"] == [RED] for r in stored)
    ids = {o["id"] for o in objects}
    for alias in ("public", "national"):
        assert not ids & {o["id"] for o in _collection(client, operator, alias)}, alias
    committee = make_token("committee", "dic")
    text = client.get("/api/v1/stix/objects", headers=committee).get_data(as_text=True)
    assert not ids & {o["id"] for o in json.loads(text)["objects"]}


def test_finding_1_an_imported_object_follows_its_incident_when_the_tlp_is_raised(client, operator, app):
    filed = _file(client, operator, title="Amber, later red", tlp="amber")
    amber = _export(client, operator, filed["id"])
    incident_id = next(o for o in amber if o["type"] == "incident")["id"]
    observables = {o["id"] for o in amber if o["type"] in ("ipv4-addr", "domain-name", "url")}
    objects = _indicator_for(incident_id, "198.51.100.10", marking=GREEN)
    assert _import(client, operator, objects).status_code == 200
    ids = {o["id"] for o in objects}
    assert ids <= {o["id"] for o in _collection(client, operator, "national")}
    assert client.patch(f"{URL}/{filed['id']}", json={"tlp": "red"}, headers=operator).status_code == 200
    _export(client, operator, filed["id"])  # an export projects the change first
    national = {o["id"] for o in _collection(client, operator, "national")}
    assert not ids & national, "imported objects follow the incident to red"
    assert not observables & national, "the amber copies of its observables left with it, as the push does"
    served = [o for o in _collection(client, operator, "working-group") if o["id"] in ids]
    assert len(served) == 2 and all(o["object_marking_refs"] == [RED] for o in served)


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999999"]


def _stix_with(number: str) -> str:
    ind = json.loads(stix2.Indicator(name="n", pattern="[ipv4-addr:value = '192.0.2.1']", pattern_type="stix",
                                     valid_from="2026-11-01T00:00:00Z").serialize())  # fmt: skip
    return json.dumps(ind)[:-1] + f', "x_score": {number}' + "}"


@pytest.mark.parametrize("number", NON_FINITE)
def test_finding_8_non_finite_numbers_are_refused_at_parse_on_every_json_route(client, operator, app, number):
    obj = _stix_with(number)
    bundle = _raw_bundle(obj)
    json_headers = {**operator, "Content-Type": "application/json"}
    response = client.post("/api/v1/stix/bundles", data=bundle, headers=json_headers)
    assert response.status_code == 422 and response.content_type == "application/problem+json", response.data
    assert response.json["errors"][0]["field"] == "body"
    taxii = client.post("/taxii2/ucsc/collections/working-group/objects/", data='{"objects": [' + obj + "]}",
                        headers={**operator, "Content-Type": TAXII})  # fmt: skip
    assert taxii.status_code == 400, taxii.data
    filed = _file(client, operator)
    for method, path, body in [
        ("post", URL, json.dumps(incident_payload())[:-1] + f', "x": {number}' + "}"),
        ("post", f"{URL}/bulk", '{"incidents": [' + json.dumps(incident_payload())[:-1] + f', "x": {number}' + "}]}"),
        ("post", f"{URL}/{filed['id']}/comments", '{"body": "hi", "x": ' + number + "}"),
        ("patch", f"{URL}/{filed['id']}", '{"description": ' + number + "}"),
        ("post", "/api/v1/contacts", '{"name": ' + number + "}"),
    ]:
        r = getattr(client, method)(path, data=body, headers={**operator, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.content_type == "application/problem+json", (path, r.data)
        assert r.json["errors"][0]["field"] == "body", (path, r.json)
    with app.app_context():
        bodies = db.session().scalars(select(StixObject.body)).all()
    assert not [b for b in bodies if "x_score" in b]


def _deep(n: int) -> str:
    return '{"a": ' + "[" * n + "]" * n + "}"


@pytest.mark.parametrize(
    "case",
    ["deep", "surrogate", "surrogate_escaped_backslash_is_fine"],
)
def test_finding_8_deep_json_and_lone_surrogates_get_4xx_problem_json_on_every_json_route(client, operator, case):
    filed = _file(client, operator)
    if case == "deep":
        inner = _deep(100_000)
    elif case == "surrogate":
        inner = '{"a": "\\ud800"}'
    else:
        inner = '{"a": "\\\\ud800"}'
    bad = case != "surrogate_escaped_backslash_is_fine"
    # In a STIX object the value would reach the store: nothing in the schema refuses it first.
    obj = _stix_with("1")[:-1] + ', "x_note": ' + inner + "}"
    stix_bundle = _raw_bundle(obj)
    routes = [
        ("post", URL, inner),
        ("post", f"{URL}/bulk", '{"incidents": [' + inner + "]}"),
        ("post", f"{URL}/{filed['id']}/comments", inner),
        ("patch", f"{URL}/{filed['id']}", inner),
        ("post", "/api/v1/contacts", inner),
        ("patch", "/api/v1/playbooks/ddos", inner),
        ("post", "/api/v1/stix/bundles", stix_bundle),
    ]
    for method, path, body in routes:
        r = getattr(client, method)(path, data=body, headers={**operator, "Content-Type": "application/json"})
        if not bad and path.endswith("/bundles"):
            assert r.status_code == 200, r.data
            continue
        assert 400 <= r.status_code < 500 and r.content_type == "application/problem+json", (path, r.status_code)
        assert r.json["errors"], path
        if bad:
            assert r.json["errors"][0]["field"] == "body", (path, r.json)
    taxii = client.post("/taxii2/ucsc/collections/working-group/objects/", data='{"objects": [' + obj + "]}",
                        headers={**operator, "Content-Type": TAXII})  # fmt: skip
    if bad:
        assert taxii.status_code == 400 and taxii.content_type == TAXII, taxii.data
    else:
        assert taxii.status_code == 202, taxii.data


def test_finding_8_a_repeated_id_and_version_inside_one_bundle_is_a_422_not_a_500(client, operator, app):
    ind = json.loads(stix2.Indicator(name="twice", pattern="[ipv4-addr:value = '192.0.2.7']", pattern_type="stix",
                                     valid_from="2026-11-01T00:00:00Z").serialize())  # fmt: skip
    response = _import(client, operator, [ind, {**ind, "name": "twice, other body"}])
    assert response.status_code == 422 and response.content_type == "application/problem+json", response.data
    assert ind["id"] in response.json["errors"][0]["field"]
    taxii = client.post("/taxii2/ucsc/collections/working-group/objects/", data=json.dumps({"objects": [ind, ind]}),
                        headers={**operator, "Content-Type": TAXII})  # fmt: skip
    assert taxii.status_code == 422, taxii.data
    with app.app_context():
        assert not db.session().scalars(select(StixObject.id).where(StixObject.stix_id == ind["id"])).all()


def test_finding_8_feeds_stay_json_whatever_was_stored_before(client, operator, app):
    ind = json.loads(stix2.Indicator(name="stored before the fix", pattern="[ipv4-addr:value = '192.0.2.8']",
                                     pattern_type="stix", valid_from="2026-11-01T00:00:00Z",
                                     object_marking_refs=[GREEN]).serialize())  # fmt: skip
    assert _import(client, operator, [ind]).status_code == 200
    with app.app_context():
        session = db.session()
        with session.begin():
            body = json.dumps(ind)[:-1] + ', "x_score": NaN, "x_top": Infinity, "x_text": "NaN and Infinity"}'
            session.execute(update(StixObject).where(StixObject.stix_id == ind["id"]).values(body=body))
    taxii = [f"/taxii2/ucsc/collections/{a}/objects/" for a in ("national", "working-group")]
    for path in ["/api/v1/stix/objects", *taxii]:
        text = client.get(path, headers=operator).get_data(as_text=True)
        objects = json.loads(text, parse_constant=lambda c, p=path: pytest.fail(f"{p} served {c}"))["objects"]
        served = next(o for o in objects if o["id"] == ind["id"])
        assert served["x_score"] is None and served["x_top"] is None and served["x_text"] == "NaN and Infinity"


def _status_line_without_the_body(port: int, path: str, headers: dict[str, str], content_type: str) -> bytes:
    """Send the head of a large POST and a slice of its body; the status line must come back before the rest."""
    length = 8 * 1024 * 1024
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Type: {content_type}",
            f"Content-Length: {length}", "Accept: */*"] + [f"{k}: {v}" for k, v in headers.items()]  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"x" * 65536)
        s.settimeout(5)
        started = time.monotonic()
        try:
            data = s.recv(4096)
        except TimeoutError:
            pytest.fail(f"{path}: no answer within 5 s: the server waits for the body before judging the caller")
        assert time.monotonic() - started < 5
    return data.split(b"\r\n", 1)[0]


def test_finding_8_unauthenticated_uploads_are_refused_before_the_body_is_read(live_server, operator):
    filed = _file_live(live_server, operator)
    port = live_server.port
    multipart = "multipart/form-data; boundary=xyz"
    cases = [
        (f"{URL}/{filed['id']}/evidence", multipart),
        ("/api/v1/stix/bundles", "application/json"),
        (URL, "application/json"),
        ("/taxii2/ucsc/collections/working-group/objects/", TAXII),
    ]
    for auth in ({}, {"Authorization": "Bearer ucsc_not-a-token"}):
        for path, content_type in cases:
            assert _status_line_without_the_body(port, path, auth, content_type).startswith(b"HTTP/1.1 401"), path
    # The web form upload: an anonymous browser gets no further than the size of a sign-in form.
    status = _status_line_without_the_body(port, f"/incidents/{filed['ref']}/evidence", {}, multipart)
    assert status.startswith(b"HTTP/1.1 413"), status


def _file_live(live_server, headers) -> dict:
    import requests

    response = requests.post(live_server.url + URL, json=incident_payload(), headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _upgrade_stix(app) -> None:
    """Run the STIX section of migration 0008 on the test database (the schema is already at head)."""
    import importlib.util

    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    path = ROOT / "migrations" / "versions" / "0008_trust_boundary.py"
    spec = importlib.util.spec_from_file_location("trust_boundary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with app.app_context(), db.engine().begin() as conn, Operations.context(MigrationContext.configure(conn)):
        module._upgrade_stix()


def test_finding_1_the_migration_removes_imported_versions_stored_over_the_projection(client, operator, app):
    filed = _file(client, operator, title="Projected title")
    incident = next(o for o in _export(client, operator, filed["id"]) if o["type"] == "incident")
    with app.app_context():
        session = db.session()
        with session.begin():
            row = session.scalar(select(StixObject).where(StixObject.stix_id == incident["id"], StixObject.current))
            forged = _later(incident, name="Defaced before the fix", object_marking_refs=[CLEAR])
            later = datetime(2099, 1, 1, tzinfo=UTC)
            session.execute(update(StixObject).where(StixObject.id == row.id).values(current=False))
            session.add(StixObject(stix_id=row.stix_id, type="incident", spec_version="2.1", created=row.created,
                                   modified=later, date_added=later,
                                   tlp="clear", key=None, incident_id=None, imported_by_id=row_user(session),
                                   body=json.dumps(forged), current=True))  # fmt: skip
    assert [o["name"] for o in _collection(client, operator, "public") if o["id"] == incident["id"]] == [
        "Defaced before the fix"
    ]
    _upgrade_stix(app)
    assert not [o for o in _collection(client, operator, "public") if o["id"] == incident["id"]]
    served = [o for o in _collection(client, operator, "working-group") if o["id"] == incident["id"]]
    assert [o["name"] for o in served] == [incident["name"]]


def row_user(session) -> int:
    from incidents.models import User

    return session.scalar(select(User.id).where(User.username == "op1"))


def test_finding_8_the_stix_import_command_refuses_a_file_that_is_not_json(app, make_token, tmp_path):
    make_token("admin", username="root")
    obj = _stix_with("NaN")
    path = tmp_path / "bundle.json"
    path.write_text(_raw_bundle(obj))
    result = app.test_cli_runner().invoke(args=["stix", "import", str(path)])
    assert result.exit_code != 0 and "not RFC 8259 JSON" in result.output, result.output
    with app.app_context():
        assert not db.session().scalars(select(StixObject.id).where(StixObject.body.contains("x_score"))).all()


def test_finding_8_a_detection_time_stix_cannot_write_is_refused_not_a_500_at_export(client, operator):
    filed = _file(client, operator)
    for stamp in ("0323-11-01T21:35:56Z", "1969-12-31T23:59:59Z"):
        response = client.patch(f"{URL}/{filed['id']}", json={"detected_at": stamp}, headers=operator)
        assert response.status_code == 422 and response.json["errors"][0]["field"] == "detected_at", response.json
        created = client.post(URL, json=incident_payload(detected_at=stamp), headers=operator)
        assert created.status_code == 422, created.json
    assert client.get(f"{URL}/{filed['id']}/stix", headers=operator).status_code == 200
