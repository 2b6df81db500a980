"""The three journeys of the dashboard, in Debian's Chromium, against gunicorn started as `make run` starts it.

The server gets UCSC_BIND and no UCSC_BASE_URL, as `UCSC_BIND=127.0.0.1:<port> make run` would: the live
channel must accept the page's own origin. (a) an operator files, works and closes an incident on the web;
(b) a SIEM files by API and the operator acknowledges its page on the web; (c) a committee member on a 390 px
phone sees the counters, opens the incident and gives a directive. Each in Vietnamese and in English, with
axe-core clean on the pages walked; screenshots of the journeys go to docs/screenshots/ (UCSC_JOURNEY_SHOTS
names another folder, for example when the docs' pictures should stay as they are).
"""

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, expect
from playwright.sync_api import Error as PlaywrightError

from app import create_app, db
from app.auth import new_token
from incidents import accounts
from incidents.enums import Role
from tests import paging
from tests.conftest import _seed
from tests.live import LiveServer, WorkerProcess
from tests.test_browser import browser, contexts, new_page, sign_in, wait_live  # noqa: F401
from tests.web import make_user

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("UCSC_JOURNEY_SHOTS") or ROOT / "docs" / "screenshots")
PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1366, "height": 900}
WORDS = {
    "vi": {"filed": "Đã tiếp nhận sự cố", "closed": "Đóng", "ack_done": "Đã xác nhận báo động.", "open": "Đang mở",
           "directive": "Ngừng dịch vụ thanh toán trực tuyến đến khi khôi phục xong.", "p1": "Ưu tiên P1"},
    "en": {"filed": "filed", "closed": "Closed", "ack_done": "Page acknowledged.", "open": "Open",
           "directive": "Suspend online payments until recovery is complete.", "p1": "Priority P1"},
}  # fmt: skip


