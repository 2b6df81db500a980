"""Real receivers on 127.0.0.1 for the worker's deliveries: a counting HTTP server and an aiosmtpd SMTP server."""

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.auth import digest
from incidents.models import ApiToken
from tests.live import free_port


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got: its headers (as sent) and raw body."""

    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


class HttpReceiver:
    """A threaded HTTP server that records every POST and answers with a chosen status after a chosen delay.

    `statuses` and `delays` are consumed one per request (the last value repeats), so a test can make the
    first delivery slow or failing and the next one quick. A delayed answer ends early when the receiver
    closes, so no handler thread outlives its test.
    """

    def __init__(self, *, statuses: Sequence[int] = (200,), delays: Sequence[float] = (0.0,)) -> None:
        self.statuses, self.delays = list(statuses), list(delays)
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler_class())
        self._server.daemon_threads = True
        # Polling every 50 ms (not serve_forever's 0.5 s) lets `close` return at once.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="http-receiver", daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self) -> "HttpReceiver":
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, delivery: Delivery) -> tuple[int, float]:
        with self._arrived:
            n = len(self.deliveries)
            self.deliveries.append(delivery)
            self._arrived.notify_all()
        return self.statuses[min(n, len(self.statuses) - 1)], self.delays[min(n, len(self.delays) - 1)]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Delivery]:
        """Block until at least `count` deliveries arrived; all of them."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"{len(self.deliveries)} of {count} deliveries within {timeout}s")
            return list(self.deliveries)

    def keys(self) -> list[str | None]:
        with self._lock:
            return [d.key for d in self.deliveries]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, delay = receiver._record(Delivery(dict(self.headers.items()), body, time.monotonic()))
                if delay and receiver._closing.wait(delay):
                    return  # the test is over: drop the connection unanswered
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up (timeout, or it was killed) before the answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class _Collect:
    """aiosmtpd handler that keeps every accepted message."""

    def __init__(self, on_message: Callable[[str, list[str], bytes], None]) -> None:
        self.on_message = on_message

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.on_message(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class Mail:
    """One message the SMTP server accepted: the envelope and the parsed MIME message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        """The decoded text/plain body."""
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return part.get_content()


class SmtpServer:
    """aiosmtpd on 127.0.0.1 at a free port; `url` is what UCSC_SMTP_URL should say."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self._arrived = threading.Condition()
        self.port = free_port()
        self._controller = Controller(_Collect(self._record), hostname="127.0.0.1", port=self.port)
        self.url = f"smtp://127.0.0.1:{self.port}"

    def start(self) -> "SmtpServer":
        self._controller.start()
        return self

    def close(self) -> None:
        self._controller.stop()

    def _record(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> None:
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._arrived:
            self.mails.append(Mail(mail_from, rcpt_tos, message))
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Mail]:
        """Block until at least `count` messages arrived; all of them."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.mails) >= count, timeout):
                raise AssertionError(f"{len(self.mails)} of {count} e-mails within {timeout}s")
            return list(self.mails)


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        time.sleep(interval)


def give_webhook(session: Session, headers: dict[str, str], url: str, secret: str | None) -> None:
    """Name a webhook on the ApiToken behind `headers` (what `create-token --webhook` would store)."""
    token = headers["Authorization"].removeprefix("Bearer ")
    session.rollback()
    with session.begin():
        session.connection(execution_options={"ucsc_write": True})
        session.execute(
            update(ApiToken).where(ApiToken.digest == digest(token)).values(webhook_url=url, webhook_secret=secret)
        )
