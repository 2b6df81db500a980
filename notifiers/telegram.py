"""Telegram messages: the page text in the contact's language, its three buttons, and signed callback data.

No Flask here and no network: the worker's Telegram runtime (`app/telegram/`) sends what this module
renders, and verifies presses with `verify_callback`.
"""

import base64
import hashlib
import hmac
import html
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.warnings import PTBDeprecationWarning

from incidents.enums import category_name, tlp_above
from notifiers.base import DeliveryFailed, Message

CHANNEL = "telegram"
MAX_TEXT = 4096  # characters after entity parsing (telegram.constants.MessageLimit.MAX_TEXT_LENGTH)
MAX_CALLBACK_DATA = 64  # bytes (telegram.constants.InlineKeyboardButtonLimit.MAX_CALLBACK_DATA)
DEFAULT_LANGUAGE = "vi"
LANGUAGES = ("vi", "en")
LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
# A group chat is read by people the page's TLP may not reach: at most amber there (design, security baseline).
GROUP_MAX_TLP = "amber"
# Caps on the free-text fields, so the longest possible page stays within MAX_TEXT with everything else.
FIELD_CAPS = {"title": 300, "system": 200, "ask": 2000, "organisation": 200, "note": 600}

ACK, SUPPORT, DONE = "a", "s", "d"  # one byte each: the 64-byte budget goes to the signature
ACTIONS = (ACK, SUPPORT, DONE)
_CALLBACK_VERSION = "u1"
_MAC_CHARS = 22  # 132 bits of HMAC-SHA256, base64url


def _(message: str) -> str:
    """Mark a string for extraction; it is translated where it is used (`Renderer.gettext`)."""
    return message


BUTTON_LABELS = {ACK: _("Acknowledge"), SUPPORT: _("Request support"), DONE: _("Report done")}
CLASS_LABELS = {"ordinary": _("ordinary"), "serious": _("serious")}


def retry_seconds(exc: Any) -> float:
    """`RetryAfter.retry_after` in seconds, whether PTB gives an int (22.x) or a timedelta (PTB_TIMEDELTA, 23)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def esc(value: Any) -> str:
    """Escape a user-supplied string for Telegram's HTML parse mode (`<`, `>`, `&` and quotes)."""
    return html.escape(str(value), quote=True)


def _cap(value: str | None, field: str) -> str:
    text = " ".join((value or "").split()) if field != "ask" else (value or "").strip()
    limit = FIELD_CAPS[field]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _catalogue(directory: str, language: str, domain: str) -> NullTranslations | None:
    """A compiled .mo if there is one, else the .po compiled in memory (the UI's catalogues share the folder)."""
    folder = Path(directory) / language / "LC_MESSAGES"
    mo, po = folder / f"{domain}.mo", folder / f"{domain}.po"
    if mo.exists():
        with mo.open("rb") as fp:
            return Translations(fp, domain=domain)
    if po.exists():
        with po.open("rb") as fp:
            catalog = read_po(fp, locale=language, domain=domain)
        buffer = BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        return Translations(buffer, domain=domain)
    return None


@cache
def translations(directory: str | Path, language: str | None) -> NullTranslations:
    """The Telegram catalogue (`telegram` domain) of `language`, falling back to the UI's (`messages`)."""
    language = language if language in LANGUAGES else DEFAULT_LANGUAGE
    found = [c for c in (_catalogue(str(directory), language, d) for d in ("telegram", "messages")) if c is not None]
    if not found:
        return NullTranslations()
    for other in found[1:]:
        found[0].add_fallback(other)
    return found[0]


@dataclass(frozen=True)
class PageView:
    """What a page message says about its incident, already checked against what this chat may see."""

    page_id: int
    ref: str
    title: str
    url: str
    tlp: str
    category: str | None = None
    priority: str | None = None
    incident_class: str | None = None
    system: str | None = None
    organisation: str | None = None
    ask: str | None = None
    exercise: bool = False


