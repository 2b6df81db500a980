"""E-mail through SMTP (`UCSC_SMTP_URL`: smtp:// or smtps://, user and password in the URL)."""

import re
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

from notifiers.base import DeliveryFailed, Message, timeout_of

# Characters outside RFC 5322 `atext` (a ":" among them) may not stand in a msg-id's left part: a parser
# stops there (Python's reads "<receipt.email:5@x>" as "<receipt.email"), and a repeat could not be matched.
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


class EmailNotifier:
    channel = "email"

    def __init__(self, smtp_url: str, mail_from: str, *, timeout: float = 10.0, subject_prefix: str = "[TBSC]") -> None:
        parts = urlsplit(smtp_url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("UCSC_SMTP_URL must start with smtp:// or smtps://")
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.tls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.starttls = "starttls=1" in parts.query
        self.mail_from = mail_from
        self.timeout = timeout
        self.subject_prefix = subject_prefix  # Circular 20: incident e-mails carry "[TBSC]" in their subject
        # MAIL_FROM may carry a display name ("Ban Chỉ đạo <ucsc@example.vn>"): the domain is the address's.
        _, at, domain = parseaddr(mail_from)[1].rpartition("@")
        self.domain = domain if at and domain else "localhost"

    def message_id(self, key: str) -> str:
        """The same Message-ID on every attempt of one delivery, so a mailbox can drop a repeat.

        `receipt.email:42` becomes `<receipt.email.42@DOMAIN>`: each run of characters a msg-id may not hold
        turns into a dot.
        """
        left = ".".join(part for part in _NOT_ATEXT.split(key) if part) or "message"
        return f"<{left}@{self.domain}>"

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.mail_from
        mail["To"] = message.to
        subject = message.subject
        if self.subject_prefix and self.subject_prefix not in subject:
            subject = f"{self.subject_prefix} {subject}"
        mail["Subject"] = subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = self.message_id(message.key)
        mail.set_content(message.text)  # UTF-8: Vietnamese text stays readable
        return mail

    def send(self, message: Message) -> str:
        mail = self.build(message)
        try:
            if self.tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed(f"recipient refused: {exc.recipients}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: {exc}") from exc
        return mail["Message-ID"]


def factory(config: Mapping[str, Any]) -> EmailNotifier | None:
    """The registry's factory: the channel exists when an SMTP server is configured."""
    if not config.get("SMTP_URL"):
        return None
    return EmailNotifier(
        config["SMTP_URL"],
        str(config.get("MAIL_FROM") or "ucsc@localhost"),
        timeout=timeout_of(config),
        subject_prefix=str(config.get("MAIL_SUBJECT_PREFIX", "[TBSC]") or ""),
    )
