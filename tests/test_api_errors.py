"""Bad input answers application/problem+json with every field error, and leaves nothing half-written."""

import json

import pytest

from tests.conftest import incident_payload

URL = "/api/v1/incidents"
PROBLEM = "application/problem+json"


def problem(r, status: int) -> dict:
    """Check an RFC 9457 answer and return its body."""
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == PROBLEM
    body = r.json
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    assert body["type"] == "about:blank"
    assert all(set(e) == {"field", "message"} for e in body["errors"])
    return body


def fields(body: dict) -> list[str]:
    return [e["field"] for e in body["errors"]]


def stored(client, headers) -> list[dict]:
    return client.get(URL, query_string={"limit": 500}, headers=headers).json["items"]


def last_event_id(client) -> int:
    return client.get("/healthz").json["last_event_id"]


def test_every_field_error_is_listed_together(client, operator):
    body = incident_payload(category="virus", priority="P0", tlp="black", detected_at="hôm qua")
    del body["title"]
    got = problem(client.post(URL, json=body, headers=operator), 422)
    assert sorted(fields(got)) == ["category", "detected_at", "priority", "title", "tlp"]
    assert all(e["message"] for e in got["errors"])


def test_unknown_fields_are_refused_at_every_depth(client, operator):
    body = incident_payload(colour="đỏ", status="closed")
    body["reporter"]["nickname"] = "A"
    body["observables"][1]["confidence"] = 90
    got = problem(client.post(URL, json=body, headers=operator), 422)
    assert sorted(fields(got)) == ["colour", "observables[1].confidence", "reporter.nickname", "status"]
    assert {e["message"] for e in got["errors"]} == {"unknown field"}
    assert stored(client, operator) == []


def test_timestamps_without_a_zone_are_refused(client, operator):
    for stamp in ("2026-11-20T08:30:00", "2026-11-20 08:30:00", "2026-11-20"):
        got = problem(client.post(URL, json=incident_payload(detected_at=stamp), headers=operator), 422)
        assert fields(got) == ["detected_at"], stamp
    assert stored(client, operator) == []


def test_timestamps_with_any_offset_are_accepted_and_returned_in_utc(client, operator):
    for stamp in ("2026-11-20T01:30:00Z", "2026-11-20T08:30:00+07:00", "2026-11-19T20:30:00-05:00"):
        created = client.post(URL, json=incident_payload(detected_at=stamp), headers=operator)
        assert created.status_code == 201, created.json
        got = client.get(created.headers["Location"], headers=operator).json
        assert got["detected_at"] == "2026-11-20T01:30:00.000000+00:00", stamp


def test_body_that_is_not_json_is_415(client, operator):
    payload = json.dumps(incident_payload())
    for data, content_type in ((payload, "text/plain"), ("title=x&category=dos", "application/x-www-form-urlencoded"),
                               (payload, None)):  # fmt: skip
        headers = {**operator, **({"Content-Type": content_type} if content_type else {})}
        got = problem(client.post(URL, data=data, headers=headers), 415)
        assert fields(got) == ["Content-Type"]
    assert stored(client, operator) == []


def test_malformed_json_is_a_client_error(client, operator):
    for raw in (b'{"title": "x", "category": "dos"', b"[]", b"null", b'"a string"', b"", b"\xff", b'{"title": 1e999}'):
        r = client.post(URL, data=raw, headers={**operator, "Content-Type": "application/json"})
        problem(r, 422)
    assert stored(client, operator) == []


@pytest.mark.parametrize("app_config", [{"MAX_CONTENT_LENGTH": 4096}])
def test_body_over_the_configured_size_is_413(client, operator):
    big = incident_payload(description="x" * 5000)
    got = problem(client.post(URL, json=big, headers=operator), 413)
    assert fields(got) == ["body"]
    got = problem(client.post(f"{URL}/bulk", json={"incidents": [incident_payload()] * 10}, headers=operator), 413)
    assert stored(client, operator) == []
    assert client.post(URL, json=incident_payload(), headers=operator).status_code == 201


