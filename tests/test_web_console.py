"""The console list: total, previous and next page with the filters in the URL, the CSV export, the board's counters."""

import csv
import io
import re

from flask import Flask
from flask.testing import FlaskClient

from tests.test_web import file_as
from tests.web import make_user, sign_in


def _href(html: str, rel: str) -> str:
    return re.search(rf'rel="{rel}" href="([^"]+)"', html).group(1).replace("&amp;", "&")


def test_the_list_counts_and_pages_back_and_forth_keeping_its_filters(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    refs = [file_as(app, "op", title=f"Sự cố số {n}", priority="P2") for n in range(5)]
    file_as(app, "op", title="Khác", priority="P4")
    sign_in(client, "op")
    first = client.get("/incidents?limit=2&sort=created&priority=P2")
    assert "5 sự cố · trang 1" in first.text and 'rel="prev"' not in first.text
    second = client.get(_href(first.text, "next"))
    assert refs[2] in second.text and refs[0] not in second.text and "trang 2" in second.text
    third = client.get(_href(second.text, "next"))
    assert refs[4] in third.text and 'rel="next"' not in third.text
    back = client.get(_href(third.text, "prev"))
    assert refs[2] in back.text and refs[3] in back.text and refs[4] not in back.text
    again = client.get(_href(back.text, "prev"))
    assert refs[0] in again.text and 'rel="prev"' not in again.text and "trang 1" in again.text
    assert "priority=P2" in _href(again.text, "next")


def test_csv_exports_what_the_filter_shows_to_whom_may_see_it_with_formulas_defused(
    app: Flask, client: FlaskClient
) -> None:
    make_user(app, "op")
    make_user(app, "member", role="committee")
    formula = file_as(app, "op", title='=HYPERLINK("http://x.example","bấm")', priority="P1")
    hidden = file_as(app, "op", title="Bí mật đỏ", tlp="red", priority="P1")
    file_as(app, "op", title="Ưu tiên thấp", priority="P4")
    sign_in(client, "op")
    page = client.get("/incidents?priority=P1")
    assert 'href="/incidents.csv?priority=P1"' in page.text
    answer = client.get("/incidents.csv?priority=P1")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:2] == ["ref", "title"]
    by_ref = {r[0]: r for r in rows[1:]}
    assert set(by_ref) == {formula, hidden}
    assert by_ref[formula][1] == '\'=HYPERLINK("http://x.example","bấm")'
    member = app.test_client()
    sign_in(member, "member")
    seen = member.get("/incidents.csv?priority=P1").get_data(as_text=True)
    assert formula in seen and hidden not in seen
    assert member.get("/incidents.csv?priority=P9").status_code == 422


def test_the_board_leads_with_counters_and_the_most_urgent_incident(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    make_user(app, "member", role="committee")
    low = file_as(app, "op", title="Thấp", priority="P4")
    urgent = file_as(app, "op", title="Khẩn", priority="P1")
    file_as(app, "op", title="Đỏ không tên", priority="P1", tlp="red")  # the member may not see it
    sign_in(client, "member")
    board = client.get("/board").text
    counters = dict(re.findall(r'data-counter="(\w+)"><strong>(\d+)</strong>', board))
    assert counters["open"] == "2" and counters["p1"] == "1" and counters["awaiting_direction"] == "0"
    tiles = re.findall(r'class="tile[^"]*" data-ref="([^"]+)"', board)
    assert tiles == [urgent, low]
    assert board.index('id="board-counters"') < board.index('id="open-incidents"')
    assert 'id="chart-daily"' in board and 'id="chart-categories"' in board
    assert board.index('id="open-incidents"') < board.index('id="live-feed"')
