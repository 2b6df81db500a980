"""Working an incident in Debian's Chromium: the incident page at 1366 and 390 px in both languages, its page
buttons, owner, tasks and Markdown, without sideways scrolling on a phone (screenshots in UCSC_SHOTS_DIR)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests import paging
from tests.live import LiveServer, WorkerProcess
from tests.test_browser import (  # noqa: F401 - the module's server, browser and app fixtures
    ARTIFACTS,
    bapp,
    browser,
    contexts,
    database,
    fill_intake,
    new_page,
    server,
    sign_in,
)
from tests.web import make_user

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]

SHOTS = Path(os.environ.get("UCSC_SHOTS_DIR") or ARTIFACTS)
TEXT = {
    "vi": {"ack": "Xác nhận", "again": "Gọi lại", "owner": "Người phụ trách", "done": "Đã xác nhận báo động."},
    "en": {"ack": "Acknowledge", "again": "Page again", "owner": "Owner", "done": "Page acknowledged."},
}


@pytest.fixture(scope="module")
def desk(bapp: Flask) -> Flask:  # noqa: F811
    """The shipped playbooks and the standing body's focal point, so a filing of category other pages dic."""
    paging.load_shipped(bapp, demo=False)
    paging.add_contact(bapp, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn", channels=["email"])
    make_user(bapp, "owner-vi", role="responder")
    return bapp


@pytest.fixture(scope="module")
def worker(server: LiveServer, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:  # noqa: F811
    """The worker starts a filing's playbooks, so the page the test works exists."""
    folder = tmp_path_factory.mktemp("browser-worker")
    env = {"UCSC_OUTBOX_FILE": str(folder / "outbox.jsonl"), "UCSC_BASE_URL": server.url}
    process = WorkerProcess(database, folder / "worker.log", env).start()
    yield
    process.stop()


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _file_other(page: Page, server: LiveServer, title: str) -> str:  # noqa: F811
    page.goto(f"{server.url}/incidents/new")
    fill_intake(page, title)
    page.select_option("[name=category]", "other")
    page.click("#submit-report")
    page.wait_for_url("**/incidents/TH-*")
    return page.url.rsplit("/", 1)[1]


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_the_incident_page_is_worked_at_1366_and_390_px(
    lang: str,
    desk: Flask,
    worker: None,
    server: LiveServer,  # noqa: F811
    browser: Browser,  # noqa: F811
    contexts: list[BrowserContext],  # noqa: F811
) -> None:
    words = TEXT[lang]
    op = new_page(browser, contexts, viewport={"width": 1366, "height": 900})
    sign_in(op, server, "op" if lang == "vi" else "op-en")
    ref = _file_other(op, server, "Tấn công lạ vào cổng thông tin" if lang == "vi" else "Unknown attack on the portal")
    expect(op.locator("#pages [data-action=ack]").first).to_have_text(words["ack"])
    expect(op.locator("#pages [data-action=repage]").first).to_have_text(words["again"])
    expect(op.locator("#escalation-plan li")).to_have_count(2)  # page again, then the working group's leader

    op.select_option("#owner-name", "owner-vi")
    op.click("#owner button[type=submit]")
    expect(op.locator("#incident-owner")).to_contain_text(f"{words['owner']}: owner-vi")
    op.fill("#task-title", "Cô lập máy chủ web" if lang == "vi" else "Isolate the web server")
    op.fill("#task-assignee", "owner-vi")
    op.click("#task-new button[type=submit]")
    task = op.locator("#tasks li.task").first
    task.locator("textarea").fill("**Gấp**: xem nhật ký\ndòng hai")
    task.locator("form:has(textarea) button[type=submit]").click()
    expect(op.locator("#tasks li.task").first.locator(".markdown strong")).to_have_text("Gấp")
    op.goto(f"{server.url}/incidents/{ref}")
    _shot(op, f"web3-incident-1366-{lang}")

    op.set_viewport_size({"width": 390, "height": 844})
    op.goto(f"{server.url}/incidents/{ref}")
    assert op.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(op, f"web3-incident-390-{lang}")

    op.fill("#pages input[name=note]", "Chị Lan báo qua điện thoại" if lang == "vi" else "Lan called in")
    op.click("#pages [data-action=ack]")
    expect(op.locator(".flash.ok")).to_have_text(words["done"])
    expect(op.locator("#pages [data-action=ack]")).to_have_count(0)
    _shot(op, f"web3-incident-acked-390-{lang}")
    op.goto(f"{server.url}/board")
    assert op.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(op, f"web3-board-390-{lang}")
