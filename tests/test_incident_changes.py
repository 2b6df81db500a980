"""Changing an incident: fields, comments with their history, participants, class, observables, timeline."""

from tests.conftest import incident_payload

URL = "/api/v1/incidents"


def file(client, headers, **overrides) -> dict:
    r = client.post(URL, json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    return client.get(r.headers["Location"], headers=headers).json


def timeline(client, headers, incident_id: int) -> list[dict]:
    r = client.get(f"{URL}/{incident_id}/events", query_string={"limit": 500}, headers=headers)
    assert r.status_code == 200, r.json
    return r.json["items"]


def kinds(client, headers, incident_id: int) -> list[str]:
    return [e["kind"] for e in timeline(client, headers, incident_id)]


def test_patch_changes_fields_and_records_old_and_new_values(client, make_token):
    headers = make_token("operator", username="soc-minh")
    incident = file(client, headers)
    change = {
        "title": "DDoS vào Cổng DVC (đã xác minh)",
        "priority": "P1",
        "tlp": "green",
        "affected_system": "cong-ttdt",
        "reporter": {"name": "Lê Văn C"},
    }
    r = client.patch(f"{URL}/{incident['id']}", json=change, headers=headers)
    assert r.status_code == 200, r.json
    assert (r.json["title"], r.json["priority"], r.json["tlp"]) == ("DDoS vào Cổng DVC (đã xác minh)", "P1", "green")
    assert r.json["affected_system"]["code"] == "cong-ttdt"
    assert r.json["reporter"] == {
        "name": "Lê Văn C",
        "organisation": None,
        "address": None,
        "phone": None,
        "email": None,
    }
    assert r.json["description"] == incident["description"], "fields not sent are left alone"
    assert r.json["updated_at"] > incident["updated_at"]
    event = timeline(client, headers, incident["id"])[-1]
    assert (event["kind"], event["actor"]) == ("incident.updated", "soc-minh")
    changes = event["data"]["changes"]
    assert changes["priority"] == ["P2", "P1"]
    assert changes["tlp"] == ["amber", "green"]
    assert changes["affected_system"] == ["cong-dvc", "cong-ttdt"]
    assert changes["reporter_organisation"] == ["Sở TT&TT", None]
    assert event["at"] == r.json["updated_at"]


def test_patch_with_the_same_values_writes_no_event(client, operator):
    incident = file(client, operator)
    r = client.patch(f"{URL}/{incident['id']}", json={"priority": "P2", "title": incident["title"]}, headers=operator)
    assert r.status_code == 200
    assert r.json["updated_at"] == incident["updated_at"]
    assert kinds(client, operator, incident["id"]) == ["incident.created"]


def test_patch_refuses_status_class_unknown_fields_nulls_and_empty_bodies(client, operator):
    incident = file(client, operator)
    url = f"{URL}/{incident['id']}"
    for body, fields in (
        ({"status": "closed"}, ["status"]),
        ({"class": "serious"}, ["class"]),
        ({"ref": "TH-2000-00001", "colour": "red"}, ["ref", "colour"]),
        ({"title": None}, ["body"]),
        ({"title": ""}, ["title"]),
        ({}, ["body"]),
        ({"affected_system": "khong-co"}, ["affected_system"]),
        ({"detected_at": "2026-11-20 08:30"}, ["detected_at"]),
    ):
        r = client.patch(url, json=body, headers=operator)
        assert r.status_code == 422, body
        assert [e["field"] for e in r.json["errors"]] == fields, body
    assert client.get(url, headers=operator).json == incident
    assert kinds(client, operator, incident["id"]) == ["incident.created"]


def test_comment_edits_keep_the_earlier_text(client, make_token):
    author = make_token("operator", username="author")
    incident = file(client, author)
    url = f"{URL}/{incident['id']}/comments"
    created = client.post(url, json={"body": "Đã chặn IP 192.0.2.10"}, headers=author)
    assert created.status_code == 201
    assert (created.json["author"], created.json["tlp"], created.json["edits"]) == ("author", "amber", [])
    cid = created.json["id"]
    first = client.patch(f"{url}/{cid}", json={"body": "Đã chặn IP 192.0.2.10 và 192.0.2.11"}, headers=author)
    second = client.patch(f"{url}/{cid}", json={"tlp": "green"}, headers=author)
    assert first.status_code == second.status_code == 200
    assert second.json["body"] == "Đã chặn IP 192.0.2.10 và 192.0.2.11"
    assert second.json["tlp"] == "green"
    assert [(e["body"], e["tlp"]) for e in second.json["edits"]] == [
        ("Đã chặn IP 192.0.2.10", "amber"),
        ("Đã chặn IP 192.0.2.10 và 192.0.2.11", "amber"),
    ]
    assert second.json["created_at"] == created.json["created_at"] < second.json["updated_at"]
    listed = client.get(url, headers=author).json["items"]
    assert listed == [second.json]
    assert kinds(client, author, incident["id"])[1:] == ["comment.created", "comment.edited", "comment.edited"]


def test_only_the_author_or_an_admin_edits_a_comment(client, make_token):
    author = make_token("operator", username="author")
    incident = file(client, author)
    url = f"{URL}/{incident['id']}/comments"
    cid = client.post(url, json={"body": "gốc"}, headers=author).json["id"]
    r = client.patch(f"{url}/{cid}", json={"body": "sửa trộm"}, headers=make_token("operator"))
    assert r.status_code == 403
    r = client.patch(f"{url}/{cid}", json={"body": "admin sửa"}, headers=make_token("admin"))
    assert r.status_code == 200
    assert [e["body"] for e in r.json["edits"]] == ["gốc"]
    assert client.patch(f"{url}/999999", json={"body": "x"}, headers=author).status_code == 404
    assert client.patch(f"{url}/{cid}", json={}, headers=author).status_code == 422


def test_committee_member_may_comment_on_what_they_see(client, make_token, operator):
    incident = file(client, operator)
    r = client.post(
        f"{URL}/{incident['id']}/comments", json={"body": "Chỉ đạo: báo cáo trước 17h"}, headers=make_token("committee")
    )
    assert r.status_code == 201


def test_comment_list_pages_oldest_first(client, operator):
    incident = file(client, operator)
    url = f"{URL}/{incident['id']}/comments"
    for n in range(5):
        client.post(url, json={"body": f"ghi chú {n}"}, headers=operator)
    first = client.get(url, query_string={"limit": 3}, headers=operator).json
    rest = client.get(url, query_string={"limit": 3, "cursor": first["next_cursor"]}, headers=operator).json
    assert [c["body"] for c in first["items"] + rest["items"]] == [f"ghi chú {n}" for n in range(5)]
    assert rest["next_cursor"] is None


def test_participants_are_added_listed_and_removed(client, make_token, operator):
    make_token("responder", "doh", username="bs-hoa")
    incident = file(client, operator)
    url = f"{URL}/{incident['id']}/participants"
    assert {(p["user"], p["organisation"], p["role"]) for p in client.get(url, headers=operator).json["items"]} == {
        ("op1", None, "reporter"), (None, "dic", "lead"),
    }, "the filer and the standing body take part from the start"  # fmt: skip
    user = client.post(url, json={"user": "bs-hoa", "role": "lead"}, headers=operator)
    org = client.post(url, json={"organisation": "police"}, headers=operator)
    assert user.status_code == org.status_code == 201
    assert (user.json["user"], user.json["role"]) == ("bs-hoa", "lead")
    assert (org.json["organisation"], org.json["role"]) == ("police", "member")
    assert client.post(url, json={"organisation": "police"}, headers=operator).status_code == 409
    for body, field in (
        ({"user": "khong-co"}, "user"),
        ({"organisation": "mars"}, "organisation"),
        ({"user": "bs-hoa", "organisation": "doh"}, "body"),
        ({"user": "bs-hoa", "role": "boss"}, "role"),
    ):
        r = client.post(url, json=body, headers=operator)
        assert r.status_code == 422, body
        assert [e["field"] for e in r.json["errors"]] == [field], body
    assert client.delete(f"{url}/{org.json['id']}", headers=operator).status_code == 204
    assert client.delete(f"{url}/{org.json['id']}", headers=operator).status_code == 404
    names = {(p["user"], p["organisation"]) for p in client.get(url, headers=operator).json["items"]}
    assert names == {("op1", None), (None, "dic"), ("bs-hoa", None)}
    events = [e for e in timeline(client, operator, incident["id"]) if e["kind"].startswith("incident.participant")]
    assert [(e["kind"], e["data"]["user"], e["data"]["organisation"]) for e in events] == [
        ("incident.participant_added", "bs-hoa", None),
        ("incident.participant_added", None, "police"),
        ("incident.participant_removed", None, "police"),
    ]


def test_participants_named_at_filing_take_part(client, make_token, operator):
    make_token("responder", "doh", username="bs-hoa")
    body = incident_payload(
        participants=[{"user": "bs-hoa", "role": "lead"}, {"organisation": "police", "role": "observer"}]
    )
    created = client.post(URL, json=body, headers=operator)
    got = client.get(created.headers["Location"], headers=operator).json
    assert {(p["user"], p["organisation"], p["role"]) for p in got["participants"]} == {
        ("op1", None, "reporter"), (None, "dic", "lead"), ("bs-hoa", None, "lead"), (None, "police", "observer"),
    }  # fmt: skip


def test_responders_and_committee_cannot_change_participants(client, make_token, operator):
    incident = file(client, operator)
    url = f"{URL}/{incident['id']}/participants"
    for role in ("responder", "committee"):
        assert client.post(url, json={"organisation": "police"}, headers=make_token(role, "dic")).status_code == 403


def test_observables_are_added_once_and_searchable(client, operator):
    incident = file(client, operator)
    url = f"{URL}/{incident['id']}/observables"
    body = {
        "observables": [
            {"type": "ipv4-addr", "value": "192.0.2.10"},
            {"type": "domain-name", "value": "C2.Example.NET"},
        ]
    }
    r = client.post(url, json=body, headers=operator)
    assert r.status_code == 200, r.json
    assert [o["value"] for o in r.json["observables"]] == [o["value"] for o in incident["observables"]] + [
        "c2.example.net"
    ]
    again = client.post(url, json=body, headers=operator)
    assert again.json["observables"] == r.json["observables"]
    added = [e for e in timeline(client, operator, incident["id"]) if e["kind"] == "incident.observables_added"]
    assert [e["data"]["observables"] for e in added] == [[{"type": "domain-name", "value": "c2.example.net"}]]
    found = client.get(URL, query_string={"q": "c2.example"}, headers=operator).json["items"]
    assert [i["id"] for i in found] == [incident["id"]]


def test_invalid_observables_add_nothing(client, operator):
    incident = file(client, operator)
    body = {
        "observables": [{"type": "domain-name", "value": "ok.example.net"}, {"type": "ipv4-addr", "value": "999.1.1.1"}]
    }
    r = client.post(f"{URL}/{incident['id']}/observables", json=body, headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["observables[1].value"]
    assert client.get(f"{URL}/{incident['id']}", headers=operator).json["observables"] == incident["observables"]


def test_serious_class_is_proposed_then_decided_and_both_are_on_the_timeline(client, make_token):
    operator = make_token("operator", "dic", username="soc-an")
    chair = make_token("committee", "ppc", username="chu-tich")
    incident = file(client, operator, affected_system="qlvb")  # security level 4
    url = f"{URL}/{incident['id']}/classification"
    before = client.get(url, headers=operator).json
    assert (before["class"], before["level_condition"], before["all_conditions_hold"]) == ("ordinary", True, False)
    proposed = client.post(
        url, json={"action": "propose", "conditions": ["service_interruption", "spread"], "beyond_capacity": True,
                   "note": "Gián đoạn toàn tỉnh"},
        headers=operator,
    )  # fmt: skip
    assert proposed.status_code == 200, proposed.json
    assert proposed.json["class"] == "ordinary", "a proposal does not change the class"
    assert proposed.json["conditions"] == ["service_interruption", "spread"]
    assert proposed.json["impact_condition"] is proposed.json["beyond_capacity"] is True
    assert proposed.json["all_conditions_hold"] is True, "level 4, an impact condition and beyond capacity"
    assert (proposed.json["proposed_by"], proposed.json["proposal_note"]) == ("soc-an", "Gián đoạn toàn tỉnh")
    decided = client.post(url, json={"action": "decide", "class": "serious", "note": "Đồng ý"}, headers=chair)
    assert decided.status_code == 200, decided.json
    assert (decided.json["class"], decided.json["decided_by"], decided.json["proposed_by"]) == (
        "serious",
        "chu-tich",
        "soc-an",
    )
    assert client.get(f"{URL}/{incident['id']}", headers=operator).json["class"] == "serious"
    events = [e for e in timeline(client, operator, incident["id"]) if e["kind"].startswith("incident.classification")]
    assert [(e["kind"], e["actor"], e["note"]) for e in events] == [
        ("incident.classification_proposed", "soc-an", "Gián đoạn toàn tỉnh"),
        ("incident.classification_decided", "chu-tich", "Đồng ý"),
    ]
    assert events[-1]["data"]["assessment"]["all_conditions_hold"] is True
    again = client.post(url, json={"action": "propose"}, headers=operator)
    assert again.status_code == 409


def test_level_condition_follows_the_affected_systems_security_level(client, operator):
    low = file(client, operator, affected_system="cong-dvc")  # level 3
    high = file(client, operator, affected_system="cong-ttdt")  # level 4
    assert client.get(f"{URL}/{low['id']}/classification", headers=operator).json["level_condition"] is False
    assert client.get(f"{URL}/{high['id']}/classification", headers=operator).json["level_condition"] is True


def test_classification_refuses_unknown_actions_and_conditions(client, operator):
    incident = file(client, operator)
    url = f"{URL}/{incident['id']}/classification"
    r = client.post(url, json={"action": "vote", "conditions": ["alien_invasion"]}, headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["action", "conditions[0]"]
    r = client.post(url, json={"action": "propose", "class": "ordinary"}, headers=operator)
    assert r.status_code == 422


def test_timeline_lists_every_change_oldest_first_and_pages(client, operator, make_token):
    incident = file(client, operator)
    iid = incident["id"]
    client.post(f"{URL}/{iid}/transitions", json={"to": "triage", "note": "xác minh"}, headers=operator)
    client.patch(f"{URL}/{iid}", json={"priority": "P1"}, headers=operator)
    client.post(f"{URL}/{iid}/comments", json={"body": "ghi chú"}, headers=operator)
    client.post(f"{URL}/{iid}/participants", json={"organisation": "police"}, headers=operator)
    client.post(
        f"{URL}/{iid}/observables",
        json={"observables": [{"type": "ipv4-addr", "value": "192.0.2.77"}]},
        headers=operator,
    )
    client.post(f"{URL}/{iid}/classification", json={"action": "propose"}, headers=operator)
    client.post(f"{URL}/{iid}/classification", json={"action": "decide"}, headers=make_token("committee"))
    expected = [
        "incident.created", "incident.status_changed", "incident.updated", "comment.created",
        "incident.participant_added", "incident.observables_added", "incident.classification_proposed",
        "incident.classification_decided",
    ]  # fmt: skip
    events = timeline(client, operator, iid)
    assert [e["kind"] for e in events] == expected
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert all(e["at"].endswith("+00:00") for e in events)
    assert all(e["data"]["ref"] == incident["ref"] for e in events)
    first = client.get(f"{URL}/{iid}/events", query_string={"limit": 5}, headers=operator).json
    rest = client.get(
        f"{URL}/{iid}/events", query_string={"limit": 5, "cursor": first["next_cursor"]}, headers=operator
    ).json
    assert first["items"] + rest["items"] == events
    assert rest["next_cursor"] is None
    assert (
        client.get(f"{URL}/{iid}/events", headers=operator).json
        == client.get(f"{URL}/{iid}/events", headers=operator).json
    )
    r = client.get(f"{URL}/{iid}/events", query_string={"cursor": "garbage"}, headers=operator)
    assert r.status_code == 422
