"""Filing incidents: references, Form 03 fields, Idempotency-Key, dedup_key and the bulk endpoint."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import select

from incidents.models import Event, Incident
from incidents.text import fold
from tests.conftest import incident_payload

URL = "/api/v1/incidents"
RESOLUTION = "Đã xử lý xong, có báo cáo kết thúc."


def listed(client, headers, **query) -> list[dict]:
    r = client.get(URL, query_string={"limit": 500, **query}, headers=headers)
    assert r.status_code == 200, r.json
    return r.json["items"]


def parallel(n: int, call) -> list:
    """Run `call(i)` on n threads released together, so the requests really overlap."""
    barrier = threading.Barrier(n)

    def run(i: int):
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def test_filing_answers_201_with_location_and_a_local_year_reference(client, operator):
    first = client.post(URL, json=incident_payload(), headers=operator)
    second = client.post(URL, json=incident_payload(), headers=operator)
    assert first.status_code == second.status_code == 201
    year = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).year
    assert first.json["ref"] == f"TH-{year}-00001"
    assert second.json["ref"] == f"TH-{year}-00002"
    assert first.json["status"] == "new"
    assert first.headers["Location"] == f"/api/v1/incidents/{first.json['id']}"
    by_ref = client.get(f"{URL}/{second.json['ref']}", headers=operator)
    assert by_ref.status_code == 200
    assert by_ref.json["id"] == second.json["id"]


@pytest.mark.parametrize("app_config", [{"REF_PREFIX": "QN"}])
def test_reference_prefix_comes_from_configuration(client, operator):
    r = client.post(URL, json=incident_payload(), headers=operator)
    assert re.fullmatch(r"QN-\d{4}-00001", r.json["ref"])


def test_every_form_03_field_reads_back_as_filed(client, operator):
    payload = incident_payload(
        tlp="green",
        exercise=True,
        detection_method="notified",
        detection_detail="Người dân báo qua đường dây nóng",
        affected_system="qlvb",
        contact={"name": "Trần Thị B", "position": "Trưởng phòng CNTT", "phone": "0912000000", "email": "b@example.vn"},
        handled_at_report=False,
        notified_parties=["isp", "national_coordinator"],
        system_os="Windows Server 2019",
        system_services="HTTPS, SMB",
        security_measures="Tường lửa, phần mềm diệt virus",
        support_requested="Cần hỗ trợ phân tích mã độc",
        beyond_capacity=True,
    )
    created = client.post(URL, json=payload, headers=operator)
    got = client.get(created.headers["Location"], headers=operator).json
    for name in (
        "title", "description", "category", "priority", "tlp", "exercise", "detection_method", "detection_detail",
        "contact", "handled_at_report", "notified_parties", "system_os", "system_services", "security_measures",
        "support_requested", "beyond_capacity",
    ):  # fmt: skip
        assert got[name] == payload[name], name
    assert got["reporter"] == payload["reporter"]
    assert got["affected_system"]["code"] == "qlvb", "an explicit system wins over matching observables"
    assert got["detected_at"] == "2026-11-20T01:30:00.000000+00:00", "stored and returned in UTC with its offset"
    assert got["class"] == "ordinary"
    assert got["occurrence_count"] == 1
    assert client.get(created.headers["Location"], headers=operator).json == got, "two GETs give identical JSON"


def test_affected_system_is_matched_from_observables_most_specific_address_first(client, operator):
    # thanhhoa.gov.vn (cong-ttdt) is a parent of syt.thanhhoa.gov.vn (ytdt): the longer match wins.
    body = incident_payload(observables=[{"type": "url", "value": "https://syt.thanhhoa.gov.vn/a"}])
    got = client.get(client.post(URL, json=body, headers=operator).headers["Location"], headers=operator).json
    assert got["affected_system"]["code"] == "ytdt"
    by_ip = incident_payload(observables=[{"type": "ipv4-addr", "value": "198.51.100.5"}])
    got = client.get(client.post(URL, json=by_ip, headers=operator).headers["Location"], headers=operator).json
    assert got["affected_system"]["code"] == "qlvb"
    unknown = incident_payload(observables=[{"type": "domain-name", "value": "example.org"}])
    got = client.get(client.post(URL, json=unknown, headers=operator).headers["Location"], headers=operator).json
    assert got["affected_system"] is None
    r = client.post(URL, json=incident_payload(affected_system="khong-co"), headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["affected_system"]


def test_observables_are_normalised_and_repeats_within_a_filing_kept_once(client, operator):
    sha = "A" * 64
    body = incident_payload(
        observables=[
            {"type": "domain-name", "value": "Evil.Example.COM."},
            {"type": "domain-name", "value": "evil.example.com"},
            {"type": "ipv6-addr", "value": "2001:DB8:0:0:0:0:0:1"},
            {"type": "email-addr", "value": "Phish@Example.VN"},
            {"type": "file", "value": "invoice.exe", "hashes": {"sha256": sha}},
        ]
    )
    got = client.get(client.post(URL, json=body, headers=operator).headers["Location"], headers=operator).json
    assert [(o["type"], o["value"], o["hashes"]) for o in got["observables"]] == [
        ("domain-name", "evil.example.com", None),
        ("ipv6-addr", "2001:db8::1", None),
        ("email-addr", "Phish@example.vn", None),
        ("file", "invoice.exe", {"SHA-256": sha.lower()}),
    ]


def test_invalid_observables_are_refused_with_their_index(client, operator):
    body = incident_payload(
        observables=[
            {"type": "ipv4-addr", "value": "192.0.2.1"},
            {"type": "ipv4-addr", "value": "2001:db8::1"},
            {"type": "file", "value": "a.exe"},
            {"type": "url", "value": "not a url"},
        ]
    )
    r = client.post(URL, json=body, headers=operator)
    assert r.status_code == 422
    fields = [e["field"] for e in r.json["errors"]]
    assert fields == ["observables[1].value", "observables[2]", "observables[3].value"]


def test_detection_time_in_the_future_is_refused(client, operator):
    r = client.post(URL, json=incident_payload(detected_at="2999-01-01T00:00:00Z"), headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["detected_at"]


def test_committee_cannot_file_but_intake_can(client, make_token):
    assert client.post(URL, json=incident_payload(), headers=make_token("committee")).status_code == 403
    assert client.post(URL, json=incident_payload(), headers=make_token("intake")).status_code == 201


def test_idempotency_key_replay_returns_the_first_answer(client, operator):
    headers = {**operator, "Idempotency-Key": "siem-42"}
    first = client.post(URL, json=incident_payload(), headers=headers)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    client.post(f"{URL}/{first.json['id']}/transitions", json={"to": "triage"}, headers=operator)
    replay = client.post(URL, json=incident_payload(), headers=headers)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json == first.json, "the first body, even though the incident has moved on"
    assert replay.headers["Location"] == first.headers["Location"]
    assert len(listed(client, operator)) == 1


def test_idempotency_key_with_another_body_is_422(client, operator):
    headers = {**operator, "Idempotency-Key": "siem-43"}
    assert client.post(URL, json=incident_payload(), headers=headers).status_code == 201
    other = client.post(URL, json=incident_payload(priority="P1"), headers=headers)
    assert other.status_code == 422
    assert other.mimetype == "application/problem+json"
    assert len(listed(client, operator)) == 1


def test_idempotency_keys_belong_to_their_token(client, make_token):
    one, two = make_token("intake"), make_token("intake")
    a = client.post(URL, json=incident_payload(), headers={**one, "Idempotency-Key": "k"})
    b = client.post(URL, json=incident_payload(), headers={**two, "Idempotency-Key": "k"})
    assert a.status_code == b.status_code == 201
    assert a.json["id"] != b.json["id"]
    assert "Idempotent-Replayed" not in b.headers


def test_twenty_parallel_retries_with_one_idempotency_key_create_one_incident(live_server, operator):
    headers = {**operator, "Idempotency-Key": "retry-storm-1"}
    payload = incident_payload(title="Gửi lại khi mất kết nối")

    def post(_: int) -> requests.Response:
        return requests.post(f"{live_server.url}{URL}", json=payload, headers=headers, timeout=30)

    answers = parallel(20, post)
    assert [r.status_code for r in answers] == [201] * 20, [r.text for r in answers if r.status_code != 201]
    assert len({r.text for r in answers}) == 1, "every replay carries the first body"
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in answers) == [""] + ["true"] * 19
    items = requests.get(f"{live_server.url}{URL}", headers=operator, timeout=10).json()["items"]
    assert [i["id"] for i in items] == [answers[0].json()["id"]]
    assert items[0]["occurrence_count"] == 1


def test_fifty_parallel_filings_with_one_dedup_key_make_one_incident_with_fifty_occurrences(live_server, operator):
    def post(i: int) -> requests.Response:
        body = incident_payload(dedup_key="ids:rule-9001:192.0.2.10", detected_at=f"2026-11-20T08:{i:02d}:00+07:00")
        return requests.post(f"{live_server.url}{URL}", json=body, headers=operator, timeout=30)

    answers = parallel(50, post)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 49 + [201], [r.text for r in answers if r.status_code not in (200, 201)]
    assert len({r.json()["id"] for r in answers}) == 1
    items = requests.get(f"{live_server.url}{URL}", headers=operator, timeout=10).json()["items"]
    assert len(items) == 1
    assert items[0]["occurrence_count"] == 50
    assert max(r.json()["occurrence_count"] for r in answers) == 50


def test_repeat_of_an_open_dedup_key_answers_200_with_that_incident(client, operator):
    first = client.post(URL, json=incident_payload(dedup_key="k1"), headers=operator)
    client.post(f"{URL}/{first.json['id']}/transitions", json={"to": "triage"}, headers=operator)
    again = client.post(URL, json=incident_payload(dedup_key="k1", title="Lặp lại"), headers=operator)
    assert again.status_code == 200
    assert (again.json["id"], again.json["ref"], again.json["status"]) == (
        first.json["id"],
        first.json["ref"],
        "triage",
    )
    assert again.json["occurrence_count"] == 2
    got = client.get(f"{URL}/{first.json['id']}", headers=operator).json
    assert got["title"] == incident_payload()["title"], "a repeat does not overwrite the record"
    kinds = [e["kind"] for e in client.get(f"{URL}/{first.json['id']}/events", headers=operator).json["items"]]
    assert kinds == ["incident.created", "incident.status_changed", "incident.occurrence"]
    other = client.post(URL, json=incident_payload(dedup_key="k2"), headers=operator)
    assert other.status_code == 201


def test_dedup_key_of_a_closed_or_rejected_incident_makes_a_new_incident(client, operator):
    closed = client.post(URL, json=incident_payload(dedup_key="k-closed"), headers=operator).json
    for to in ("triage", "first_response", "containment", "eradication", "recovery", "assessment", "review"):
        client.post(f"{URL}/{closed['id']}/transitions", json={"to": to}, headers=operator)
    # Closing requires the end report (Form 04).
    made = client.post(f"{URL}/{closed['id']}/reports/end", json={"handling_result": RESOLUTION}, headers=operator)
    assert made.status_code == 201, made.json
    r = client.post(
        f"{URL}/{closed['id']}/transitions", json={"to": "closed", "resolution": RESOLUTION}, headers=operator
    )
    assert r.json["status"] == "closed"
    rejected = client.post(URL, json=incident_payload(dedup_key="k-rejected"), headers=operator).json
    client.post(f"{URL}/{rejected['id']}/transitions", json={"to": "rejected"}, headers=operator)
    for old, key in ((closed, "k-closed"), (rejected, "k-rejected")):
        again = client.post(URL, json=incident_payload(dedup_key=key), headers=operator)
        assert again.status_code == 201, key
        assert again.json["id"] != old["id"]
        assert client.get(f"{URL}/{old['id']}", headers=operator).json["occurrence_count"] == 1
        repeat = client.post(URL, json=incident_payload(dedup_key=key), headers=operator)
        assert (repeat.status_code, repeat.json["id"]) == (200, again.json["id"]), "the new incident holds the key"


def test_bulk_files_500_incidents_in_one_request(client, operator):
    items = [incident_payload(title=f"Cảnh báo {n}", observables=[]) for n in range(500)]
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=operator)
    assert r.status_code == 201, r.json
    assert len(r.json["items"]) == 500
    assert all(item["created"] for item in r.json["items"])
    refs = [item["ref"] for item in r.json["items"]]
    assert len(set(refs)) == 500
    assert refs[0].endswith("-00001") and refs[-1].endswith("-00500")
    stored = listed(client, operator)
    assert len(stored) == 500
    assert {i["title"] for i in stored} == {f"Cảnh báo {n}" for n in range(500)}


def test_references_are_gapless_in_filing_order_and_everything_the_filing_wrote_carries_them(client, operator, session):
    """On PostgreSQL the references are taken last in the filing (the counter's row lock is what filings wait
    for): the incidents go in under placeholders, and the answer, the stored rows, the search text, the events
    and an in-batch repeat's occurrence event all end with the real reference, numbered in filing order."""
    single = client.post(URL, json=incident_payload(title="Một"), headers=operator)
    assert single.status_code == 201
    items = [incident_payload(title=f"Lô {n}", dedup_key=f"k{n % 3}") for n in range(5)]
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=operator)
    assert r.status_code == 201, r.json
    answered = [single.json["ref"], *dict.fromkeys(item["ref"] for item in r.json["items"])]
    numbers = [int(ref.rsplit("-", 1)[1]) for ref in answered]
    assert numbers == list(range(numbers[0], numbers[0] + 4)), answered  # 1 + 3 new, the repeats grouped
    session.rollback()
    stored = dict(session.execute(select(Incident.id, Incident.ref)).all())
    assert sorted(stored.values()) == sorted(answered)
    for incident_id, ref in stored.items():
        assert fold(ref) in session.scalar(select(Incident.search_text).where(Incident.id == incident_id))
    found = client.get(URL, query_string={"q": answered[2]}, headers=operator).json["items"]
    assert [i["ref"] for i in found] == [answered[2]]
    for event in session.scalars(select(Event).where(Event.incident_id.is_not(None))):
        if "ref" in event.data:
            assert event.data["ref"] == stored[event.incident_id], (event.kind, event.data)


