"""Configuration defaults; deployments override them with UCSC_* environment variables."""

import hashlib
import hmac
from pathlib import Path

DEFAULTS: dict[str, object] = {
    "DATABASE_URL": None,  # default: SQLite in the instance folder
    "SECRET_KEY": None,  # default: instance/secret_key, written by `init-db`
    "AUDIT_KEY": None,  # signs audit rows; default: instance/audit_key, written by `init-db`
    "AUDIT_KEYS_OLD": "",  # retired audit keys that still verify older rows, comma-separated, oldest first
    "AUDIT_ANCHOR_FILE": None,  # the newest signed checkpoint, outside the database; default: instance/, per database
    "AUDIT_CHECKPOINT_SECONDS": 300,  # the worker's checkpoint period (0: off)
    # Where gunicorn listens (`make run` and gunicorn.conf.py read UCSC_BIND too).
    "BIND": "127.0.0.1:5000",
    # The address people open; default: what BIND serves, so `UCSC_BIND=… make run` needs nothing else.
    "BASE_URL": None,
    "REF_PREFIX": "TH",
    "STANDING_BODY": "dic",
    "TELEGRAM_TOKEN": None,
    "TELEGRAM_API_URL": "https://api.telegram.org/bot",
    "TELEGRAM_MODE": "polling",
    "TELEGRAM_BOARD_CHAT_ID": None,
    "TELEGRAM_BOT_USERNAME": None,
    "TELEGRAM_POLL_TIMEOUT": 20,
    "TELEGRAM_CALLBACK_TTL_HOURS": 168,
    "TELEGRAM_LINK_TTL_HOURS": 168,
    "TELEGRAM_RETRY_SECONDS": 0.5,
    "SMTP_URL": None,
    # The local outbox (docs/configuration.md): auto keeps pages there when no e-mail, Telegram or SMS is set.
    "OUTBOX": "auto",
    "OUTBOX_FILE": None,  # default: instance/, one per database
    "MAIL_FROM": "ucsc@localhost",
    # The [TBSC] mailbox the worker reads (docs/sources/mailbox.md); off without a URL.
    "MAILBOX_URL": None,
    "MAILBOX_POLL_SECONDS": 60,
    "MAILBOX_REJECTED_FOLDER": "UCSC-Rejected",
    "MAILBOX_USER": "mailbox",
    "MAILBOX_SENDERS": "",
    "MAILBOX_MAX_BYTES": 25 * 1024 * 1024,
    # Alert sources (docs/sources.md): the worker's silence check period (0: off), the account that files a
    # silence, and the longest maintenance window or snooze.
    "SOURCE_WATCH_SECONDS": 30,
    "SOURCE_WATCH_USER": "source-watch",
    "SOURCE_WINDOW_MAX_HOURS": 168,
    "REDIS_URL": None,
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
    "LIMIT_TITLE": 300,
    "LIMIT_DESCRIPTION": 50_000,
    "LIMIT_OBSERVABLES": 1_000,
    "LIMIT_COMMENT": 50_000,
    "LIMIT_BULK": 500,
    "INTAKE_RATE_LIMIT": "600/minute",
    "TOKEN_CACHE_SECONDS": 1,
    "SQLITE_BUSY_TIMEOUT": 2.0,
    "SQLITE_SYNCHRONOUS": "FULL",
    "DB_POOL_SIZE": 10,
    "DB_POOL_TIMEOUT": 5.0,
    # The worker process
    "WORKER_THREADS": 4,
    "WORKER_POLL_SECONDS": 0.1,
    "WORKER_HEARTBEAT_SECONDS": 5.0,
    "WORKER_STALE_SECONDS": 30.0,
    "WORKER_SHUTDOWN_GRACE": 10.0,
    # Due jobs of one kind the worker runs in one transaction when they queue up (a filing's follow-up, deadline
    # checks): one claim and one write transaction for a storm instead of one each
    "JOB_BATCH": 20,
    "NOTIFY_TIMEOUT": 10.0,
    # Internal targets (CIDRs, host names; comma-separated) that webhooks and the TAXII push may reach
    "OUTBOUND_ALLOW": "",
    # The change feed and Socket.IO /live
    "FEED_POLL_SECONDS": 0.2,
    "FEED_REPLAY_LIMIT": 1000,
    "FEED_HEARTBEAT_SECONDS": 10.0,
    "SOCKETIO_PING_INTERVAL": 25.0,
    "SOCKETIO_PING_TIMEOUT": 20.0,
    "SOCKETIO_EXTRA_ORIGINS": [],
    "BENCH_ROUTES": False,
    # Paging (docs/playbooks.md)
    "MAIL_SUBJECT_PREFIX": "[TBSC]",
    "SMS_GATEWAY_URL": None,
    "SMS_GATEWAY_PRESET": "generic",
    "SMS_SENDER": "UCSC",
    "PAGING_RATE_LIMIT": 6,
    "PAGING_RATE_WINDOW_SECONDS": 600,
    "PAGING_DIGEST_DELAY_SECONDS": 60,
    "PAGING_RETRY_SECONDS": 5,
    "PAGING_RETRY_CAP_SECONDS": 300,
    "PAGING_CHANNEL_ATTEMPTS": 5,
    "PAGING_MAX_ATTEMPTS": 20,
    "PAGING_ESCALATION_GRACE_SECONDS": 0,
    "PAGING_LEASE_SECONDS": 30,
    "FOCAL_POINT_CONFIRM_HOURS": 24,
    "ACK_LINK_TTL_HOURS": 168,  # an e-mail's acknowledgement link works this long after it was sent
    # Observability: `json` logs one object per line with the request id; /metrics behind a token if set
    "LOG_FORMAT": "text",
    "METRICS_TOKEN": None,
    # The web UI (docs/dashboard.md)
    "TOTP_REQUIRED_ROLES": "admin",
    "LOGIN_MAX_FAILURES": 5,  # wrong TOTP codes that lock the second factor for LOGIN_LOCKOUT_SECONDS
    "LOGIN_LOCKOUT_SECONDS": 900,
    "LOGIN_RATE_LIMIT": "20/minute",
    # Wrong passwords: per address and account, then per address across accounts, before backoff starts
    "LOGIN_FREE_FAILURES": 5,
    "LOGIN_ADDRESS_FREE_FAILURES": 20,
    "LOGIN_BACKOFF_CAP_SECONDS": 900,
    "LOGIN_FORGET_SECONDS": 3600,
    "TRUSTED_PROXIES": 0,  # proxy hops whose X-Forwarded-For/-Proto are believed (1 behind the documented nginx)
    "WEB_SESSION_SECONDS": 43200,
    # STIX 2.1 and TAXII 2.1 (docs/stix.md)
    "STIX_BOARD_NAME": "Ban Chỉ đạo ứng cứu sự cố an toàn thông tin mạng tỉnh Thanh Hóa",
    "STIX_DEFAULT_TLP": "amber",
    "STIX_IMPORT_LIMIT": 20_000,
    "STIX_EXPORT_LIMIT": 100_000,
    "TAXII_MAX_PAGE_SIZE": 1000,
    "STIX_PUSH_URL": None,
    "STIX_PUSH_USER": None,
    "STIX_PUSH_PASSWORD": None,
    "STIX_PUSH_MAX_TLP": "amber",
    # Evidence, reports and deadline clocks (docs/reports.md)
    "EVIDENCE_DIR": None,  # default: instance/evidence, outside the web root
    "EVIDENCE_MAX_BYTES": 100 * 1024 * 1024,
    "DEADLINES_FILE": None,  # default: incidents/deadlines.yaml
    "DEADLINE_PROFILES": "circular20",
    "PERIODIC_REMINDER_DAYS": 7,
    "REPORT_BOARD_NAME": "BAN CHỈ ĐẠO ỨNG CỨU SỰ CỐ AN TOÀN THÔNG TIN MẠNG TỈNH THANH HÓA",
    "REPORT_MEMBER_CODE": "",
    # The place a report is dated at ("<place>, ngày ..."), and Form 03's recipients by Decision 05 Art. 11.5:
    # who sends (operator | specialised_unit | board) and the names of the bodies it goes to.
    "REPORT_PLACE": "Thanh Hóa",
    "REPORT_SENDER": "operator",
    "REPORT_SPECIALISED_UNIT": "Đơn vị chuyên trách ứng cứu sự cố tỉnh Thanh Hóa",
    "REPORT_NATIONAL_COORDINATOR": "Cơ quan điều phối quốc gia về ứng cứu sự cố",
    "REPORT_UPPER_BOARD": "Ban Chỉ đạo quốc gia về ứng cứu sự cố",
    "REPORT_NATIONAL_LEVEL": "Cơ quan điều phối quốc gia về ứng cứu sự cố",
}


def base_url_of(bind: object) -> str:
    """The URL a browser on this machine opens for gunicorn's `bind` (a wildcard address means loopback)."""
    text = str(bind or "").strip()
    if not text or text.startswith(("unix:", "fd://")):
        return "http://127.0.0.1:5000"
    host, _, port = text.rpartition(":")
    if not host:  # a bare port
        host, port = "127.0.0.1", text
    if host in ("0.0.0.0", "[::]", "::"):  # noqa: S104 (naming the wildcard, not binding to it)
        host = "127.0.0.1"
    return f"http://{host}:{port}" if port.isdigit() else "http://127.0.0.1:5000"


def sqlite_url(instance_path: str) -> str:
    return f"sqlite:///{Path(instance_path) / 'ucsc.db'}"


def read_secret_key(instance_path: str) -> str | None:
    path = Path(instance_path) / "secret_key"
    return path.read_text().strip() if path.exists() else None


def read_audit_key(instance_path: str, secret_key: str) -> str:
    """instance/audit_key; without it a key derived from the secret key, so every process of one install agrees."""
    path = Path(instance_path) / "audit_key"
    if path.exists():
        return path.read_text().strip()
    return hmac.new(secret_key.encode(), b"ucsc audit key", hashlib.sha256).hexdigest()
