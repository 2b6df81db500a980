"""Who sees and who may change an incident: TLP, participants, organisations and roles."""

import pytest

from tests.conftest import incident_payload

URL = "/api/v1/incidents"
SUBRESOURCES = ("", "/events", "/comments", "/participants", "/classification")


def file(client, headers, **overrides) -> dict:
    r = client.post(URL, json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def listed_ids(client, headers, **query) -> set[int]:
    r = client.get(URL, query_string={"limit": 500, **query}, headers=headers)
    assert r.status_code == 200, r.json
    return {i["id"] for i in r.json["items"]}


def sees(client, headers, incident: dict) -> bool:
    """Whether `headers` can read the incident; a hidden one must also be absent from the list and search."""
    status = client.get(f"{URL}/{incident['id']}", headers=headers).status_code
    assert status in (200, 404)
    in_list = incident["id"] in listed_ids(client, headers)
    in_search = incident["id"] in listed_ids(client, headers, q=incident["ref"])
    assert in_list == in_search == (status == 200)
    return status == 200


def add_participant(client, headers, incident_id: int, **who) -> None:
    r = client.post(f"{URL}/{incident_id}/participants", json=who, headers=headers)
    assert r.status_code == 201, r.json


def test_amber_strict_is_invisible_outside_its_participant_organisations(client, make_token):
    filer = make_token("operator", "dic", username="filer")
    strict = file(client, filer, tlp="amber+strict", title="Bí mật nội bộ")
    shared = file(client, filer, tlp="amber", title="Thông tin mật chia sẻ")
    health_committee = make_token("committee", "doh")
    health_responder = make_token("responder", "doh")
    police_operator = make_token("operator", "police")
    assert not sees(client, health_committee, strict)
    assert not sees(client, police_operator, strict)
    assert sees(client, health_committee, shared), "amber reaches every role allowed the incident"
    assert sees(client, police_operator, shared)
    assert sees(client, make_token("operator", "dic"), strict), "the standing body takes part in every incident"
    add_participant(client, filer, strict["id"], organisation="doh")
    assert sees(client, health_committee, strict)
    assert sees(client, health_responder, strict)
    assert not sees(client, police_operator, strict)


def test_red_is_invisible_to_anyone_not_a_named_participant_user(client, make_token):
    filer = make_token("operator", "dic", username="filer")
    red = file(client, filer, tlp="red", title="Tài liệu mật bị lộ")
    colleague = make_token("operator", "dic", username="colleague")
    admin = make_token("admin", "dic", username="root")
    chair = make_token("committee", "ppc", username="chair")
    assert sees(client, filer, red), "the filer is named on what they file"
    for outsider in (colleague, admin, chair):
        assert not sees(client, outsider, red)
    add_participant(client, filer, red["id"], organisation="ppc")
    assert not sees(client, chair, red), "an organisation taking part is not enough for red"
    add_participant(client, filer, red["id"], user="chair")
    assert sees(client, chair, red)
    assert not sees(client, colleague, red)


@pytest.mark.parametrize("tlp", ["amber+strict", "red"])
def test_hidden_incident_answers_404_on_every_subresource_and_change(client, make_token, tlp):
    filer = make_token("operator", "dic", username="filer")
    incident = file(client, filer, tlp=tlp)
    outsider = make_token("admin" if tlp == "red" else "operator", "police")
    for path in (str(incident["id"]), incident["ref"]):
        for sub in SUBRESOURCES:
            r = client.get(f"{URL}/{path}{sub}", headers=outsider)
            assert r.status_code == 404, (path, sub)
            assert r.mimetype == "application/problem+json"
    attempts = [
        ("patch", "", {"priority": "P1"}),
        ("post", "/transitions", {"to": "triage"}),
        ("post", "/comments", {"body": "xem được không?"}),
        ("post", "/observables", {"observables": [{"type": "ipv4-addr", "value": "192.0.2.99"}]}),
        ("post", "/participants", {"user": "filer"}),
        ("post", "/classification", {"action": "propose"}),
    ]
    for method, sub, body in attempts:
        r = getattr(client, method)(f"{URL}/{incident['id']}{sub}", json=body, headers=outsider)
        assert r.status_code == 404, (method, sub, r.json)
    got = client.get(f"{URL}/{incident['id']}", headers=filer).json
    assert (got["status"], got["priority"], len(got["observables"]), len(got["participants"])) == ("new", "P2", 3, 2)
    assert client.get(f"{URL}/{incident['id']}/comments", headers=filer).json["items"] == []
    kinds = [e["kind"] for e in client.get(f"{URL}/{incident['id']}/events", headers=filer).json["items"]]
    assert kinds == ["incident.created"]


def test_intake_token_reads_back_only_what_it_filed(client, make_token, operator):
    siem = make_token("intake", "dic", username="siem")
    scanner = make_token("intake", "dic", username="scanner")
    mine = file(client, siem, tlp="clear")
    theirs = file(client, scanner, tlp="clear")
    by_operator = file(client, operator, tlp="clear")
    assert listed_ids(client, siem) == {mine["id"]}
    assert client.get(f"{URL}/{mine['id']}", headers=siem).status_code == 200
    for other in (theirs, by_operator):
        assert client.get(f"{URL}/{other['id']}", headers=siem).status_code == 404
        assert client.get(f"{URL}/{other['ref']}/events", headers=siem).status_code == 404
    assert listed_ids(client, operator) == {mine["id"], theirs["id"], by_operator["id"]}


def test_intake_token_never_reaches_another_filers_incident_through_its_dedup_key(client, make_token):
    siem = make_token("intake", "dic", username="siem")
    scanner = make_token("intake", "dic", username="scanner")
    first = file(client, siem, dedup_key="shared-alert")
    assert client.get(f"{URL}/{first['id']}", headers=scanner).status_code == 404
    repeat = client.post(URL, json=incident_payload(dedup_key="shared-alert"), headers=scanner)
    assert repeat.status_code == 201 and repeat.json["id"] != first["id"]
    assert client.get(f"{URL}/{first['id']}", headers=scanner).status_code == 404


def test_responder_sees_only_incidents_their_organisation_takes_part_in(client, make_token, operator):
    incident = file(client, operator, tlp="green")
    responder = make_token("responder", "doh")
    assert not sees(client, responder, incident)
    add_participant(client, operator, incident["id"], organisation="doh")
    assert sees(client, responder, incident)


def test_committee_and_intake_cannot_patch_an_incident(client, make_token):
    siem = make_token("intake")
    incident = file(client, siem)
    for headers in (make_token("committee", "ppc"), siem):
        r = client.patch(f"{URL}/{incident['id']}", json={"priority": "P1"}, headers=headers)
        assert r.status_code == 403
        assert r.mimetype == "application/problem+json"
    assert client.get(f"{URL}/{incident['id']}", headers=siem).json["priority"] == "P2"
    assert [e["kind"] for e in client.get(f"{URL}/{incident['id']}/events", headers=siem).json["items"]] == [
        "incident.created"
    ]


def test_only_committee_or_admin_decide_the_class(client, make_token):
    siem = make_token("intake", "dic")
    incident = file(client, siem)
    url = f"{URL}/{incident['id']}/classification"
    for headers in (make_token("operator", "dic"), make_token("responder", "dic"), siem):
        r = client.post(url, json={"action": "decide", "class": "serious"}, headers=headers)
        assert r.status_code == 403, r.json
        assert r.mimetype == "application/problem+json"
    assert client.get(url, headers=siem).json["class"] == "ordinary"
    for role in ("committee", "admin"):
        other = file(client, siem)
        r = client.post(
            f"{URL}/{other['id']}/classification", json={"action": "decide", "class": "serious"},
            headers=make_token(role, "ppc", username=f"{role}-decider"),
        )  # fmt: skip
        assert r.status_code == 200, (role, r.json)
        assert (r.json["class"], r.json["decided_by"]) == ("serious", f"{role}-decider")


def test_committee_cannot_propose_the_class(client, make_token, operator):
    incident = file(client, operator)
    r = client.post(
        f"{URL}/{incident['id']}/classification", json={"action": "propose"}, headers=make_token("committee", "ppc")
    )
    assert r.status_code == 403


def test_comment_with_a_stricter_tlp_is_hidden_from_who_may_not_see_it(client, make_token):
    filer = make_token("operator", "dic", username="filer")
    colleague = make_token("operator", "dic", username="colleague")
    incident = file(client, filer, tlp="amber")
    url = f"{URL}/{incident['id']}/comments"
    assert client.post(url, json={"body": "Ghi chú chung"}, headers=filer).json["tlp"] == "amber"
    secret = client.post(url, json={"body": "Nguồn tin mật", "tlp": "red"}, headers=filer)
    assert secret.status_code == 201
    assert [c["body"] for c in client.get(url, headers=filer).json["items"]] == ["Ghi chú chung", "Nguồn tin mật"]
    assert [c["body"] for c in client.get(url, headers=colleague).json["items"]] == ["Ghi chú chung"]
    edit = client.patch(f"{url}/{secret.json['id']}", json={"body": "đọc trộm"}, headers=colleague)
    assert edit.status_code == 404
