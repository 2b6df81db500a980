"""Reading an incident e-mail: its sender, text (HTML as plain text), attachments, and a Form 03 DOCX's fields."""

import contextlib
import email
import email.policy
import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from html.parser import HTMLParser
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.enums import TLP, DetectionMethod, NotifiedParty
from incidents.models import System

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # Form 03 writes local times


class Rejected(Exception):
    """The message cannot become an incident or a comment; its reason goes on the alarm."""


@dataclass
class Attachment:
    filename: str
    media_type: str
    data: bytes


@dataclass
class Mail:
    """What the poller reads from one message."""

    key: str
    subject: str
    sender_name: str | None
    sender_email: str | None
    body: str
    attachments: list[Attachment]
    replies_to: list[str]  # In-Reply-To and References, Message-IDs in angle brackets


class _Text(HTMLParser):
    """HTML to plain text: text nodes only, scripts and styles dropped, block ends as line breaks."""

    _SKIP: ClassVar[set[str]] = {"script", "style", "head", "title"}
    _BLOCK: ClassVar[set[str]] = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "table", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The text a reader sees in an HTML body; nothing of it is ever rendered as HTML."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def read_mail(raw: bytes) -> Mail:
    """Parse one RFC 5322 message; Rejected when it cannot be decoded or holds nothing to file."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        subject = " ".join(str(msg.get("Subject", "")).split())
        name, address = parseaddr(str(msg.get("From", "")))
        message_id = str(msg.get("Message-ID", "")).strip()
        replies = " ".join(str(msg.get(h, "")) for h in ("In-Reply-To", "References"))
        plain, html, attachments = None, None, []
        for part in msg.walk():
            if part.is_multipart():
                continue
            disposition = part.get_content_disposition()
            filename = part.get_filename()
            if disposition == "attachment" or filename:
                data = part.get_payload(decode=True) or b""
                attachments.append(Attachment(filename or "attachment.bin", part.get_content_type(), data))
            elif part.get_content_type() == "text/plain" and plain is None:
                plain = part.get_content()
            elif part.get_content_type() == "text/html" and html is None:
                html = part.get_content()
    except (LookupError, UnicodeError, ValueError, TypeError) as exc:
        raise Rejected(f"undecodable message: {exc}") from exc
    body = (plain or "").strip() or (html_to_text(html) if html else "")
    if not body and not attachments:
        raise Rejected("no body and no attachment")
    key = message_id[:300] if message_id else f"sha256:{hashlib.sha256(raw).hexdigest()}"
    return Mail(
        key=key,
        subject=subject,
        sender_name=name.strip() or None,
        sender_email=address.strip().lower() or None,
        body=body,
        attachments=attachments,
        replies_to=re.findall(r"<[^<>\s]+>", replies),
    )


def _label(text: str) -> str:
    return " ".join(text.replace("(*)", "").split()).strip().lower()


def _value(text: str) -> str | None:
    value = text.strip()
    return None if value in ("", "—", "-") else value


def _checked(text: str, labels: Mapping[Any, str]) -> list[Any]:
    """The options whose box is ticked (☒ or ☑ or [x]) in a Form 03 checkbox cell."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line[:1] in ("☒", "☑") or line.lower().startswith("[x]"):
            rest = line.lstrip("☒☑").removeprefix("[x]").removeprefix("[X]").strip()
            found += [key for key, label in labels.items() if rest.startswith(label)]
    return found


def read_form03(data: bytes, session: Session) -> dict[str, Any]:
    """The Form 03 fields a DOCX holds (the layout incidents/reporting/reports.py writes), as IncidentCreate fields."""
    from docx import Document  # python-docx loads lxml: only when a form arrives

    from incidents.reporting.reports import CATEGORY_VI, DETECTION_VI, NOTIFIED_VI, TLP_VI

    try:
        doc = Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises zipfile, lxml and KeyError alike for a broken file
        raise Rejected(f"the Form 03 attachment cannot be read: {exc}") from exc
    out: dict[str, Any] = {}
    reporter: dict[str, Any] = {}
    contact: dict[str, Any] = {}
    for grid in doc.tables:
        rows = [(_label(r.cells[0].text), r.cells[-1].text) for r in grid.rows if len(r.cells) >= 2]
        labels = {label for label, _ in rows}
        person = reporter if "người báo cáo" in labels else contact if "họ và tên" in labels else None
        for label, text in rows:
            value = _value(text)
            if value is None:
                continue
            if person is not None and label in ("điện thoại", "email", "địa chỉ", "chức vụ"):
                person[
                    {"điện thoại": "phone", "email": "email", "địa chỉ": "address", "chức vụ": "position"}[label]
                ] = value
            elif label == "tên tổ chức/cá nhân báo cáo sự cố":
                reporter["organisation"] = value
            elif label == "người báo cáo":
                reporter["name"] = value
            elif label == "họ và tên":
                contact["name"] = value
            elif label == "tên sự cố":
                out["title"] = value
            elif label == "loại sự cố":
                out["category"] = next((c.value for c, vi in CATEGORY_VI.items() if vi == value or c.value == value),
                                       None)  # fmt: skip
            elif label == "mô tả":
                out["description"] = value
            elif label == "tên hệ thống bị sự cố":
                code = session.scalar(select(System.code).where((System.name == value) | (System.code == value)))
                if code is not None:
                    out["affected_system"] = code
            elif label == "ngày, giờ phát hiện":
                with contextlib.suppress(ValueError):
                    out["detected_at"] = datetime.strptime(value, "%d/%m/%Y %H:%M").replace(tzinfo=LOCAL_TZ)
            elif label == "hiện trạng":
                handled = _checked(value, {True: "Đã được xử lý", False: "Chưa được xử lý"})
                if handled:
                    out["handled_at_report"] = handled[0]
            elif label == "cách thức phát hiện":
                method = _checked(value, DETECTION_VI)
                if method:
                    out["detection_method"] = DetectionMethod(method[0]).value
            elif label == "đã thông báo":
                out["notified_parties"] = [NotifiedParty(p).value for p in _checked(value, NOTIFIED_VI)]
            elif label == "hệ điều hành, phiên bản":
                out["system_os"] = value
            elif label == "các dịch vụ có trên hệ thống":
                out["system_services"] = value
            elif label == "các biện pháp an toàn thông tin đã triển khai":
                out["security_measures"] = value
            elif label == "mức độ chia sẻ":
                tlp = next((t for t, vi in TLP_VI.items() if vi == value or str(t) == value), None)
                if tlp is not None:
                    out["tlp"] = TLP(tlp).value
            elif label == "kiến nghị, đề xuất":
                out["support_requested"] = value
    if reporter:
        out["reporter"] = reporter
    if contact:
        out["contact"] = contact
    return {k: v for k, v in out.items() if v is not None}


def is_form03(attachment: Attachment) -> bool:
    return attachment.filename.lower().endswith(".docx")