@pytest.fixture(scope="module")
def japp(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    path = tmp_path_factory.mktemp("journeys") / "ucsc.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    application = create_app({"DATABASE_URL": url, "TESTING": True, "SECRET_KEY": "test"})
    _seed(application)
    paging.load_shipped(application, demo=False)
    paging.add_contact(application, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn",
                       channels=["email"])  # fmt: skip
    for lang in ("vi", "en"):
        make_user(application, f"op-{lang}", language=lang)
        make_user(application, f"member-{lang}", role="committee", language=lang)
    yield application, url
    with application.app_context():
        db.engine().dispose()


@pytest.fixture(scope="module")
def made_run(japp: tuple[Flask, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gunicorn as `UCSC_BIND=127.0.0.1:<port> make run` starts it: UCSC_BIND set, UCSC_BASE_URL not."""
    log = tmp_path_factory.mktemp("journeys-log") / "gunicorn.log"
    live = LiveServer(japp[1], log, {"UCSC_FEED_HEARTBEAT_SECONDS": "1", "UCSC_LOGIN_RATE_LIMIT": ""})
    live.env.pop("UCSC_BASE_URL", None)
    live.env["UCSC_BIND"] = f"127.0.0.1:{live.port}"
    live.env["UCSC_OUTBOX_FILE"] = str(log.parent / "outbox.jsonl")
    # `make run` starts the worker beside the web (Procfile): playbooks start and pages go out through it.
    worker = WorkerProcess(japp[1], log.parent / "worker.log", {"UCSC_OUTBOX_FILE": live.env["UCSC_OUTBOX_FILE"]})
    worker.env.pop("UCSC_BASE_URL", None)
    worker.env["UCSC_BIND"] = live.env["UCSC_BIND"]
    worker.start()
    yield live.start()
    live.stop()
    worker.stop()


@pytest.fixture(scope="module")
def siem(japp: tuple[Flask, str]) -> dict[str, str]:
    """A SIEM's API token (the intake role): it files, it reads nothing else."""
    app = japp[0]
    token, digest = new_token()
    with app.app_context():
        s = db.session()
        with s.begin():
            accounts.create_user(session=s, username="siem", role=Role.INTAKE, organisation="dic", password_hash=None)
            accounts.create_token(session=s, name="t-siem", role=Role.INTAKE, digest=digest, user="siem")
    return {"Authorization": f"Bearer {token}"}


def shot(page: Page, name: str) -> None:
    """A screenshot of what the viewport shows (the first screen), kept small for the docs."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def clean(page: Page, server: LiveServer, where: str) -> None:
    """axe-core finds no serious or critical violation on the page as it stands."""
    page.add_script_tag(url=f"{server.url}/static/vendor/axe-core/axe.min.js")
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    found = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not found, f"{where}: {found}"


def scroll_to(page: Page, selector: str) -> None:
    """Scroll a live region into view: the feed may swap the region for its fresh copy between Playwright finding
    the element and scrolling to it ("not attached to the DOM", seen in CI), and then the fresh copy is the one."""
    for _ in range(5):
        try:
            page.locator(selector).scroll_into_view_if_needed()
            return
        except PlaywrightError as exc:
            if "not attached" not in str(exc):
                raise
    page.locator(selector).scroll_into_view_if_needed()


def file_on_web(page: Page, server: LiveServer, title: str, category: str = "other") -> str:
    page.goto(f"{server.url}/incidents/new")
    page.fill("[name='reporter.name']", "Nguyễn Văn A")
    page.fill("[name='reporter.email']", "a@example.vn")
    page.fill("[name='reporter.address']", "Số 1 Đại lộ Lê Lợi, TP Thanh Hóa")
    page.fill("[name='reporter.phone']", "0237 3852 000")
    page.fill("[name=title]", title)
    page.select_option("[name=category]", category)
    page.select_option("[name=priority]", "P1")
    page.fill("[name=detected_at]", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 7 * 3600 - 60)))
    page.select_option("[name=detection_method]", "ids")
    page.click("#submit-report")
    page.wait_for_url("**/incidents/TH-*")
    return page.url.rsplit("/", 1)[1]


def move(page: Page, to: str, note: str = "", resolution: str = "") -> None:
    if note:
        page.fill("#transition-note", note)
    if resolution:
        page.fill("#resolution-closed", resolution)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/transitions")):
        page.click(f"button[data-to={to}]")
    page.wait_for_load_state("load")
    expect(page.locator(f"#incident-status .status-{to}")).to_be_visible()


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_three_journeys(
    lang: str,
    japp: tuple[Flask, str],
    made_run: LiveServer,
    siem: dict[str, str],
    browser: Browser,  # noqa: F811
    contexts: list[BrowserContext],  # noqa: F811
) -> None:
    server = made_run
    words = WORDS[lang]
    # (a) The operator files on the web, works the incident through its phases and closes it.
    op = new_page(browser, contexts, viewport=WIDE)
    sign_in(op, server, f"op-{lang}")
    wait_live(op)  # the page's own origin is accepted with no UCSC_BASE_URL
    title_a = "Mã độc mã hoá dữ liệu tại Sở Tài chính" if lang == "vi" else "Ransomware at the Finance Department"
    ref_a = file_on_web(op, server, title_a)
    shot(op, f"journey-a-incident-{lang}")
    clean(op, server, f"incident page ({lang})")
    for step in ("triage", "first_response", "containment", "eradication", "recovery", "assessment", "review"):
        move(op, step, note="Đã kiểm tra" if lang == "vi" else "Checked")
    op.fill("#end-result", "Đã khôi phục dịch vụ" if lang == "vi" else "Service restored")
    with op.expect_response(lambda r: r.request.method == "POST" and "/reports/" in r.url):
        op.click("#end-result >> xpath=ancestor::form//button[@type='submit']")
    op.wait_for_load_state("load")
    move(op, "closed", resolution="Đã khôi phục từ bản sao lưu" if lang == "vi" else "Restored from backup")

    op.goto(f"{server.url}/incidents?status=closed")
    expect(op.locator(f"tr[data-ref='{ref_a}']")).to_be_visible()
    expect(op.locator("#export-csv")).to_have_attribute("href", "/incidents.csv?status=closed")
    clean(op, server, f"console ({lang})")

    # (b) A SIEM files by API; its page reaches the desk, and the operator acknowledges it on the incident page.
    title_b = "SIEM: dò quét cổng dịch vụ công" if lang == "vi" else "SIEM: scan of the public services portal"
    answer = requests.post(
        f"{server.url}/api/v1/incidents", headers=siem, timeout=10,
        json={"title": title_b, "category": "other", "priority": "P1", "tlp": "amber",
              "observables": [{"type": "ipv4-addr", "value": "203.0.113.9"}]},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    ref_b = answer.json()["ref"]
    op.goto(f"{server.url}/incidents/{ref_b}")
    ack = op.locator("#pages [data-action=ack]").first
    expect(ack).to_be_visible(timeout=15_000)  # the page's live region shows it once the worker has paged
    op.fill("#pages input[name=note]", "Chị Lan báo qua điện thoại" if lang == "vi" else "Lan called in")
    ack.click()
    expect(op.locator(".flash.ok")).to_have_text(words["ack_done"])
    scroll_to(op, "#pages")
    shot(op, f"journey-b-acknowledged-{lang}")

    # The operator asks the board for direction on the SIEM's incident.
    op.fill("#question-vi", "Có tạm dừng thanh toán trực tuyến không?")
    op.fill("#question-en", "Should online payments be suspended?")
    op.click("#question-vi >> xpath=ancestor::form//button[@type='submit']")
    op.wait_for_load_state("load")

    # (c) A committee member on a phone: counters first, then the most urgent incident; opens it, gives a directive.
    member = new_page(browser, contexts, viewport=PHONE, is_mobile=True, has_touch=True)
    sign_in(member, server, f"member-{lang}")
    assert member.url.endswith("/board")
    wait_live(member)
    counters = member.locator("#board-counters")
    expect(counters.locator("[data-counter=p1]")).to_contain_text(words["p1"])
    expect(counters.locator("[data-counter=awaiting_direction] strong")).not_to_have_text("0")
    first = member.locator("#open-incidents .tile").first
    assert counters.bounding_box()["y"] < PHONE["height"]
    assert first.bounding_box()["y"] < PHONE["height"], "the most urgent incident is not on the first screen"
    assert member.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(member, f"journey-c-board-390-{lang}")
    clean(member, server, f"board ({lang})")
    member.locator(f"#open-incidents .tile[data-ref='{ref_b}'] a").first.click()
    member.wait_for_url(f"**/incidents/{ref_b}")
    assert member.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    directive = member.locator("#directions textarea").first
    directive.fill(words["directive"])
    member.locator("#directions form button[type=submit]").first.click()
    member.wait_for_load_state("load")
    expect(member.locator("#directions")).to_contain_text(words["directive"])
    scroll_to(member, "#directions")
    shot(member, f"journey-c-directive-390-{lang}")
    clean(member, server, f"incident page, committee ({lang})")

    # The dark wall mode is remembered by the browser.
    member.goto(f"{server.url}/board")
    member.click("#toggle-wall")
    member.reload()
    expect(member.locator("body")).to_have_class("board wall")
    shot(member, f"journey-c-wall-390-{lang}")
    clean(member, server, f"board in wall mode ({lang})")

    # The opt-in alert: once turned on, a new P1 arriving by the live feed is announced (tone and notification).
    member.click("#toggle-alert")
    expect(member.locator("#toggle-alert")).to_have_attribute("aria-pressed", "true")
    answer = requests.post(
        f"{server.url}/api/v1/incidents", headers=siem, timeout=10,
        json={"title": f"SIEM: P1 {lang}", "category": "dos", "priority": "P1", "tlp": "amber"},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    expect(member.locator("body")).to_have_attribute("data-alerted", answer.json()["ref"], timeout=5_000)
