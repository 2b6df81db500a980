"""The response procedure of Circular 20 Art. 11, driven through the API."""

from incidents.enums import Status
from incidents.lifecycle import TRANSITIONS
from tests.conftest import incident_payload

# Written from Circular 20 Art. 11 and the design's status list, not from incidents/lifecycle.py:
# 1a receive → 1a verify/classify → 1b–1e first response → 2 contain → 3a eradicate → 3b restore →
# 3c check (back to 2 when unstable) → 4 review → closed; reopen returns to 2; a report that is no
# incident is rejected at 1a; a duplicate may be merged while the incident is open.
ALLOWED = {
    ("new", "triage"), ("new", "rejected"), ("new", "merged"),
    ("triage", "first_response"), ("triage", "rejected"), ("triage", "merged"),
    ("first_response", "containment"), ("first_response", "merged"),
    ("containment", "eradication"), ("containment", "merged"),
    ("eradication", "recovery"), ("eradication", "merged"),
    ("recovery", "assessment"), ("recovery", "merged"),
    ("assessment", "review"), ("assessment", "containment"), ("assessment", "merged"),
    ("review", "closed"), ("review", "merged"),
    ("closed", "containment"),
}  # fmt: skip
STATUSES = [
    "new", "triage", "first_response", "containment", "eradication", "recovery", "assessment", "review",
    "closed", "rejected", "merged",
]  # fmt: skip
MAIN_PATH = ["triage", "first_response", "containment", "eradication", "recovery", "assessment", "review", "closed"]
RESOLUTION = "Đã chặn nguồn tấn công, khôi phục dịch vụ, rút kinh nghiệm."


def allowed_from(state: str) -> list[str]:
    """The allowed targets of `state` in the design's order, as the 409 body should list them."""
    return [s for s in STATUSES if (state, s) in ALLOWED]