class Renderer:
    """Messages in one language: page texts, their keyboards, acknowledgements and replies."""

    def __init__(self, directory: str | Path, language: str | None = None) -> None:
        self.language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        self.catalogue = translations(directory, self.language)

    def gettext(self, message: str) -> str:
        return self.catalogue.gettext(message)

    def page(self, view: PageView, *, max_tlp: str = "red") -> str:
        """The page text: everything when the chat may read the TLP, else only the reference and the link."""
        t = self.gettext
        lines = []
        if view.exercise:
            lines.append(f"🧪 <b>{esc(t('DRILL: this is an exercise, not a real incident'))}</b>")
        head = f"🚨 <b>{esc(view.ref)}</b>"
        if tlp_above(view.tlp, max_tlp):
            lines.append(head + f" · TLP:{esc(view.tlp.upper())}")
            lines.append(esc(t("Details are restricted: open the incident to read them.")))
            lines.append(f'<a href="{esc(view.url)}">{esc(t("Open the incident"))}</a>')
            return "\n".join(lines)
        lines.append(f"{head} {esc(_cap(view.title, 'title'))}")
        facts = []
        if view.category:
            facts.append((t("Category"), category_name(view.category, self.language)))
        if view.priority:
            facts.append((t("Priority"), view.priority))
        if view.incident_class:
            facts.append((t("Class"), t(CLASS_LABELS.get(view.incident_class, view.incident_class))))
        if view.system:
            facts.append((t("Affected system"), _cap(view.system, "system")))
        facts.append(("TLP", view.tlp.upper()))
        lines += [f"{esc(name)}: {esc(value)}" for name, value in facts]
        if view.ask:
            who = f" ({esc(_cap(view.organisation, 'organisation'))})" if view.organisation else ""
            lines.append(f"<b>{esc(t('Asked of you'))}</b>{who}: {esc(_cap(view.ask, 'ask'))}")
        lines.append(f'<a href="{esc(view.url)}">{esc(t("Open the incident"))}</a>')
        return "\n".join(lines)

    def keyboard(self, buttons: dict[str, str]) -> InlineKeyboardMarkup | None:
        """One button per row, in the order acknowledge, request support, report done; `buttons` maps action→data."""
        rows = [[InlineKeyboardButton(self.gettext(BUTTON_LABELS[a]), callback_data=buttons[a])]
                for a in ACTIONS if a in buttons]  # fmt: skip
        return InlineKeyboardMarkup(rows) if rows else None

    def outcome(self, text: str, action: str, who: str, at: datetime, note: str | None = None) -> str:
        """The page text with a line saying who pressed which button, and when (local time)."""
        label = {ACK: _("Acknowledged by"), SUPPORT: _("Support requested by"), DONE: _("Reported done by")}[action]
        when = at.astimezone(LOCAL_TZ).strftime("%H:%M %d/%m/%Y")
        line = f"✅ <b>{esc(self.gettext(label))}</b> {esc(who)} · {esc(when)}"
        if note:
            line += f"\n{esc(_cap(note, 'note'))}"
        combined = f"{text}\n{line}"
        return combined if len(combined) <= MAX_TEXT else text

    def board(self, view: PageView, *, headline: str, max_tlp: str = GROUP_MAX_TLP) -> str:
        """A post to the board's group: a headline (serious, escalation, request for direction) and the page."""
        return f"<b>{esc(self.gettext(headline))}</b>\n{self.page(view, max_tlp=max_tlp)}"


BOARD_HEADLINES = {
    "serious": _("Serious incident"),
    "escalation": _("Escalated to the board"),
    "direction": _("Request for direction: reply to this message to give the board's directive"),
}


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def _mac(secret: bytes, *parts: object) -> str:
    digest = hmac.new(secret, ":".join(str(p) for p in parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:_MAC_CHARS]


def callback_key(secret_key: str) -> bytes:
    """The HMAC key for callback data, derived so it is not the app's secret key itself."""
    return hashlib.sha256(b"ucsc.telegram.callback\x00" + secret_key.encode()).digest()


def sign_callback(secret: bytes, action: str, page_id: int, chat_id: int, issued: datetime) -> str:
    """`u1:a:<page>:<issued>:<mac>`: the MAC also covers the chat it was sent to, so it works nowhere else."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    stamp = _b36(int(issued.timestamp()))
    page = _b36(page_id)
    data = (
        f"{_CALLBACK_VERSION}:{action}:{page}:{stamp}:{_mac(secret, _CALLBACK_VERSION, action, page, stamp, chat_id)}"
    )
    assert len(data.encode()) <= MAX_CALLBACK_DATA  # noqa: S101 - a programming error, not input
    return data


@dataclass(frozen=True)
class Callback:
    action: str
    page_id: int
    issued: datetime
    mac: str


class CallbackRefused(Exception):
    """A press that must change nothing; `reason` is forged, expired (or the runtime's own reasons)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_callback(secret: bytes, data: str, chat_id: int, *, now: datetime, ttl: timedelta) -> Callback:
    """The press's action and page when the data is ours, for this chat and not older than `ttl`."""
    parts = data.split(":") if data else []
    if len(parts) != 5 or parts[0] != _CALLBACK_VERSION or parts[1] not in ACTIONS:
        raise CallbackRefused("forged")
    _, action, page, stamp, mac = parts
    if not hmac.compare_digest(mac, _mac(secret, _CALLBACK_VERSION, action, page, stamp, chat_id)):
        raise CallbackRefused("forged")
    issued = datetime.fromtimestamp(int(stamp, 36), tz=now.tzinfo)
    if now - issued > ttl:
        raise CallbackRefused("expired")
    return Callback(action, int(page, 36), issued, mac)


class TelegramNotifier:
    """The `telegram` channel: hands a page to the Telegram leader's send queue (`outbox`, bound by the worker).

    Sending itself is the leader's alone (Telegram's limits are per token), so `send` only queues; a process
    without the runtime (no worker) refuses for now, and the delivery is retried.
    """

    channel = CHANNEL

    def __init__(self, outbox: Any = None) -> None:
        self.outbox = outbox

    def send(self, message: Message) -> str:
        if self.outbox is None:
            raise DeliveryFailed("the Telegram runtime does not run in this process")
        return self.outbox(message)


def factory(config: Any) -> TelegramNotifier | None:
    """The registry's factory: the channel exists when a token is set and `TELEGRAM_MODE` is not `off`."""
    if not config.get("TELEGRAM_TOKEN") or str(config.get("TELEGRAM_MODE") or "polling").lower() == "off":
        return None
    return TelegramNotifier()