def test_bulk_with_one_invalid_item_writes_nothing_and_names_the_item(client, operator):
    items = [incident_payload(observables=[]) for _ in range(500)]
    items[317] = incident_payload(category="virus")
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["incidents[317].category"]
    assert listed(client, operator) == []


def test_bulk_with_an_unknown_system_or_participant_writes_nothing(client, operator):
    items = [incident_payload() for _ in range(20)]
    items[3] = incident_payload(affected_system="khong-co")
    items[19] = incident_payload(participants=[{"user": "nobody"}])
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == [
        "incidents[3].affected_system",
        "incidents[19].participants[0].user",
    ]
    assert listed(client, operator) == []
    after = client.post(URL, json=incident_payload(), headers=operator)
    assert after.json["ref"].endswith("-00001"), "the failed batch took no references"


def test_bulk_over_the_limit_is_refused(client, operator):
    items = [{"title": f"t{n}", "category": "other"} for n in range(501)]
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=operator)
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["incidents"]
    assert listed(client, operator) == []


def test_bulk_repeats_of_one_dedup_key_become_occurrences_of_one_incident(client, operator):
    items = [
        incident_payload(dedup_key="scan-1"),
        incident_payload(dedup_key="other"),
        incident_payload(dedup_key="scan-1"),
    ]
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=operator)
    assert r.status_code == 201
    first, other, repeat = r.json["items"]
    assert repeat["id"] == first["id"] != other["id"]
    assert (first["created"], repeat["created"]) == (True, False)
    assert client.get(f"{URL}/{first['id']}", headers=operator).json["occurrence_count"] == 2
    assert len(listed(client, operator)) == 2