def file(client, headers, **overrides) -> dict:
    r = client.post("/api/v1/incidents", json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def end_report(client, headers, incident_id: int) -> None:
    """Closing requires the end report (Form 04, Circular 20 Art. 9.2.b): make one first."""
    r = client.post(
        f"/api/v1/incidents/{incident_id}/reports/end", json={"handling_result": RESOLUTION}, headers=headers
    )
    assert r.status_code == 201, r.json


def move(client, headers, incident_id: int, to: str, **extra) -> dict:
    body = {"to": to, **extra}
    if to == "closed":
        body.setdefault("resolution", RESOLUTION)
        end_report(client, headers, incident_id)
    r = client.post(f"/api/v1/incidents/{incident_id}/transitions", json=body, headers=headers)
    assert r.status_code == 200, (to, r.json)
    assert r.json["status"] == to
    return r.json


def drive(client, headers, incident_id: int, state: str, *, merge_into: str | None = None) -> dict:
    """Move a new incident along the procedure until it is in `state`."""
    if state == "rejected":
        return move(client, headers, incident_id, "rejected")
    if state == "merged":
        return move(client, headers, incident_id, "merged", merged_into=merge_into)
    if state == "new":
        return client.get(f"/api/v1/incidents/{incident_id}", headers=headers).json
    for step in MAIN_PATH[: MAIN_PATH.index(state) + 1]:
        current = move(client, headers, incident_id, step)
    return current


def file_many(client, headers, count: int) -> list[dict]:
    r = client.post("/api/v1/incidents/bulk", json={"incidents": [incident_payload()] * count}, headers=headers)
    assert r.status_code == 201, r.json
    return r.json["items"]


def test_transition_table_is_circular_20_art_11():
    assert set(TRANSITIONS) == set(Status)
    assert {(str(a), str(b)) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED
    assert set(STATUSES) == {s.value for s in Status}


def test_every_pair_outside_the_table_is_refused_with_409_and_the_allowed_targets(client, operator):
    target, walker, rejected, merged = file_many(client, operator, 4)
    move(client, operator, rejected["id"], "rejected")
    move(client, operator, merged["id"], "merged", merged_into=target["ref"])
    checked = set()

    def refuse_all_but_allowed(incident_id: int, state: str) -> None:
        for to in STATUSES:
            if (state, to) in ALLOWED:
                continue
            body = {"to": to, "resolution": RESOLUTION} if to == "closed" else {"to": to}
            if to == "merged":
                body["merged_into"] = target["ref"]
            r = client.post(f"/api/v1/incidents/{incident_id}/transitions", json=body, headers=operator)
            assert r.status_code == 409, (state, to, r.json)
            assert r.mimetype == "application/problem+json"
            assert r.json["allowed"] == allowed_from(state), (state, to)
            checked.add((state, to))
        after = client.get(f"/api/v1/incidents/{incident_id}", headers=operator).json
        assert after["status"] == state
        assert after["allowed_transitions"] == allowed_from(state)

    refuse_all_but_allowed(walker["id"], "new")
    for state in MAIN_PATH:
        move(client, operator, walker["id"], state)
        refuse_all_but_allowed(walker["id"], state)
    refuse_all_but_allowed(rejected["id"], "rejected")
    refuse_all_but_allowed(merged["id"], "merged")
    assert checked == {(a, b) for a in STATUSES for b in STATUSES} - ALLOWED
    events = client.get(f"/api/v1/incidents/{walker['id']}/events", headers=operator).json["items"]
    moves = [(e["data"]["from"], e["data"]["to"]) for e in events if e["kind"] == "incident.status_changed"]
    assert moves == list(zip(["new", *MAIN_PATH], MAIN_PATH, strict=False)), "a refused move writes no event"


def test_every_allowed_pair_is_accepted_through_the_api(client, operator):
    target, *fresh = file_many(client, operator, 13)
    # Incidents waiting in each state: a move along one pair leaves its incident ready for the next.
    ready: dict[str, list[int]] = {state: [] for state in STATUSES}
    for source in ["new", *MAIN_PATH]:
        for to in allowed_from(source):
            if ready[source]:
                incident_id = ready[source].pop()
            else:
                incident_id = fresh.pop()["id"] if fresh else file(client, operator)["id"]
                drive(client, operator, incident_id, source)
            extra = {"merged_into": target["ref"]} if to == "merged" else {}
            moved = move(client, operator, incident_id, to, **extra)
            assert moved["allowed_transitions"] == allowed_from(to)
            ready[to].append(incident_id)
    assert fresh == []


def test_closing_without_a_resolution_summary_is_refused(client, operator):
    incident = file(client, operator)
    drive(client, operator, incident["id"], "review")
    end_report(client, operator, incident["id"])  # so that the only thing missing is the summary
    url = f"/api/v1/incidents/{incident['id']}/transitions"
    r = client.post(url, json={"to": "closed"}, headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["resolution"]
    got = client.get(f"/api/v1/incidents/{incident['id']}", headers=operator).json
    assert got["status"] == "review"
    assert got["closed_at"] is None
    r = client.post(url, json={"to": "closed", "resolution": RESOLUTION}, headers=operator)
    assert r.status_code == 200
    assert r.json["resolution"] == RESOLUTION
    assert r.json["closed_at"] is not None


def test_contained_and_resolved_are_stamped_on_first_entry_only(client, operator):
    incident = file(client, operator)
    iid = incident["id"]
    at_containment = drive(client, operator, iid, "containment")
    assert at_containment["contained_at"] is None
    eradication = move(client, operator, iid, "eradication")
    contained_at = eradication["contained_at"]
    assert contained_at == eradication["status_changed_at"]
    assert eradication["resolved_at"] is None
    move(client, operator, iid, "recovery")
    move(client, operator, iid, "assessment")
    review = move(client, operator, iid, "review")
    resolved_at = review["resolved_at"]
    assert resolved_at == review["status_changed_at"]
    move(client, operator, iid, "closed")
    reopened = move(client, operator, iid, "containment", note="Phát hiện lại lưu lượng bất thường")
    assert reopened["closed_at"] is None
    for step in ("eradication", "recovery", "assessment", "review"):
        again = move(client, operator, iid, step)
    assert again["contained_at"] == contained_at
    assert again["resolved_at"] == resolved_at
    assert again["status_changed_at"] > resolved_at


def test_merging_requires_the_incident_it_duplicates(client, operator):
    original = file(client, operator, title="Sự cố gốc")
    duplicate = file(client, operator)
    url = f"/api/v1/incidents/{duplicate['id']}/transitions"
    for body in (
        {"to": "merged"},
        {"to": "merged", "merged_into": "TH-1999-99999"},
        {"to": "merged", "merged_into": duplicate["ref"]},
        {"to": "triage", "merged_into": original["ref"]},
    ):
        r = client.post(url, json=body, headers=operator)
        assert r.status_code == 422, body
        assert [e["field"] for e in r.json["errors"]] == ["merged_into"]
    assert client.get(f"/api/v1/incidents/{duplicate['id']}", headers=operator).json["status"] == "new"
    merged = move(client, operator, duplicate["id"], "merged", merged_into=original["ref"])
    assert merged["merged_into"] == original["ref"]
    assert merged["allowed_transitions"] == []
    r = client.post(
        f"/api/v1/incidents/{file(client, operator)['id']}/transitions",
        json={"to": "merged", "merged_into": duplicate["ref"]}, headers=operator,
    )  # fmt: skip
    assert r.status_code == 422, "an incident cannot be merged into one that is itself merged"


def test_every_status_change_is_an_event_with_actor_time_and_note(client, make_token):
    headers = make_token("operator", username="soc-lan")
    incident = file(client, headers)
    move(client, headers, incident["id"], "triage", note="Đã xác minh với chủ quản")
    moved = move(client, headers, incident["id"], "first_response")
    events = client.get(f"/api/v1/incidents/{incident['id']}/events", headers=headers).json["items"]
    changes = [e for e in events if e["kind"] == "incident.status_changed"]
    assert [(e["data"]["from"], e["data"]["to"], e["note"]) for e in changes] == [
        ("new", "triage", "Đã xác minh với chủ quản"),
        ("triage", "first_response", None),
    ]
    assert {e["actor"] for e in changes} == {"soc-lan"}
    assert changes[-1]["at"] == moved["status_changed_at"]


def test_transition_to_an_unknown_status_is_invalid_not_a_conflict(client, operator):
    incident = file(client, operator)
    r = client.post(f"/api/v1/incidents/{incident['id']}/transitions", json={"to": "done"}, headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["to"]


def test_committee_and_intake_cannot_move_incidents(client, make_token):
    intake = make_token("intake")
    incident = file(client, intake)
    for headers in (make_token("committee"), intake):
        r = client.post(f"/api/v1/incidents/{incident['id']}/transitions", json={"to": "triage"}, headers=headers)
        assert r.status_code == 403, r.json
    assert client.get(f"/api/v1/incidents/{incident['id']}", headers=intake).json["status"] == "new"
