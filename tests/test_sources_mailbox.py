"""The [TBSC] mailbox against a real Debian dovecot-imapd on loopback: filing, evidence, Form 03, replies, rejects."""

import email
import email.policy
import hashlib
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from incidents import evidence
from incidents.filing import FilingSettings
from incidents.models import Comment, Event, Incident, System, User
from incidents.records import CustodyRecord, Evidence
from incidents.reporting import reports
from incidents.reporting.render import docx_bytes
from incidents.sources import mailbox
from incidents.sources.models import MailboxCursor, Source
from notifiers.email import EmailNotifier
from playbooks.models import Contact, Delivery, Page
from tests.live import free_port
from tests.web import make_user, sign_in

USER, PASSWORD = "ucsc", "s3cret"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
LOG = b"Nov 20 08:29:59 web1 sshd[812]: Failed password for root from 198.51.100.7 port 52110 ssh2\n"


class Dovecot:
    """A dovecot started for this module: one passwd-file user, maildir under a temp folder, plain IMAP on loopback."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "Dovecot":
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not os.path.exists(binary):
            pytest.fail("dovecot is not installed: apt-get install dovecot-imapd (make test does it when root)")
        me = pwd.getpwuid(os.getuid()).pw_name
        # As root dovecot drops to system users for its processes and refuses uid 0 for mail: use its own accounts.
        mail_user, login_user = ("dovecot", "dovenull") if os.getuid() == 0 else (me, me)
        home = self.root / "home"
        home.mkdir(parents=True)
        (self.root / "run").mkdir()
        if os.getuid() == 0:
            shutil.chown(home, mail_user, mail_user)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        (self.root / "dovecot.conf").write_text(f"""
base_dir = {self.root}/run
state_dir = {self.root}/run/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
default_internal_user = {mail_user}
default_login_user = {login_user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_user} home={home}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
""")
        self.process = subprocess.Popen(
            [binary, "-c", str(self.root / "dovecot.conf"), "-F"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen:\n{(self.root / 'dovecot.log').read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def imap(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(USER, PASSWORD)
        return conn

    def append(self, folder: str, message: EmailMessage | bytes) -> None:
        raw = message if isinstance(message, bytes) else message.as_bytes()
        with self.imap() as conn:
            conn.create(f'"{folder}"')  # NO when it exists: fine
            typ, data = conn.append(f'"{folder}"', "", imaplib.Time2Internaldate(time.time()), raw)
            assert typ == "OK", data

    def subjects(self, folder: str) -> list[str]:
        """The subjects in a folder, read without setting \\Seen."""
        with self.imap() as conn:
            typ, _ = conn.select(f'"{folder}"', readonly=True)
            if typ != "OK":
                return []
            _, data = conn.uid("SEARCH", None, "ALL")
            out = []
            for uid in (data[0] or b"").split():
                _, got = conn.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                out.append(str(email.message_from_bytes(got[0][1], policy=email.policy.default)["Subject"]))
            return out

    def flags(self, folder: str) -> list[str]:
        with self.imap() as conn:
            conn.select(f'"{folder}"', readonly=True)
            _, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            return [d.decode() for d in data if d]


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    # Not under pytest's 0700 temp folder: dovecot's auth and mail processes run as its own users and read here.
    root = Path(tempfile.mkdtemp(prefix="ucsc-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def folder(dovecot: Dovecot) -> str:
    """A folder of this test's own, so every test starts from an empty mailbox on the shared server."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with dovecot.imap() as conn:
        assert conn.create(f'"{name}"')[0] == "OK"
    return name


@pytest.fixture
def poller(app, dovecot: Dovecot, folder: str, tmp_path: Path) -> Iterator[mailbox.Poller]:
    settings = mailbox.MailboxSettings(
        url=f"imap://{USER}:{PASSWORD}@127.0.0.1:{dovecot.port}/{folder}",
        rejected_folder=f"{folder}-rejected",
        poll_seconds=1,
        max_bytes=200 * 1024,
        filing=FilingSettings(),
    )
    store = evidence.Store(tmp_path / "evidence", 10 * 1024 * 1024)
    p = mailbox.Poller(app.extensions["ucsc.sessionmaker"], settings, store)
    yield p
    p.close()


BODY = "Máy chủ web có dấu hiệu bị dò mật khẩu."
SENDER = "Nguyễn Văn An <an@sotttt.thanhhoa.gov.vn>"


