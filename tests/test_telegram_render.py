"""Page messages: the contact's language, escaped HTML within 4,096 characters, TLP cut-down, signed buttons."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from notifiers import telegram as tg
from tests.botapi import parse_html, utf16_len

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "app" / "translations"
SECRET = tg.callback_key("test")
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def view(**overrides: object) -> tg.PageView:
    fields: dict = {
        "page_id": 42, "ref": "TH-2026-00042", "title": "Tấn công <DDoS> & \"giả mạo\"", "url": "https://u.vn/i/7?a=1&b=2",
        "tlp": "amber", "category": "dos", "priority": "P1", "incident_class": "serious", "system": "Cổng <DVC>",
        "organisation": "VNPT", "ask": "Lọc lưu lượng <tấn công> & báo cáo",
    }  # fmt: skip
    return tg.PageView(**{**fields, **overrides})


def test_a_page_in_vietnamese_names_everything_asked_with_user_text_escaped() -> None:
    text = tg.Renderer(TRANSLATIONS).page(view())
    visible = parse_html(text)  # what Telegram's HTML parser accepts
    for part in ("TH-2026-00042", "Tấn công <DDoS> & \"giả mạo\"", "Loại sự cố: Từ chối dịch vụ",
                 "Mức ưu tiên: P1", "Phân loại: nghiêm trọng", "Hệ thống bị sự cố: Cổng <DVC>", "TLP: AMBER",
                 "Đề nghị (VNPT): Lọc lưu lượng <tấn công> & báo cáo", "Mở sự cố"):  # fmt: skip
        assert part in visible, part
    assert 'href="https://u.vn/i/7?a=1&amp;b=2"' in text


def test_english_contacts_get_english_and_unknown_languages_vietnamese() -> None:
    assert "Category: Denial of service" in parse_html(tg.Renderer(TRANSLATIONS, "en").page(view()))
    assert "Loại sự cố" in tg.Renderer(TRANSLATIONS, "fr").page(view())


def test_the_three_buttons_come_in_order_with_their_vietnamese_labels() -> None:
    data = {a: tg.sign_callback(SECRET, a, 42, 1001, NOW) for a in tg.ACTIONS}
    markup = tg.Renderer(TRANSLATIONS).keyboard(data)
    assert [row[0].text for row in markup.inline_keyboard] == ["Nhận xử lý", "Cần hỗ trợ", "Đã xử lý xong"]
    en = tg.Renderer(TRANSLATIONS, "en").keyboard(data)
    assert [row[0].text for row in en.inline_keyboard] == ["Acknowledge", "Request support", "Report done"]


def test_the_longest_possible_page_fits_4096_characters() -> None:
    huge = view(title="<&>" * 5000, system="đ" * 5000, organisation="x" * 5000, ask="😀<" * 50_000)
    text = tg.Renderer(TRANSLATIONS).page(huge)
    assert utf16_len(parse_html(text)) <= tg.MAX_TEXT
    acked = tg.Renderer(TRANSLATIONS).outcome(text, tg.ACK, "<b>" * 100, NOW, note="n" * 10_000)
    assert utf16_len(parse_html(acked)) <= tg.MAX_TEXT


@pytest.mark.parametrize(("tlp", "maximum"), [("red", "amber"), ("amber+strict", "amber"), ("amber", "green")])
def test_above_the_channels_tlp_only_the_reference_and_the_link(tlp: str, maximum: str) -> None:
    visible = parse_html(tg.Renderer(TRANSLATIONS).page(view(tlp=tlp), max_tlp=maximum))
    assert "TH-2026-00042" in visible and "Mở sự cố" in visible
    for secret in ("DDoS", "Cổng", "Lọc lưu lượng", "VNPT", "Tấn công từ chối"):
        assert secret not in visible


def test_a_group_never_reads_above_amber() -> None:
    post = tg.Renderer(TRANSLATIONS).board(view(tlp="red"), headline=tg.BOARD_HEADLINES["serious"])
    assert "DDoS" not in parse_html(post) and "Sự cố nghiêm trọng" in parse_html(post)


def test_drills_say_so() -> None:
    assert "DIỄN TẬP" in tg.Renderer(TRANSLATIONS).page(view(exercise=True))
    assert "DIỄN TẬP" in tg.Renderer(TRANSLATIONS).page(view(exercise=True, tlp="red"), max_tlp="amber")
    assert "DIỄN TẬP" not in tg.Renderer(TRANSLATIONS).page(view())


def test_callback_data_fits_64_bytes_for_the_largest_ids_and_verifies() -> None:
    data = tg.sign_callback(SECRET, tg.SUPPORT, 2**63 - 1, -1_009_999_999_999, NOW)
    assert len(data.encode()) <= 64
    cb = tg.verify_callback(SECRET, data, -1_009_999_999_999, now=NOW, ttl=timedelta(days=7))
    assert (cb.action, cb.page_id) == (tg.SUPPORT, 2**63 - 1)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.replace(":a:", ":d:"),  # another action
        lambda d: d.replace(":16:", ":17:"),  # another page
        lambda d: d[:-1] + ("A" if d[-1] != "A" else "B"),  # another signature
        lambda d: "ack:1",  # not ours at all
        lambda d: "",
    ],
)
def test_forged_callback_data_is_refused(tamper) -> None:
    data = tg.sign_callback(SECRET, tg.ACK, 42, 1001, NOW)
    with pytest.raises(tg.CallbackRefused, match="forged"):
        tg.verify_callback(SECRET, tamper(data), 1001, now=NOW, ttl=timedelta(days=7))


def test_callback_data_works_only_in_the_chat_it_was_sent_to_and_expires() -> None:
    data = tg.sign_callback(SECRET, tg.ACK, 42, 1001, NOW)
    with pytest.raises(tg.CallbackRefused, match="forged"):
        tg.verify_callback(SECRET, data, 1002, now=NOW, ttl=timedelta(days=7))
    with pytest.raises(tg.CallbackRefused, match="forged"):
        tg.verify_callback(tg.callback_key("another key"), data, 1001, now=NOW, ttl=timedelta(days=7))
    with pytest.raises(tg.CallbackRefused, match="expired"):
        tg.verify_callback(SECRET, data, 1001, now=NOW + timedelta(days=8), ttl=timedelta(days=7))


def test_every_bot_string_has_a_vietnamese_translation() -> None:
    keywords = {"_": None, "gettext": None}
    found = set()
    for path in (ROOT / "notifiers" / "telegram.py", *sorted((ROOT / "app" / "telegram").glob("*.py"))):
        found |= {m for _, m, _, _ in extract_from_file("python", str(path), keywords=keywords) if isinstance(m, str)}
    with (TRANSLATIONS / "vi" / "LC_MESSAGES" / "telegram.po").open("rb") as fp:
        catalogue = {m.id: m.string for m in read_po(fp) if m.id}
    missing = sorted(m for m in found if not catalogue.get(m))
    assert len(found) > 30 and missing == []  # category names are data (incidents.enums), not bot strings
