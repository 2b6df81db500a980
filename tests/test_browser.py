"""The dashboard in Debian's Chromium (Playwright) against one real gunicorn: live board, forms, TOTP, axe, layout.

One server and one browser serve the whole module (SQLite; tests/test_web.py covers both backends). Screenshots
of the console, the incident page and the board, in Vietnamese and English, land in tests/artifacts/.
"""

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sqlalchemy import func, select

from app import create_app, db
from incidents.models import Incident
from tests.conftest import _seed
from tests.live import LiveServer
from tests.web import PASSWORD, make_user

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_WITHIN_MS = 2000


@pytest.fixture(scope="module")
def database(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("browser") / "ucsc.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def bapp(database: str) -> Iterator[Flask]:
    """The app on the server's database, for arranging users and checking what was saved."""
    application = create_app({"DATABASE_URL": database, "TESTING": True, "SECRET_KEY": "test"})
    _seed(application)
    make_user(application, "op")
    make_user(application, "member", role="committee")
    make_user(application, "op-en", language="en")
    make_user(application, "member-en", role="committee", language="en")
    yield application
    with application.app_context():
        db.engine().dispose()


@pytest.fixture(scope="module")
def server(bapp: Flask, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("browser-log") / "gunicorn.log"
    env = {"UCSC_FEED_HEARTBEAT_SECONDS": "1", "UCSC_LOGIN_RATE_LIMIT": ""}
    live = LiveServer(database, log, env).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        # A missing browser is a failure, never a skip (make test installs it when run as root).
        pytest.fail("Debian's chromium is not installed (make browser)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for c in made:
        c.close()


def new_page(browser: Browser, contexts: list[BrowserContext], **options: object) -> Page:
    context = browser.new_context(**options)
    contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(10_000)
    return page


def sign_in(page: Page, server: LiveServer, username: str, totp: str | None = None) -> None:
    page.goto(f"{server.url}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit].primary")
    if totp is not None:
        page.wait_for_url("**/login/totp")
        page.fill("#code", pyotp.TOTP(totp).now())
        page.click("button[type=submit].primary")
    page.wait_for_load_state("load")


def wait_live(page: Page) -> None:
    """The page's /live connection is up (the status element reports it)."""
    expect(page.locator("body")).to_have_attribute("data-live-state", "live", timeout=10_000)


def count_incidents(bapp: Flask) -> int:
    with bapp.app_context():
        session = db.session()
        n = session.scalar(select(func.count()).select_from(Incident)) or 0
        session.close()
        return n


def fill_intake(page: Page, title: str) -> None:
    page.fill("[name='reporter.name']", "Nguyễn Văn A")
    page.fill("[name='reporter.email']", "a@example.vn")
    page.fill("[name=title]", title)
    page.select_option("[name=category]", "dos")
    page.fill("[name=detected_at]", "2026-11-30T08:30")
    page.select_option("[name=detection_method]", "ids")
    page.select_option("[name='observables[0].type']", "ipv4-addr")
    page.fill("[name='observables[0].value']", "192.0.2.77")
    page.select_option("[name=priority]", "P1")


def file_directly(bapp: Flask, title: str) -> str:
    """File an incident as `op` from this test process (another process than the server); its title."""
    from incidents.access import Actor
    from incidents.enums import Role
    from incidents.filing import FilingSettings, file_incidents
    from incidents.models import User
    from incidents.schemas.incidents import IncidentCreate

    with bapp.app_context():
        session = db.session()
        user = session.scalar(select(User).where(User.username == "op"))
        actor = Actor(user_id=user.id, username="op", role=Role.OPERATOR, organisation_id=user.organisation_id)
        data = IncidentCreate.model_validate({"title": title, "category": "phishing", "tlp": "amber"})
        file_incidents(session=session, items=[data], actor=actor, settings=FilingSettings())
        session.close()
    return title


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_operator_files_through_the_form_and_the_board_follows_live(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    board = new_page(browser, contexts)
    sign_in(board, server, "member")
    assert board.url.endswith("/board")
    wait_live(board)
    board.evaluate("window.__sameDocument = true")  # a navigation would drop this

    op = new_page(browser, contexts)
    sign_in(op, server, "op")
    op.goto(f"{server.url}/incidents/new")
    title = f"DDoS vào Cổng dịch vụ công {time.time_ns()}"
    fill_intake(op, title)
    clicked = time.monotonic()
    # The clock starts when the filing is committed, that is when the server answers the form's POST.
    with op.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/incidents/new")):
        op.click("#submit-report")
    committed = time.monotonic()
    tile = board.locator(".tile", has_text=title)
    tile.wait_for(state="visible", timeout=LIVE_WITHIN_MS)
    filed_ms = (time.monotonic() - committed) * 1000
    click_ms = (time.monotonic() - clicked) * 1000
    op.wait_for_url("**/incidents/TH-*")
    ref = op.url.rsplit("/", 1)[1]
    expect(op.locator(".flash.ok")).to_contain_text(ref)
    assert board.evaluate("window.__sameDocument") is True

    for step in ("triage", "first_response", "containment"):
        with op.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/transitions")):
            op.click(f"button[data-to={step}]")
        started = time.monotonic()
        expect(tile.locator(f".status-{step}")).to_be_visible(timeout=LIVE_WITHIN_MS)
        moved_ms = (time.monotonic() - started) * 1000
        op.wait_for_load_state("load")
    expect(op.locator("#incident-status .status-containment")).to_be_visible()
    assert board.evaluate("window.__sameDocument") is True
    print(
        f"board showed the filing {filed_ms:.0f} ms after its commit ({click_ms:.0f} ms after the click) "
        f"and containment {moved_ms:.0f} ms after its commit"
    )


def test_a_refused_action_shows_a_clear_message(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    op = new_page(browser, contexts)
    sign_in(op, server, "op")
    op.goto(f"{server.url}/incidents/new")
    fill_intake(op, "Sự cố để thử từ chối")
    op.click("#submit-report")
    op.wait_for_url("**/incidents/TH-*")
    op.fill("#merged-into", "TH-2026-99999")
    op.click("button[data-to=merged]")
    message = op.locator(".flash.error")
    expect(message).to_be_visible()
    expect(message).to_contain_text("Bị từ chối")
    expect(message).to_contain_text("TH-2026-99999")
    expect(op.locator("#incident-status .status-new")).to_be_visible()


def test_a_form_with_bad_input_shows_every_field_error_and_saves_nothing(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    op = new_page(browser, contexts)
    sign_in(op, server, "op")
    op.goto(f"{server.url}/incidents/new")
    before = count_incidents(bapp)
    op.fill("[name='reporter.email']", "khong-phai-email")
    op.fill("[name='observables[1].value']", "300.1.2.3")
    op.fill("[name=detected_at]", "2099-12-31T23:00")
    op.click("#submit-report")
    op.wait_for_load_state("load")
    expect(op.locator("#form-errors")).to_be_visible()
    for name in ("title", "category", "reporter.email", "observables[1].value", "detected_at"):
        field = op.locator(f"[name='{name}']")
        expect(field).to_have_attribute("aria-invalid", "true")
        error_id = field.get_attribute("aria-describedby")
        expect(op.locator(f"[id='{error_id}']")).to_be_visible()
    expect(op.locator("[name='reporter.email']")).to_have_value("khong-phai-email")
    assert count_incidents(bapp) == before


def test_an_admin_signs_in_with_totp(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    username = f"admin-{time.time_ns()}"
    secret = make_user(bapp, username, role="admin", totp=True)
    page = new_page(browser, contexts)
    sign_in(page, server, username)
    assert page.url.endswith("/login/totp")
    page.fill("#code", "123456" if pyotp.TOTP(secret).now() != "123456" else "654321")
    page.click("button[type=submit].primary")
    expect(page.locator(".flash.error")).to_be_visible()
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("button[type=submit].primary")
    page.wait_for_url("**/incidents")
    page.goto(f"{server.url}/admin")
    expect(page.locator("h1")).to_have_text("Quản trị")


def _an_incident(page: Page, server: LiveServer, title: str) -> str:
    page.goto(f"{server.url}/incidents/new")
    fill_intake(page, title)
    page.click("#submit-report")
    page.wait_for_url("**/incidents/TH-*")
    return page.url.rsplit("/", 1)[1]


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_screenshots_of_console_incident_page_and_board(
    lang: str, server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    suffix = "" if lang == "vi" else "-en"
    op = new_page(browser, contexts, viewport={"width": 1280, "height": 900})
    sign_in(op, server, "op" + suffix)
    ref = _an_incident(
        op, server, "Mã độc tống tiền tại Sở Y tế" if lang == "vi" else "Ransomware at the Health Department"
    )
    expect(op.locator("html")).to_have_attribute("lang", lang)
    screenshot(op, f"incident-{lang}")
    op.goto(f"{server.url}/incidents")
    expect(op.locator(f"tr[data-ref='{ref}']")).to_be_visible()
    screenshot(op, f"console-{lang}")
    member = new_page(browser, contexts, viewport={"width": 1280, "height": 900})
    sign_in(member, server, "member" + suffix)
    expect(member.locator(f".tile[data-ref='{ref}']")).to_be_visible()
    member.wait_for_function("document.querySelector('canvas[data-chart]') && window.Chart !== undefined")
    screenshot(member, f"board-{lang}")
    heading = {"vi": "Ban Chỉ đạo: tình hình sự cố trực tuyến", "en": "Steering board: incidents live"}[lang]
    expect(member.locator("h1")).to_have_text(heading)
    member.set_viewport_size({"width": 360, "height": 740})
    member.wait_for_timeout(300)  # the chart redraws for the narrower box
    screenshot(member, f"board-phone-{lang}")


def _axe(page: Page, server: LiveServer) -> list[dict]:
    page.add_script_tag(url=f"{server.url}/static/vendor/axe-core/axe.min.js")
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_no_serious_or_critical_violation_on_console_incident_page_and_board(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    op = new_page(browser, contexts)
    sign_in(op, server, "op")
    ref = _an_incident(op, server, "Kiểm tra khả năng truy cập")
    found = {}
    for url in ("/incidents", f"/incidents/{ref}", "/board", "/incidents/new"):
        op.goto(server.url + url)
        found[url] = _axe(op, server)
    member = new_page(browser, contexts)
    sign_in(member, server, "member")
    found["/board (committee)"] = _axe(member, server)
    assert all(not v for v in found.values()), found


def test_at_360_px_no_page_scrolls_sideways(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    op = new_page(browser, contexts, viewport={"width": 360, "height": 740})
    sign_in(op, server, "op")
    ref = _an_incident(op, server, "Tấn công thay đổi giao diện trang thông tin điện tử của huyện")
    widths = {}
    for url in ("/incidents", f"/incidents/{ref}", "/board", "/incidents/new", "/directory", "/login"):
        op.goto(server.url + url)
        widths[url] = op.evaluate("document.documentElement.scrollWidth")
    assert all(w <= 360 for w in widths.values()), widths


def test_the_intake_form_can_be_completed_by_keyboard_alone(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    op = new_page(browser, contexts)
    sign_in(op, server, "op")
    op.goto(f"{server.url}/incidents/new")
    before = count_incidents(bapp)
    typed = {"reporter.name": "Trần Văn C", "title": "Lừa đảo qua thư điện tử bằng bàn phím"}

    def focused() -> str:
        return op.evaluate("document.activeElement && (document.activeElement.name || document.activeElement.id)")

    seen = 0
    while focused() != "submit-report":
        op.keyboard.press("Tab")
        seen += 1
        assert seen < 200, "the submit button is not reachable by Tab"
        name = focused()
        if name in typed:
            op.keyboard.type(typed[name])
        elif name == "category":
            op.keyboard.press("ArrowDown")  # the first type of attack after the blank choice
    op.keyboard.press("Enter")
    op.wait_for_url("**/incidents/TH-*")
    expect(op.locator("h1")).to_contain_text(typed["title"])
    assert count_incidents(bapp) == before + 1


def test_a_board_member_answers_a_request_for_direction_and_the_operator_sees_the_directive_live(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    op = new_page(browser, contexts)
    sign_in(op, server, "op")
    ref = _an_incident(op, server, "Mã độc lây lan trong mạng nội bộ")
    member = new_page(browser, contexts)
    sign_in(member, server, "member")
    wait_live(member)
    question = f"Có ngắt kết nối Internet của Sở không? {time.time_ns()}"
    op.fill("#question-vi", question)
    op.click("#ask-heading ~ form button[type=submit]")
    op.wait_for_load_state("load")
    wait_live(op)
    op.evaluate("window.__sameDocument = true")
    request = member.locator("#inbox .request", has_text=question)
    request.wait_for(state="visible", timeout=LIVE_WITHIN_MS)
    member.locator("#inbox .request", has_text=question).locator("textarea").fill("Ngắt ngay, báo cáo sau 30 phút.")
    # Another change arrives while the member is typing: the board refreshes and keeps the text.
    other = file_directly(bapp, f"Sự cố khác trong lúc soạn chỉ đạo {time.time_ns()}")
    expect(member.locator(".tile", has_text=other)).to_be_visible(timeout=LIVE_WITHIN_MS * 2)
    expect(member.locator("#inbox .request", has_text=question).locator("textarea")).to_have_value(
        "Ngắt ngay, báo cáo sau 30 phút."
    )
    member.locator("#inbox .request", has_text=question).locator("button[type=submit]").click()
    member.wait_for_load_state("load")
    expect(member.locator(".flash.ok")).to_be_visible()
    expect(member.locator("#inbox .request", has_text=question)).to_have_count(0)
    expect(op.locator("#timeline")).to_contain_text("Ngắt ngay, báo cáo sau 30 phút.", timeout=LIVE_WITHIN_MS)
    expect(op.locator("#directions")).to_contain_text("Ngắt ngay, báo cáo sau 30 phút.")
    assert op.evaluate("window.__sameDocument") is True
    assert ref in op.url


def test_the_board_says_reconnecting_when_the_heartbeat_stops_and_catches_up_after(
    server: LiveServer, browser: Browser, contexts: list[BrowserContext], bapp: Flask
) -> None:
    member = new_page(browser, contexts)
    sign_in(member, server, "member")
    wait_live(member)
    member.evaluate("window.__sameDocument = true")
    banner = member.locator("#live-status")
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGSTOP)  # the server freezes: the socket stays open, heartbeats stop
    try:
        expect(banner).to_be_visible(timeout=6000)
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)
    expect(banner).to_be_hidden(timeout=6000)

    server.kill()  # the server dies: the board must reconnect and replay what it missed
    expect(banner).to_be_visible(timeout=6000)

    title = file_directly(bapp, f"Sự cố trong lúc mất kết nối {time.time_ns()}")
    server.start()
    expect(member.locator(".tile", has_text=title)).to_be_visible(timeout=15_000)
    expect(banner).to_be_hidden()
    assert member.evaluate("window.__sameDocument") is True