def mail(subject: str, body: str | None = BODY, *, sender=SENDER, attachments=(), **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "tbsc@ucsc.example", subject
    msg["Message-ID"] = headers.pop("message_id", None) or make_msgid(domain="sotttt.thanhhoa.gov.vn")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if body is not None:
        msg.set_content(body)
    for filename, media, data in attachments:
        maintype, subtype = media.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def form03(session) -> bytes:
    """A Form 03 as our own generator writes it, for an incident that exists only on paper."""
    system = session.scalar(select(System).where(System.code == "cong-dvc"))
    paper = Incident(
        ref="—", title="Dò mật khẩu SSH vào Cổng dịch vụ công", category="unauthorized_access", tlp="amber+strict",
        description="Hơn 4.000 lần đăng nhập SSH thất bại từ 198.51.100.7 trong 10 phút.",
        detected_at=datetime(2026, 11, 20, 1, 15, tzinfo=UTC), reporter_name="Nguyễn Văn An",
        reporter_organisation="Sở Tài nguyên và Môi trường", reporter_phone="+84 237 3852 111",
        reporter_email="an@sotnmt.thanhhoa.gov.vn", contact_name="Lê Thị Bình", contact_phone="0912345678",
        contact_email="binh@sotnmt.thanhhoa.gov.vn", handled_at_report=False, system_os="Ubuntu 22.04",
        affected_system=system, observables=[],
    )  # fmt: skip
    sections = reports.initial_sections(session, paper, reports.ReportCreate(), datetime.now(UTC))
    session.expunge(paper) if paper in session else None
    session.rollback()
    heading = {"board": "BAN CHỈ ĐẠO", "form": "Mẫu số 03", "basis": "", "title": "BÁO CÁO BAN ĐẦU SỰ CỐ MẠNG"}
    return docx_bytes({**heading, "reference": "Số: 1", "dated": "", "sections": sections, "signature": [],
                       "footnote": ""})  # fmt: skip


def incidents_of(session) -> list[Incident]:
    session.rollback()
    return list(session.scalars(select(Incident).order_by(Incident.id)))


def test_a_tbsc_message_becomes_one_incident_with_its_attachments_as_evidence_and_its_form_03_fields(
    poller, dovecot, folder, session
):
    docx = form03(session)
    message = mail("[TBSC] Báo cáo sự cố dò mật khẩu", attachments=[
        ("auth.log", "text/plain", LOG), ("bien-ban.pdf", "application/pdf", PDF),
        ("Mau03.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", docx),
    ])  # fmt: skip
    dovecot.append(folder, message)

    assert poller.run_once() == {"incident": 1}

    [incident] = incidents_of(session)
    assert incident.title == "Dò mật khẩu SSH vào Cổng dịch vụ công"  # the form's, not the subject's
    assert incident.category == "unauthorized_access"
    assert incident.tlp == "amber+strict"
    assert incident.detected_at == datetime(2026, 11, 20, 1, 15, tzinfo=UTC)
    assert incident.affected_system.code == "cong-dvc"
    assert incident.reporter_organisation == "Sở Tài nguyên và Môi trường"
    assert incident.reporter_phone == "+84 237 3852 111"
    assert incident.reporter_email == "an@sotnmt.thanhhoa.gov.vn"
    assert incident.reporter_name == "Nguyễn Văn An"
    assert incident.contact_name == "Lê Thị Bình"
    assert incident.handled_at_report is False
    assert incident.system_os == "Ubuntu 22.04"
    assert incident.description.startswith("Hơn 4.000 lần đăng nhập SSH thất bại")
    assert "Máy chủ web có dấu hiệu bị dò mật khẩu." in incident.description  # the e-mail's body is kept
    creator = session.get(User, incident.created_by_id)
    assert (creator.username, creator.role, creator.is_service) == ("mailbox", "responder", True)

    items = {e.filename: e for e in session.scalars(select(Evidence).where(Evidence.incident_id == incident.id))}
    assert set(items) == {"auth.log", "bien-ban.pdf", "Mau03.docx"}
    for name, data in (("auth.log", LOG), ("bien-ban.pdf", PDF), ("Mau03.docx", docx)):
        assert items[name].sha256 == hashlib.sha256(data).hexdigest()
        assert items[name].size == len(data)
        stored = poller.store.path(items[name].stored_name).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == items[name].sha256
        [custody] = session.scalars(select(CustodyRecord).where(CustodyRecord.evidence_id == items[name].id))
        assert (custody.action, custody.sha256_checked) == ("collected", items[name].sha256)

    # The same message seen again, on a later pass and as a second copy in the folder, files nothing more.
    dovecot.append(folder, message)
    assert poller.run_once() == {"duplicate": 1}
    session.rollback()
    session.execute(MailboxCursor.__table__.delete())  # as if the cursor were lost: Message-ID still holds
    session.commit()
    assert poller.run_once() == {"duplicate": 2}
    assert len(incidents_of(session)) == 1
    assert session.scalar(select(func.count()).select_from(Evidence)) == 3
    # Nothing was deleted or marked read.
    assert dovecot.subjects(folder) == ["[TBSC] Báo cáo sự cố dò mật khẩu"] * 2
    assert not any("\\Seen" in f for f in dovecot.flags(folder))
    source = session.scalar(select(Source).where(Source.kind == "mailbox"))
    assert source.last_seen_at is not None and source.token_id is None


def test_replies_by_ref_by_receipt_by_page_and_by_thread_become_comments_on_the_incident(
    poller, dovecot, folder, session
):
    first = mail("[TBSC] Website bị thay đổi giao diện")
    dovecot.append(folder, first)
    assert poller.run_once() == {"incident": 1}
    [incident] = incidents_of(session)

    # A page e-mail to a contact, recorded the way the engine records a delivered one: its Message-ID as receipt.
    notifier = EmailNotifier("smtp://127.0.0.1:25", "UCSC <ucsc@ucsc.example>")
    contact = Contact(organisation_id=session.get(User, incident.created_by_id).organisation_id, name="Trực ban")
    page = Page(incident_id=incident.id, target_kind="contact", target="1", target_label="Trực ban")
    session.add_all([contact, page])
    session.flush()
    page_mid = notifier.message_id(f"page:{page.id}:email:1")
    session.add(Delivery(page_id=page.id, contact_id=contact.id, channel="email", address="x@y.vn", wave=1,
                         message_id=page_mid))  # fmt: skip
    session.commit()

    receipt_mid = notifier.message_id(f"receipt.email:{incident.id}")
    html = (
        "<html><head><style>p{}</style><script>alert(1)</script></head>"
        "<body><p>Đã khắc phục</p><p>xong</p></body></html>"
    )
    replies = [
        mail(f"Re: [TBSC] {incident.ref} Website bị thay đổi giao diện", "Đã cô lập máy chủ."),
        mail(
            "Re: Xác nhận tiếp nhận sự cố",
            "Bổ sung nhật ký.",
            In_Reply_To=receipt_mid,
            attachments=[("access.log", "text/plain", LOG)],
        ),
        mail("Re: [TBSC] Trực ban", "Đã nhận, đang xử lý.", In_Reply_To=page_mid),
        mail("Re: [TBSC] Website bị thay đổi giao diện", None, References=f"<x@y> {first['Message-ID']}"),
    ]
    replies[-1].add_alternative(html, subtype="html")
    for reply in replies:
        dovecot.append(folder, reply)
    assert poller.run_once() == {"comment": 4}

    session.rollback()
    comments = list(session.scalars(select(Comment).where(Comment.incident_id == incident.id).order_by(Comment.id)))
    assert len(comments) == 4
    assert "Đã cô lập máy chủ." in comments[0].body and "an@sotttt.thanhhoa.gov.vn" in comments[0].body
    assert "Bổ sung nhật ký." in comments[1].body
    assert "Đã nhận, đang xử lý." in comments[2].body
    assert "Đã khắc phục\n\nxong" in comments[3].body or "Đã khắc phục\nxong" in comments[3].body
    assert "alert(1)" not in comments[3].body and "<p>" not in comments[3].body
    assert {c.tlp for c in comments} == {incident.tlp}
    assert {session.get(User, c.author_id).username for c in comments} == {"mailbox"}
    [log] = session.scalars(select(Evidence).where(Evidence.incident_id == incident.id))
    assert log.sha256 == hashlib.sha256(LOG).hexdigest()
    assert len(incidents_of(session)) == 1
    # Seen again: no second comment.
    for reply in replies:
        dovecot.append(folder, reply)
    assert poller.run_once() == {"duplicate": 4}
    assert session.scalar(select(func.count()).select_from(Comment)) == 4


def test_malformed_messages_go_to_the_rejected_folder_with_an_alarm_and_others_are_left_alone(
    app, client, poller, dovecot, folder, dbs
):
    session = dbs  # outside an app context: each web request below gets its own `g`, so its own signed-in user
    bad_charset = (
        b"From: a@b.vn\r\nTo: tbsc@ucsc.example\r\nSubject: [TBSC] charset\r\nMessage-ID: <cs-1@b.vn>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xff\xfe hello\r\n"
    )
    dovecot.append(folder, mail("[TBSC] trống", None))
    dovecot.append(folder, mail("Re: [TBSC] TH-2026-09999 cập nhật", "Đã xử lý."))
    dovecot.append(folder, mail("[TBSC] quá lớn", attachments=[("dump.bin", "application/octet-stream",
                                                                os.urandom(300 * 1024))]))  # fmt: skip
    dovecot.append(folder, bad_charset)
    dovecot.append(folder, mail("Lịch họp tuần sau", "Không phải sự cố."))

    assert poller.run_once() == {"rejected": 4, "ignored": 1}

    assert dovecot.subjects(folder) == ["Lịch họp tuần sau"]
    assert sorted(dovecot.subjects(f"{folder}-rejected")) == sorted(
        ["[TBSC] trống", "Re: [TBSC] TH-2026-09999 cập nhật", "[TBSC] quá lớn", "[TBSC] charset"]
    )
    assert incidents_of(session) == []
    events = list(session.scalars(select(Event).where(Event.kind == "source.message_rejected").order_by(Event.id)))
    reasons = [e.data["reason"] for e in events]
    assert len(reasons) == 4
    assert "no body" in reasons[0]
    assert "TH-2026-09999" in reasons[1]
    assert "over 204800" in reasons[2]
    assert "undecodable" in reasons[3] or "charset" in reasons[3]
    assert {e.data["moved_to"] for e in events} == {f"{folder}-rejected"}

    # A second copy of a rejected message is moved too, with no second alarm; the ignored one stays.
    dovecot.append(folder, mail("[TBSC] trống", None, message_id=events[0].data["message_id"]))
    assert poller.run_once() == {"rejected": 1}
    assert session.scalar(select(func.count()).where(Event.kind == "source.message_rejected")) == 4
    assert dovecot.subjects(folder) == ["Lịch họp tuần sau"]

    # The desk sees the alarm on its board; the committee's board does not carry the mailbox's troubles.
    make_user(app, "op-mail")
    make_user(app, "member-mail", role="committee")
    sign_in(client, "op-mail")
    board = client.get("/board", headers={"Accept-Language": "vi"}).text
    assert 'id="mail-alarm"' in board and "TH-2026-09999" in board and "no body and no attachment" in board
    assert "Thư điện tử hộp thư không tiếp nhận được" in board
    other = app.test_client()
    sign_in(other, "member-mail")
    assert 'id="mail-alarm"' not in other.get("/board").text


def test_the_worker_reads_the_mailbox_and_stops_cleanly_on_sigterm(app, dovecot, folder, session, start_worker,
                                                                     tmp_path):  # fmt: skip
    worker = start_worker(env={
        "UCSC_MAILBOX_URL": f"imap://{USER}:{PASSWORD}@127.0.0.1:{dovecot.port}/{folder}",
        "UCSC_MAILBOX_POLL_SECONDS": "30",  # IDLE, not the poll, must bring the message in
        "UCSC_MAILBOX_REJECTED_FOLDER": f"{folder}-rejected",
        "UCSC_EVIDENCE_DIR": str(tmp_path / "worker-evidence"),
    })  # fmt: skip
    time.sleep(1)  # the first pass has run and the poller waits in IDLE
    dovecot.append(folder, mail("[TBSC] Mã độc trên máy trạm", attachments=[("sample.txt", "text/plain", LOG)]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not incidents_of(session):
        time.sleep(0.2)
    [incident] = incidents_of(session)
    assert incident.title == "Mã độc trên máy trạm"
    assert incident.reporter_email == "an@sotttt.thanhhoa.gov.vn"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not session.scalar(select(func.count()).select_from(Evidence)):
        time.sleep(0.2)
        session.rollback()
    [item] = session.scalars(select(Evidence))
    assert item.sha256 == hashlib.sha256(LOG).hexdigest()
    started = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - started < 10


def test_only_the_allowed_senders_file_when_the_mailbox_names_them(app, dovecot, folder, session, tmp_path):
    settings = mailbox.MailboxSettings(
        url=f"imap://{USER}:{PASSWORD}@127.0.0.1:{dovecot.port}/{folder}",
        rejected_folder=f"{folder}-rejected",
        senders=("@thanhhoa.gov.vn", "vncert@ais.gov.vn"),
        filing=FilingSettings(),
    )
    p = mailbox.Poller(app.extensions["ucsc.sessionmaker"], settings, evidence.Store(tmp_path / "ev", 1 << 20))
    dovecot.append(folder, mail("[TBSC] từ Sở", sender="an@thanhhoa.gov.vn"))
    dovecot.append(folder, mail("[TBSC] từ VNCERT", sender="VNCERT <VNCERT@ais.gov.vn>"))
    dovecot.append(folder, mail("[TBSC] giả mạo", sender="an@thanhhoa.gov.vn.evil.example"))
    try:
        assert p.run_once() == {"incident": 2, "rejected": 1}
    finally:
        p.close()
    assert [i.title for i in incidents_of(session)] == ["từ Sở", "từ VNCERT"]
    assert dovecot.subjects(f"{folder}-rejected") == ["[TBSC] giả mạo"]
    [alarm] = session.scalars(select(Event).where(Event.kind == "source.message_rejected"))
    assert "may not file by e-mail" in alarm.data["reason"]