def test_default_body_limit_is_10_mb(client, operator):
    r = client.post(URL, data=b" " * (10 * 1024 * 1024 + 1), headers={**operator, "Content-Type": "application/json"})
    problem(r, 413)


@pytest.mark.parametrize("app_config", [{"LIMIT_TITLE": 20, "LIMIT_DESCRIPTION": 100, "LIMIT_OBSERVABLES": 2}])
def test_configured_field_limits_are_enforced(client, operator):
    body = incident_payload(title="x" * 21, description="y" * 101)
    got = problem(client.post(URL, json=body, headers=operator), 422)
    assert sorted(fields(got)) == ["description", "observables", "title"]
    ok = incident_payload(title="x" * 20, description="y" * 100, observables=body["observables"][:2])
    assert client.post(URL, json=ok, headers=operator).status_code == 201


def test_default_field_limits_are_the_issues(client, operator):
    obs = [{"type": "ipv4-addr", "value": f"10.{n // 256}.{n % 256}.1"} for n in range(1001)]
    body = incident_payload(title="t" * 301, description="d" * 50_001, observables=obs)
    got = problem(client.post(URL, json=body, headers=operator), 422)
    assert sorted(fields(got)) == ["description", "observables", "title"]
    body = incident_payload(title="t" * 300, description="d" * 50_000, observables=obs[:1000])
    created = client.post(URL, json=body, headers=operator)
    assert created.status_code == 201
    assert len(client.get(created.headers["Location"], headers=operator).json["observables"]) == 1000


def test_failed_bulk_leaves_no_incident_occurrence_event_reference_or_idempotency_key(client, operator):
    existing = client.post(URL, json=incident_payload(dedup_key="repeat-me"), headers=operator).json
    events_before = last_event_id(client)
    items = [incident_payload(dedup_key="repeat-me"), incident_payload(), incident_payload(affected_system="khong-co")]
    headers = {**operator, "Idempotency-Key": "batch-7"}
    got = problem(client.post(f"{URL}/bulk", json={"incidents": items}, headers=headers), 422)
    assert fields(got) == ["incidents[2].affected_system"]
    assert [i["id"] for i in stored(client, operator)] == [existing["id"]]
    assert client.get(f"{URL}/{existing['id']}", headers=operator).json["occurrence_count"] == 1
    assert last_event_id(client) == events_before
    items[2] = incident_payload()
    retried = client.post(f"{URL}/bulk", json={"incidents": items}, headers=headers)
    assert retried.status_code == 201, "the failed request did not claim the Idempotency-Key"
    assert "Idempotent-Replayed" not in retried.headers
    assert [i["ref"][-5:] for i in retried.json["items"]] == ["00001", "00002", "00003"]


def test_missing_or_unknown_token_is_401(client):
    for headers in ({}, {"Authorization": "Bearer ucsc_nope"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        r = client.get(URL, headers=headers)
        problem(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    problem(client.post(URL, json=incident_payload()), 401)


def test_unknown_incident_and_route_are_404_and_wrong_method_405(client, operator):
    problem(client.get(f"{URL}/999999", headers=operator), 404)
    problem(client.get(f"{URL}/TH-2026-99999", headers=operator), 404)
    problem(client.get("/api/v1/nothing-here", headers=operator), 404)
    r = client.delete(URL, headers=operator)
    problem(r, 405)
    assert "POST" in r.headers["Allow"]


def test_problem_carries_the_request_id(client, operator):
    r = client.post(URL, json={"title": ""}, headers={**operator, "X-Request-ID": "siem-req-123"})
    body = problem(r, 422)
    assert body["request_id"] == r.headers["X-Request-ID"] == "siem-req-123"


def test_overlong_idempotency_key_is_refused(client, operator):
    got = problem(client.post(URL, json=incident_payload(), headers={**operator, "Idempotency-Key": "k" * 256}), 400)
    assert fields(got) == ["Idempotency-Key"]
    assert stored(client, operator) == []
