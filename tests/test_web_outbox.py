"""The embedded default: with no channel configured, pages go to the local outbox the web shows, not to an alarm."""

from flask import Flask
from sqlalchemy import select

from app import db
from notifiers import outbox
from playbooks.models import Contact, Delivery
from tests import paging
from tests.test_web import file_as
from tests.web import make_user, sign_in, text_of


def test_with_no_channel_configured_pages_are_kept_in_the_outbox_the_desk_reads(app: Flask) -> None:
    assert outbox.enabled(app.config)  # the test app, like `make run`, configures no e-mail, Telegram or SMS
    make_user(app, "op")
    make_user(app, "member", role="committee")
    paging.load_shipped(app)
    ref = file_as(app, "op", title="Mã độc trên máy chủ", category="malware", priority="P1", tlp="amber")
    paging.run_jobs(app)
    paging.run_jobs(app, ("page.deliver",), send=True)
    with app.app_context():
        deliveries = db.session().scalars(select(Delivery)).all()
        assert deliveries and {d.channel for d in deliveries} == {"outbox"}
        assert {d.state for d in deliveries} == {"delivered"}
        # The standing body's duty officer on call now (the demo group rotates weekly): the one the page reached.
        reached = {(c.name, c.email) for c in (db.session().get_one(Contact, d.contact_id) for d in deliveries)}
        [(duty, address)] = {(name, to) for name, to in reached if name.startswith("Trực ban Sở TT&TT")}
    client = app.test_client()
    sign_in(client, "op")
    board = text_of(client.get("/board").text)
    assert board.count("Kênh chưa được cấu hình:") == 1
    assert "UCSC_SMTP_URL" in board and "UCSC_TELEGRAM_TOKEN" in board and "UCSC_SMS_GATEWAY_URL" in board
    assert "Tin báo động gửi lỗi trên mọi kênh" not in board and "no channel" not in board
    page = client.get("/outbox")
    assert page.status_code == 200
    text = text_of(page.text)
    # Who (the demo duty officer on call this week: the group rotates weekly), on which channel with the address,
    # and the page's own text.
    assert f"{duty.replace('&', '&amp;')} · Thư điện tử {address}" in text
    assert f"[{ref}] Gọi trực: Mã độc trên máy chủ" in text
    # The page names the category and class in Vietnamese, not by their codes.
    assert "Loại: Tấn công sử dụng mã độc · ưu tiên P1 · phân loại thông thường" in text
    assert "/ack/" not in page.text  # the link would acknowledge as the recipient: the desk reads, not clicks
    # The timeline says the page was kept, not delivered.
    assert "Tin báo động được giữ trong hộp thư đi nội bộ" in text_of(client.get(f"/incidents/{ref}").text)
    member = app.test_client()
    sign_in(member, "member")
    assert member.get("/outbox").status_code == 403
    assert "Kênh chưa được cấu hình:" in text_of(member.get("/board").text)


def test_the_outbox_is_on_when_no_outward_channel_is_configured_unless_the_deployment_says() -> None:
    config = {"SMTP_URL": "smtp://127.0.0.1:2525", "OUTBOX_FILE": "outbox.jsonl"}
    assert not outbox.enabled(config)
    assert outbox.factory(config) is None
    assert outbox.enabled({**config, "OUTBOX": "on"})
    assert not outbox.enabled({"OUTBOX": "off"})
    assert outbox.enabled({"TELEGRAM_TOKEN": "x", "TELEGRAM_MODE": "off"})
