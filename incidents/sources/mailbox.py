"""The `[TBSC]` mailbox: the worker reads an IMAP folder and files each incident e-mail, or adds a reply as a comment.

Nothing is deleted: a UID cursor in the database says what was looked at, Message-ID says what was acted on, and a
message that cannot be filed is moved to the rejected folder and recorded as a `source.message_rejected` alarm.
"""

import asyncio
import contextlib
import email
import email.policy
import hashlib
import imaplib
import io
import logging
import os
import re
import select
import ssl
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import column, table
from sqlalchemy import select as sql_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from incidents import accounts, evidence
from incidents.access import Actor
from incidents.base import utcnow
from incidents.comments import add_comment
from incidents.enums import Category, Role
from incidents.errors import Conflict, Forbidden, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.filing import FilingResult, FilingSettings, file_incidents
from incidents.models import Event, User
from incidents.records import Evidence
from incidents.schemas.base import parse
from incidents.schemas.incidents import CommentCreate, IncidentCreate
from incidents.sources.ingest import touch
from incidents.sources.mail import Mail, Rejected, is_form03, read_form03, read_mail
from incidents.sources.models import MailboxCursor, MailboxMessage, Source, SourceKind
from incidents.uow import in_transaction

log = logging.getLogger("ucsc.mailbox")

PREFIX = "[TBSC]"  # Circular 20: incident e-mails carry it in their subject
REJECTED_EVENT = "source.message_rejected"
_RE_PREFIX = re.compile(r"^\s*((re|fw|fwd|tr|sv|aw|vs)\s*:\s*)+", re.IGNORECASE)
# A page's e-mail records its Message-ID on its delivery (playbooks sit above incidents: named, not imported).
_PAGES = table("pages", column("id"), column("incident_id"))
_DELIVERIES = table("deliveries", column("page_id"), column("message_id"))
# Our own e-mails' Message-IDs that name an incident without a lookup: the reporter's receipt.
_RECEIPT_ID = re.compile(r"<receipt\.email\.(\d+)@[^>]+>")


