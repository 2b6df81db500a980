"""The incident list: diacritic-insensitive search, filters and cursor pagination."""

from tests.conftest import incident_payload

URL = "/api/v1/incidents"


def file(client, headers, **overrides) -> dict:
    r = client.post(URL, json=incident_payload(**{"observables": [], **overrides}), headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def bulk(client, headers, items: list[dict]) -> list[dict]:
    r = client.post(f"{URL}/bulk", json={"incidents": items}, headers=headers)
    assert r.status_code == 201, r.json
    return r.json["items"]


def found(client, headers, **query) -> list[int]:
    r = client.get(URL, query_string={"limit": 500, **query}, headers=headers)
    assert r.status_code == 200, (query, r.json)
    return [i["id"] for i in r.json["items"]]


def refused_fields(client, headers, **query) -> list[str]:
    r = client.get(URL, query_string=query, headers=headers)
    assert r.status_code == 422, (query, r.json)
    assert r.mimetype == "application/problem+json"
    return [e["field"] for e in r.json["errors"]]


def test_search_ignores_vietnamese_diacritics_and_case(client, operator):
    danang = file(client, operator, title="Tấn công website Sở Y tế Đà Nẵng")["id"]
    hanoi = file(client, operator, title="Mã độc tại Hà Nội")["id"]
    road = file(client, operator, title="Lộ dữ liệu", description="Hệ thống ĐƯỜNG DÂY NÓNG bị chiếm quyền")["id"]
    assert found(client, operator, q="da nang") == [danang]
    assert found(client, operator, q="Đà Nẵng") == [danang]
    assert found(client, operator, q="DA NANG") == [danang]
    assert found(client, operator, q="đa năng") == [danang], "the query is folded like the text"
    assert found(client, operator, q="duong day nong") == [road], "đ and Đ fold to d"
    assert found(client, operator, q="ma doc") == [hanoi]
    assert found(client, operator, q="nang da") == [danang], "every word must occur, in any order"
    assert found(client, operator, q="nang hanoi") == []


def test_search_covers_reference_reporter_and_observables(client, operator):
    incident = file(
        client, operator, title="Cảnh báo",
        reporter={"organisation": "Bệnh viện Đa khoa tỉnh"},
        observables=[{"type": "domain-name", "value": "phishing-dvc.example.net"}],
    )  # fmt: skip
    other = file(client, operator, title="Khác")
    assert found(client, operator, q="benh vien da khoa") == [incident["id"]]
    assert found(client, operator, q="phishing-dvc") == [incident["id"]]
    assert found(client, operator, q=incident["ref"]) == [incident["id"]]
    assert found(client, operator, q=other["ref"]) == [other["id"]]


def test_search_treats_like_wildcards_literally(client, operator):
    percent = file(client, operator, title="Tải CPU 100% trên máy chủ")["id"]
    file(client, operator, title="Tải CPU 1000 tiến trình")
    file(client, operator, title="Biến a_b trong nhật ký")
    assert found(client, operator, q="100%") == [percent]
    assert found(client, operator, q="%") == [percent]
    assert len(found(client, operator, q="_")) == 1


def test_search_follows_a_changed_title(client, operator):
    incident = file(client, operator, title="Cũ")
    client.patch(f"{URL}/{incident['id']}", json={"title": "Sự cố Đà Nẵng mới"}, headers=operator)
    assert found(client, operator, q="da nang moi") == [incident["id"]]


def test_filters_select_by_status_category_priority_tlp_and_class(client, operator, make_token):
    a = file(client, operator, category="dos", priority="P1", tlp="clear")["id"]
    b = file(client, operator, category="malware", priority="P2", tlp="amber+strict")["id"]
    c = file(client, operator, category="phishing", priority="P3", tlp="green", exercise=True)["id"]
    client.post(f"{URL}/{b}/transitions", json={"to": "triage"}, headers=operator)
    client.post(f"{URL}/{c}/classification", json={"action": "decide", "class": "serious"}, headers=make_token("admin"))
    assert set(found(client, operator)) == {a, b, c}
    assert found(client, operator, status="triage") == [b]
    assert set(found(client, operator, status="new")) == {a, c}
    assert set(found(client, operator, status="new,triage")) == {a, b, c}
    assert set(found(client, operator, status=["new", "triage"])) == {a, b, c}, "repeated values"
    assert found(client, operator, category="malware") == [b]
    assert set(found(client, operator, category="dos,phishing")) == {a, c}
    assert found(client, operator, priority="P1") == [a]
    assert found(client, operator, tlp="amber_strict") == [b], "the query-string spelling"
    assert found(client, operator, tlp="amber+strict") == [b]
    assert found(client, operator, tlp="clear,green") == [c, a]
    assert found(client, operator, **{"class": "serious"}) == [c]
    assert set(found(client, operator, **{"class": "ordinary"})) == {a, b}
    assert found(client, operator, exercise="true") == [c]
    assert found(client, operator, status="triage", category="dos") == [], "filters combine with AND"


def test_invalid_filter_values_are_refused_with_their_field(client, operator):
    assert refused_fields(client, operator, status="done") == ["status[0]"]
    assert refused_fields(client, operator, tlp="purple") == ["tlp[0]"]
    assert refused_fields(client, operator, priority="P9", category="spam") == ["category[0]", "priority[0]"]
    assert refused_fields(client, operator, limit="501") == ["limit"]
    assert refused_fields(client, operator, limit="0") == ["limit"]
    assert refused_fields(client, operator, colour="red") == ["colour"]


def test_updated_since_selects_incidents_changed_since_then(client, operator):
    old = file(client, operator, title="Cũ")
    new = file(client, operator, title="Mới")
    since = client.get(f"{URL}/{new['id']}", headers=operator).json["updated_at"]
    assert found(client, operator, updated_since=since) == [new["id"]]
    client.post(f"{URL}/{old['id']}/comments", json={"body": "cập nhật"}, headers=operator)
    assert set(found(client, operator, updated_since=since)) == {old["id"], new["id"]}
    assert refused_fields(client, operator, updated_since="2026-11-20T08:30:00") == ["updated_since"]


def test_list_answers_the_design_envelope_with_default_limit_50(client, operator):
    bulk(client, operator, [incident_payload(observables=[], title=f"Sự cố {n}") for n in range(60)])
    first = client.get(URL, headers=operator)
    assert set(first.json) == {"items", "next_cursor"}
    assert len(first.json["items"]) == 50
    assert first.json["next_cursor"]
    second = client.get(URL, query_string={"cursor": first.json["next_cursor"]}, headers=operator)
    assert len(second.json["items"]) == 10
    assert second.json["next_cursor"] is None


def page_through(client, headers, limit: int, between=None, **query) -> list[list[int]]:
    """Follow next_cursor to the end; `between` runs after the first page."""
    pages, cursor = [], None
    while True:
        r = client.get(
            URL, query_string={**query, "limit": limit, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert r.status_code == 200, r.json
        pages.append([i["id"] for i in r.json["items"]])
        cursor = r.json["next_cursor"]
        if between is not None and len(pages) == 1:
            between()
        if cursor is None:
            return pages


def test_cursor_pages_cover_the_list_once_in_order_even_with_equal_timestamps(client, operator):
    # A bulk filing gives its incidents one timestamp: the order must break ties by id.
    ids = [i["id"] for i in bulk(client, operator, [incident_payload(observables=[]) for _ in range(10)])]
    ids += [file(client, operator)["id"] for _ in range(3)]
    file(client, operator, category="malware")
    newest_first = sorted(ids, reverse=True)
    for sort in ("-created", "created", "-updated", "updated"):
        whole = found(client, operator, sort=sort, category="dos")
        assert whole == (newest_first if sort.startswith("-") else newest_first[::-1]), sort
        pages = page_through(client, operator, 4, sort=sort, category="dos")
        assert [len(p) for p in pages] == [4, 4, 4, 1], sort
        assert [i for page in pages for i in page] == whole, sort


def test_writes_between_pages_neither_repeat_nor_skip_an_incident(client, operator):
    ids = [i["id"] for i in bulk(client, operator, [incident_payload(observables=[]) for _ in range(9)])]
    before = found(client, operator)
    late: list[int] = []

    def write() -> None:
        client.patch(f"{URL}/{ids[0]}", json={"priority": "P1"}, headers=operator)  # not yet seen
        late.append(file(client, operator)["id"])

    newest_first = [i for page in page_through(client, operator, 4, between=write) for i in page]
    assert newest_first == before
    oldest_first = [i for page in page_through(client, operator, 4, between=write, sort="created") for i in page]
    assert oldest_first == before[::-1] + late


def test_cursor_used_with_other_filters_is_refused(client, operator):
    bulk(client, operator, [incident_payload(observables=[], priority="P1") for _ in range(3)])
    cursor = client.get(URL, query_string={"priority": "P1", "limit": 1}, headers=operator).json["next_cursor"]
    assert cursor
    assert (
        client.get(URL, query_string={"priority": "P1", "limit": 2, "cursor": cursor}, headers=operator).status_code
        == 200
    )
    assert refused_fields(client, operator, priority="P2", cursor=cursor) == ["cursor"]
    assert refused_fields(client, operator, cursor=cursor) == ["cursor"]
    assert refused_fields(client, operator, priority="P1", sort="created", cursor=cursor) == ["cursor"]
    assert refused_fields(client, operator, priority="P1", cursor="not-a-cursor") == ["cursor"]
    assert refused_fields(client, operator, priority="P1", cursor=cursor[:-3]) == ["cursor"]