@dataclass(frozen=True)
class MailboxSettings:
    """What the poller needs from configuration."""

    url: str
    rejected_folder: str = "UCSC-Rejected"
    poll_seconds: float = 60.0
    username: str = "mailbox"
    senders: tuple[str, ...] = ()  # addresses or "@domain"s allowed to file; empty: anyone
    max_bytes: int = 25 * 1024 * 1024
    timeout: float = 30.0
    filing: FilingSettings = field(default_factory=FilingSettings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MailboxSettings":
        senders = tuple(s.strip().lower() for s in str(config.get("MAILBOX_SENDERS") or "").split(",") if s.strip())
        return cls(
            url=str(config["MAILBOX_URL"]),
            rejected_folder=str(config.get("MAILBOX_REJECTED_FOLDER") or "UCSC-Rejected"),
            poll_seconds=float(config.get("MAILBOX_POLL_SECONDS", 60)),
            username=str(config.get("MAILBOX_USER") or "mailbox"),
            senders=senders,
            max_bytes=int(config.get("MAILBOX_MAX_BYTES", 25 * 1024 * 1024)),
            filing=FilingSettings(
                ref_prefix=str(config.get("REF_PREFIX", "TH")),
                standing_body=config.get("STANDING_BODY"),
                receipts_by_email=bool(config.get("SMTP_URL")),
            ),
        )

    @property
    def folder(self) -> str:
        return unquote(urlsplit(self.url).path.lstrip("/")) or "INBOX"

    @property
    def source_name(self) -> str:
        parts = urlsplit(self.url)
        user = unquote(parts.username or "")
        return f"mailbox:{user}@{parts.hostname}/{self.folder}"[:150]


# ------------------------------------------------------------------------------------------------ filing


def mailbox_actor(session: Session, settings: MailboxSettings) -> Actor:
    """The service account the mailbox files as: a responder of the standing body, created on first use.

    A responder files, adds evidence and comments on the incidents its organisation takes part in (every incident
    names the standing body), and nothing at the desk; a red incident it is not named on stays closed to it.
    """
    user = session.scalar(sql_select(User).where(User.username == settings.username))
    if user is None:
        standing = settings.filing.standing_body or ""

        def create() -> User:
            return accounts.create_user(session=session, username=settings.username, role=Role.RESPONDER,
                                        organisation=standing, password_hash=None, display_name="[TBSC] mailbox",
                                        is_service=True)  # fmt: skip

        try:
            user = in_transaction(session, create)
        except (IntegrityError, Conflict):
            session.rollback()
            user = session.scalar(sql_select(User).where(User.username == settings.username))
    if user is None or not user.active:
        raise RuntimeError(f"the mailbox user {settings.username!r} is switched off")
    return Actor(user_id=user.id, username=user.username, role=Role(user.role), organisation_id=user.organisation_id)


def mailbox_source(session: Session, settings: MailboxSettings, actor: Actor) -> Source:
    """The Source row of this mailbox (kind `mailbox`, no token), registered on first use."""
    found = session.scalar(sql_select(Source).where(Source.name == settings.source_name))
    if found is None:

        def create() -> Source:
            made = Source(kind=SourceKind.MAILBOX, name=settings.source_name, token_id=None,
                          created_by_id=actor.user_id, mapping={})  # fmt: skip
            session.add(made)
            session.flush()
            return made

        try:
            found = in_transaction(session, create)
        except IntegrityError:
            session.rollback()
            found = session.scalar(sql_select(Source).where(Source.name == settings.source_name))
    return found


def _strip_subject(subject: str) -> str:
    title = _RE_PREFIX.sub("", subject)
    return " ".join(title.replace(PREFIX, " ").split()) or "[TBSC]"


def _target(session: Session, mail: Mail, source: Source, settings: MailboxSettings) -> tuple[int | str | None, bool]:
    """The incident a reply concerns (by a Message-ID of ours, then by a ref in the subject), and whether it is one."""
    for mid in mail.replies_to:
        matched = _RECEIPT_ID.fullmatch(mid)
        if matched:
            return int(matched.group(1)), True
        incident_id = session.scalar(
            sql_select(_PAGES.c.incident_id)
            .join(_DELIVERIES, _DELIVERIES.c.page_id == _PAGES.c.id)
            .where(_DELIVERIES.c.message_id == mid)
        )
        if incident_id is None:
            incident_id = session.scalar(
                sql_select(MailboxMessage.incident_id).where(
                    MailboxMessage.source_id == source.id, MailboxMessage.message_key == mid
                )
            )
        if incident_id is not None:
            return incident_id, True
    ref = re.search(rf"\b{re.escape(settings.filing.ref_prefix)}-\d{{4}}-\d{{5,}}\b", mail.subject)
    if ref:
        return ref.group(0), True
    return None, False


def _allowed(sender: str | None, senders: tuple[str, ...]) -> bool:
    if not senders:
        return True
    if not sender:
        return False
    return sender in senders or any(s.startswith("@") and sender.endswith(s) for s in senders)


def handle(
    *, session: Session, raw: bytes, actor: Actor, source: Source, settings: MailboxSettings, store: evidence.Store
) -> str:
    """Act on one message: `incident`, `comment`, `duplicate`, `ignored` (not ours); Rejected when it cannot be."""
    mail = read_mail(raw)
    done = session.scalar(
        sql_select(MailboxMessage).where(MailboxMessage.source_id == source.id, MailboxMessage.message_key == mail.key)
    )
    done_id, done_incident, done_complete = (done.id, done.incident_id, done.complete) if done else (None, None, False)
    session.rollback()
    if done_complete:
        return "duplicate"
    target, is_reply = _target(session, mail, source, settings)
    if PREFIX not in mail.subject.upper() and not (is_reply and mail.replies_to and isinstance(target, int)):
        return "ignored"
    if not _allowed(mail.sender_email, settings.senders):
        raise Rejected(f"the sender {mail.sender_email or 'unknown'} may not file by e-mail")
    if done_id is not None:  # filed, but a pass stopped before every attachment was evidence
        _add_evidence(session, actor, done_incident, mail, store)
        _complete(session, done_id)
        return "duplicate"
    if is_reply:
        return _comment(session, actor, source, mail, target, store)
    return _file(session, actor, source, mail, settings, store)


def _complete(session: Session, row_id: int) -> None:
    def work() -> None:
        session.get_one(MailboxMessage, row_id).complete = True

    in_transaction(session, work)


def _sender_line(mail: Mail) -> str:
    who = f"{mail.sender_name} <{mail.sender_email}>" if mail.sender_name else (mail.sender_email or "?")
    return f"{who}: {mail.subject}"


def _file(
    session: Session, actor: Actor, source: Source, mail: Mail, settings: MailboxSettings, store: evidence.Store
) -> str:
    form = next((a for a in mail.attachments if is_form03(a)), None)
    fields = read_form03(form.data, session) if form is not None else {}
    reporter = {"name": mail.sender_name, "email": mail.sender_email, **fields.pop("reporter", {})}
    description = fields.pop("description", None)
    if description and mail.body and mail.body not in description:
        description = f"{description}\n\n— E-mail —\n{mail.body}"
    data = {
        "title": fields.pop("title", None) or _strip_subject(mail.subject),
        "category": fields.pop("category", None) or Category.OTHER.value,
        "description": description or mail.body,
        "reporter": {k: v for k, v in reporter.items() if v},
        **fields,
    }
    try:
        item = parse(IncidentCreate, data)
    except ValidationFailed as exc:
        raise Rejected("; ".join(f"{e.field}: {e.message}" for e in exc.errors) or str(exc)) from exc
    now = utcnow()
    row: list[MailboxMessage] = []

    def then(result: FilingResult) -> None:
        touch(session, source, now)
        record = MailboxMessage(source_id=source.id, message_key=mail.key, outcome="incident",
                                incident_id=result.incident_ids[0], complete=not mail.attachments)  # fmt: skip
        session.add(record)
        session.flush()
        row.append(record)

    try:
        filed = file_incidents(session=session, items=[item], actor=actor, settings=settings.filing, then=then)
    except IntegrityError:  # another worker filed this Message-ID first
        session.rollback()
        return "duplicate"
    if mail.attachments:
        _add_evidence(session, actor, filed.incident_ids[0], mail, store)
        _complete(session, row[-1].id)
    return "incident"


def _comment(
    session: Session, actor: Actor, source: Source, mail: Mail, target: int | str | None, store: evidence.Store
) -> str:
    body = f"{_sender_line(mail)}\n\n{mail.body}".strip()[:10_000]
    row: list[MailboxMessage] = []

    def then(comment: Any) -> None:
        touch(session, source, utcnow())
        record = MailboxMessage(source_id=source.id, message_key=mail.key, outcome="comment",
                                incident_id=comment.incident_id, comment_id=comment.id,
                                complete=not mail.attachments)  # fmt: skip
        session.add(record)
        session.flush()
        row.append(record)

    try:
        comment = add_comment(session=session, incident_id=target or 0, data=CommentCreate(body=body),
                                      actor=actor, then=then)  # fmt: skip
    except (NotFound, Forbidden) as exc:
        session.rollback()
        raise Rejected(f"a reply to an incident the mailbox does not know or may not see: {target}") from exc
    except IntegrityError:
        session.rollback()
        return "duplicate"
    if mail.attachments:
        _add_evidence(session, actor, comment.incident_id, mail, store)
        _complete(session, row[-1].id)
    return "comment"


def _add_evidence(session: Session, actor: Actor, incident_id: int | None, mail: Mail, store: evidence.Store) -> None:
    """Each attachment once as evidence (collected by the mailbox, SHA-256 in its custody record)."""
    if incident_id is None:
        return
    have = set(session.scalars(sql_select(Evidence.sha256).where(Evidence.incident_id == incident_id)))
    session.rollback()
    for item in mail.attachments:
        digest = hashlib.sha256(item.data).hexdigest()
        if digest in have or not item.data:
            continue
        have.add(digest)
        kind = "document" if item.media_type.startswith(("text/", "application/pdf")) or is_form03(item) else "other"
        evidence.add_evidence(
            session=session, incident_id=incident_id, stream=io.BytesIO(item.data), filename=item.filename,
            media_type=item.media_type, kind=kind, tlp=None, description=f"e-mail {_sender_line(mail)}"[:10_000],
            actor=actor, store=store,
        )  # fmt: skip


def rejected_since(session: Session, since: datetime, *, limit: int = 5) -> list[Event]:
    """The newest messages moved to the rejected folder since `since`, for the desk's board."""
    stmt = sql_select(Event).where(Event.kind == REJECTED_EVENT, Event.at >= since).order_by(Event.id.desc())
    return list(session.scalars(stmt.limit(limit)))


def reject(*, session: Session, source: Source, key: str | None, subject: str, sender: str | None, reason: str,
           folder: str) -> bool:  # fmt: skip
    """Record a rejected message and its alarm once per Message-ID; False when it was recorded before."""

    def work() -> bool:
        if key and session.scalar(
            sql_select(MailboxMessage.id).where(
                MailboxMessage.source_id == source.id, MailboxMessage.message_key == key
            )
        ):
            return False
        if key:
            session.add(MailboxMessage(source_id=source.id, message_key=key, outcome="rejected", complete=True,
                                       reason=reason[:2000]))  # fmt: skip
        record_event(
            session, kind=REJECTED_EVENT, actor=None, note=reason[:1000],
            data={"source": source.name, "message_id": key, "subject": subject[:300], "from": sender,
                  "reason": reason[:2000], "moved_to": folder},
        )  # fmt: skip
        return True

    try:
        return in_transaction(session, work)
    except IntegrityError:
        session.rollback()
        return False


# ------------------------------------------------------------------------------------------------ IMAP


class Poller:
    """One IMAP connection to the mailbox folder: a pass acts on messages above the cursor, then it waits."""

    def __init__(self, sessions: Callable[[], Session], settings: MailboxSettings, store: evidence.Store) -> None:
        self.sessions = sessions
        self.settings = settings
        self.store = store
        self.imap: imaplib.IMAP4 | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = threading.Event()

    def connect(self) -> imaplib.IMAP4:
        parts = urlsplit(self.settings.url)
        host, timeout = parts.hostname or "localhost", self.settings.timeout
        if parts.scheme == "imaps":
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, parts.port or 993, ssl_context=ssl.create_default_context(),
                                                    timeout=timeout)  # fmt: skip
        elif parts.scheme == "imap":
            imap = imaplib.IMAP4(host, parts.port or 143, timeout=timeout)
            if "starttls=1" in parts.query:
                imap.starttls(ssl.create_default_context())
        else:
            raise ValueError("UCSC_MAILBOX_URL must start with imap:// or imaps://")
        imap.login(unquote(parts.username or ""), unquote(parts.password or ""))
        # Servers announce more once signed in (MOVE, UIDPLUS, IDLE): read the list again.
        typ, data = imap.capability()
        if typ == "OK" and data and data[-1]:
            imap.capabilities = tuple(data[-1].decode().upper().split())
        self.imap = imap
        return imap

    def close(self) -> None:
        if self.imap is not None:
            with contextlib.suppress(Exception):
                self.imap.logout()
            self.imap = None

    def stop(self) -> None:
        """Safe from any thread: end a wait at once."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _folder_exists(self, imap: imaplib.IMAP4, name: str) -> bool:
        typ, data = imap.list('""', _quote(name))
        return typ == "OK" and any(d for d in data if d)

    def run_once(self) -> dict[str, int]:
        """Act on every message above the cursor; counts per outcome."""
        imap = self.imap or self.connect()
        settings = self.settings
        if not self._folder_exists(imap, settings.rejected_folder):
            imap.create(_quote(settings.rejected_folder))
        typ, _ = imap.select(_quote(settings.folder))
        if typ != "OK":
            raise RuntimeError(f"cannot open the folder {settings.folder!r}")
        uidvalidity = int(imap.untagged_responses.get("UIDVALIDITY", [b"0"])[-1])
        counts: dict[str, int] = {}
        with self.sessions() as session:
            actor = mailbox_actor(session, settings)
            source = mailbox_source(session, settings, actor)
            cursor = session.get(MailboxCursor, source.id)
            last = cursor.last_uid if cursor is not None and cursor.uidvalidity == uidvalidity else 0
            session.rollback()
            typ, data = imap.uid("SEARCH", None, f"UID {last + 1}:*")
            uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) > last)
            for uid in uids:
                outcome = self._one(imap, session, actor, source, uid)
                counts[outcome] = counts.get(outcome, 0) + 1
                self._advance(session, source.id, uidvalidity, uid)
        return counts

    def _one(self, imap: imaplib.IMAP4, session: Session, actor: Actor, source: Source, uid: int) -> str:
        settings = self.settings
        typ, data = imap.uid("FETCH", str(uid), "(RFC822.SIZE)")
        size_match = re.search(rb"RFC822\.SIZE (\d+)", data[0] or b"") if typ == "OK" and data else None
        size = int(size_match.group(1)) if size_match else 0
        header = self._headers(imap, uid)
        if size > settings.max_bytes:
            return self._reject(
                imap, session, source, uid, header, f"message of {size} bytes, over {settings.max_bytes}"
            )
        typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
        raw = next((d[1] for d in data if isinstance(d, tuple)), None) if typ == "OK" else None
        if raw is None:
            return "gone"  # expunged by someone else between the search and the fetch
        try:
            return handle(session=session, raw=raw, actor=actor, source=source, settings=settings, store=self.store)
        except Rejected as exc:
            session.rollback()
            return self._reject(imap, session, source, uid, header, str(exc))
        except ValidationFailed as exc:
            session.rollback()
            reason = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or str(exc)
            return self._reject(imap, session, source, uid, header, reason)

    def _headers(self, imap: imaplib.IMAP4, uid: int) -> EmailMessage:
        typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM MESSAGE-ID)])")
        raw = next((d[1] for d in data if isinstance(d, tuple)), b"") if typ == "OK" else b""
        return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]

    def _reject(
        self, imap: imaplib.IMAP4, session: Session, source: Source, uid: int, header: EmailMessage, reason: str
    ) -> str:
        folder = self.settings.rejected_folder
        subject = " ".join(str(header.get("Subject", "")).split())
        sender = getaddresses([str(header.get("From", ""))])[0][1] or None
        key = str(header.get("Message-ID", "")).strip()[:300] or None
        first = reject(session=session, source=source, key=key, subject=subject, sender=sender, reason=reason,
                       folder=folder)  # fmt: skip
        if first:
            log.warning("mailbox: message %s (%s) rejected: %s", key or uid, subject, reason)
        capabilities = set(imap.capabilities)
        if "MOVE" in capabilities:  # RFC 6851; imaplib knows no MOVE command, so it is sent as UID's argument
            typ, data = imap._simple_command("UID", "MOVE", str(uid), _quote(folder))
        else:  # the copy exists before the original goes; without UIDPLUS the original stays where it was
            typ, data = imap.uid("COPY", str(uid), _quote(folder))
            if typ == "OK" and "UIDPLUS" in capabilities:
                imap.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")
                imap.uid("EXPUNGE", str(uid))
        if typ != "OK":
            log.error("mailbox: message %s could not be moved to %s: %s", key or uid, folder, data)
        return "rejected"

    def _advance(self, session: Session, source_id: int, uidvalidity: int, uid: int) -> None:
        def work() -> None:
            cursor = session.get(MailboxCursor, source_id, with_for_update=True)
            if cursor is None:
                session.add(
                    MailboxCursor(source_id=source_id, uidvalidity=uidvalidity, last_uid=uid, updated_at=utcnow())
                )
            elif cursor.uidvalidity != uidvalidity or cursor.last_uid < uid:
                cursor.uidvalidity, cursor.last_uid, cursor.updated_at = uidvalidity, uid, utcnow()

        in_transaction(session, work)

    def wait(self) -> None:
        """Until the folder changes (IDLE) or `poll_seconds` pass, or `stop` is called."""
        imap, timeout = self.imap, self.settings.poll_seconds
        if imap is None or "IDLE" not in imap.capabilities:
            select.select([self._wake_r], [], [], timeout)
            return
        tag = imap._new_tag()  # imaplib of Python 3.11 has no IDLE: the three lines of RFC 2177 by hand
        imap.send(tag + b" IDLE\r\n")
        if not imap.readline().startswith(b"+"):
            raise imaplib.IMAP4.abort("IDLE refused")
        sock = imap.sock
        pending = getattr(sock, "pending", lambda: 0)()
        if not pending:
            select.select([sock, self._wake_r], [], [], timeout)
        imap.send(b"DONE\r\n")
        while not imap.readline().startswith(tag):
            pass
        imap.untagged_responses.clear()

    def serve(self) -> None:
        """Pass, wait, pass… until stopped; a lost connection is opened again after a pause."""
        while not self._stopped.is_set():
            try:
                counts = self.run_once()
                if counts:
                    log.info("mailbox pass: %s", counts)
                if not self._stopped.is_set():
                    self.wait()
            except (OSError, imaplib.IMAP4.error) as exc:
                log.warning("mailbox: %s; reconnecting", exc)
                self.close()
                select.select([self._wake_r], [], [], min(self.settings.poll_seconds, 30))
            except Exception:  # a database hiccup must not end the poller: the next pass retries
                log.exception("mailbox pass failed")
                select.select([self._wake_r], [], [], min(self.settings.poll_seconds, 30))
        self.close()


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def run(poller: Poller) -> None:
    """The worker's task: the blocking poller in a thread of its own, stopped when the task is cancelled."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="ucsc-mailbox")
    try:
        await loop.run_in_executor(pool, poller.serve)
    finally:
        poller.stop()
        pool.shutdown(wait=False)
