"""A local stand-in for the Telegram Bot API: a real HTTP/1.1 keep-alive server on loopback (the suite's only fake).

It checks what Telegram checks (the token in the path, required parameters, 1-64 bytes of callback data,
1-4,096 characters after entity parsing, HTML parse-mode tags and entities, known chats), records every call
with its receive time, injects failures (429 with `retry_after`, refused connections, a bot blocked by the
user, a deleted chat) and delivers updates (button presses, messages) through `getUpdates` or to a webhook.
"""

import contextlib
import html
import itertools
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.live import free_port

BOT_ID = 700_000_001
MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
# Tags Telegram's HTML parse mode accepts, with the attributes it reads.
_TAGS = {
    "b": (), "strong": (), "i": (), "em": (), "u": (), "ins": (), "s": (), "strike": (), "del": (),
    "tg-spoiler": (), "span": ("class",), "a": ("href",), "code": ("class",), "pre": (), "blockquote": ("expandable",),
    "tg-emoji": ("emoji-id",),
}  # fmt: skip
_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")


class ApiError(Exception):
    def __init__(self, code: int, description: str, **parameters: Any) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


def parse_html(text: str) -> str:
    """The visible text of an HTML-formatted message, or ApiError as Telegram words it."""
    out, stack, pos = [], [], 0
    while pos < len(text):
        ch = text[pos]
        if ch == "<":
            m = _TOKEN.match(text, pos)
            if not m:
                raise ApiError(400, f"Bad Request: can't parse entities: unexpected start tag at byte offset {pos}")
            closing, tag = m.group(1) == "/", m.group(2).lower()
            if tag not in _TAGS:
                raise ApiError(
                    400, f'Bad Request: can\'t parse entities: unsupported start tag "{tag}" at byte offset {pos}'
                )
            if closing:
                if not stack or stack[-1] != tag:
                    raise ApiError(
                        400,
                        f"Bad Request: can't parse entities: unmatched end tag at byte offset {pos}",
                    )
                stack.pop()
            else:
                stack.append(tag)
            pos = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, pos)
            if not m:
                raise ApiError(
                    400, f"Bad Request: can't parse entities: character entity expected at byte offset {pos}"
                )
            out.append(html.unescape(m.group(0)))
            pos = m.end()
        elif ch == ">":
            raise ApiError(400, f"Bad Request: can't parse entities: unexpected end of tag at byte offset {pos}")
        else:
            out.append(ch)
            pos += 1
    if stack:
        raise ApiError(
            400, f"Bad Request: can't parse entities: can't find end tag corresponding to start tag \"{stack[-1]}\""
        )
    return "".join(out)  # fmt: skip


def utf16_len(text: str) -> int:
    """Telegram counts text in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    """One request the stand-in received: method, parameters (nested objects decoded) and receive times."""

    method: str
    params: dict[str, Any]
    at: float  # time.time() at receipt, comparable across processes on this host
    mono: float  # time.monotonic() at receipt, for spacing checks
    status: int = 200
    via: str = "http"  # "webhook-reply" for a method answered in a webhook's response body


@dataclass
class Chat:
    id: int
    type: str  # private | group | supergroup
    title: str | None = None
    blocked: bool = False
    deleted: bool = False


@dataclass
class Failure:
    method: str | None  # None: any method
    status: int
    description: str
    retry_after: int | None = None
    count: int = 1
    until: float | None = None  # monotonic deadline instead of a count


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    webhook: dict[str, Any] = field(default_factory=dict)
    conflicts: int = 0
    polling: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # api.telegram.org takes many connections at once. socketserver's default backlog of 5 drops the SYNs of a
    # burst (a client opening 30 connections for 30 sends), which the client's TCP resends one second later.
    request_queue_size = 128


class BotAPI:
    """The stand-in server; `url` is what `UCSC_TELEGRAM_API_URL` takes (`http://127.0.0.1:PORT/bot`)."""

    def __init__(self, token: str = "700000001:TEST-token_abc", *, username: str = "ucsc_test_bot") -> None:  # noqa: S107
        self.token, self.username = token, username
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/bot"
        self.chats: dict[int, Chat] = {}
        self.state = _State()
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(10_000)
        self._callback_ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._closing = False
        self._poll_generation = 0
        self._webhook_thread: threading.Thread | None = None
        self._webhook_stop = False

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> "BotAPI":
        server = _Server(("127.0.0.1", self.port), self._handler_class())
        self._server = server
        self._closing = False
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        if self._webhook_thread is None:
            self._webhook_thread = threading.Thread(target=self._deliver_webhooks, name="botapi-webhook", daemon=True)
            self._webhook_thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: clients now get ECONNREFUSED."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.stop()
        with self._changed:
            self._webhook_stop = True
            self._changed.notify_all()

    def refuse_connections(self, seconds: float) -> threading.Thread:
        """Refuse every connection for `seconds`, then listen again on the same port."""
        self.stop()

        def reopen() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=reopen, daemon=True)
        thread.start()
        return thread

    # --- setup and injection ---------------------------------------------------------------------------------

    def add_chat(self, chat_id: int, *, type: str | None = None, title: str | None = None) -> Chat:
        chat = Chat(chat_id, type or ("private" if chat_id > 0 else "supergroup"), title)
        self.chats[chat_id] = chat
        return chat

    def block(self, chat_id: int) -> None:
        self.chats[chat_id].blocked = True

    def delete_chat(self, chat_id: int) -> None:
        self.chats[chat_id].deleted = True

    def fail(
        self, method: str | None, status: int = 429, *, retry_after: int | None = None, count: int = 1,
        seconds: float | None = None, description: str | None = None,
    ) -> None:  # fmt: skip
        """Answer the next `count` calls of `method` (or all calls for `seconds`) with an error."""
        if description is None:
            description = f"Too Many Requests: retry after {retry_after}" if status == 429 else "Internal Server Error"
        until = time.monotonic() + seconds if seconds is not None else None
        with self._lock:
            self.failures.append(Failure(method, status, description, retry_after, count, until))

    # --- updates ---------------------------------------------------------------------------------------------

    def user(self, user_id: int, first_name: str = "Người dùng", language_code: str = "vi") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": language_code}

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            update = {"update_id": next(self._update_ids), **update}
            self.state.updates.append(update)
            self._changed.notify_all()
        return update

    def press(self, user: dict[str, Any], chat_id: int, message_id: int, data: str) -> dict[str, Any]:
        """A user presses an inline button under a message the bot sent."""
        message = self.state.messages.get((chat_id, message_id)) or {
            "message_id": message_id, "date": int(time.time()), "chat": self._chat_json(chat_id), "text": "",
        }  # fmt: skip
        query = {
            "id": str(next(self._callback_ids)), "from": user, "message": message, "chat_instance": f"ci{chat_id}",
            "data": data,
        }  # fmt: skip
        return self.push({"callback_query": query})

    def say(self, user: dict[str, Any], chat_id: int, text: str, *, reply_to: int | None = None) -> dict[str, Any]:
        """A user writes to the bot (a command when the text starts with "/"), maybe replying to a bot message."""
        message: dict[str, Any] = {
            "message_id": next(self._ids), "date": int(time.time()), "chat": self._chat_json(chat_id), "from": user,
            "text": text,
        }  # fmt: skip
        if reply_to is not None:
            original = self.state.messages[(chat_id, reply_to)]
            message["reply_to_message"] = {k: v for k, v in original.items() if k != "html"}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self.push({"message": message})

    def deliver_again(self, update: dict[str, Any]) -> None:
        """Telegram retries a webhook delivery it thinks failed: the same update_id once more."""
        with self._changed:
            self.state.updates.append(update)
            self._changed.notify_all()

    # --- what tests read --------------------------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.state.calls if c.method == method and c.status == 200]

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        """Block until `predicate(self)` is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            with self._changed:
                self._changed.wait(0.05)
        raise AssertionError(f"stand-in: {what} not reached within {timeout}s")

    def wait_sent(self, count: int, timeout: float = 30.0) -> list[Call]:
        return self.wait_for(
            lambda api: (c := api.calls_of("sendMessage")) and len(c) >= count and c, timeout, f"{count} sendMessage"
        )

    def limit_violations(self, method: str = "sendMessage") -> list[str]:
        """Breaches of Telegram's limits at receive time: 30 in any second, 1/s per private chat, 20/min per group."""
        sent = sorted(self.calls_of(method), key=lambda c: c.mono)
        found = []
        for i in range(30, len(sent)):
            if sent[i].mono - sent[i - 30].mono < 1.0:
                found.append(f"31 {method} within {sent[i].mono - sent[i - 30].mono:.3f}s ending at #{i}")
        by_chat: dict[int, list[float]] = {}
        for c in sent:
            by_chat.setdefault(int(c.params["chat_id"]), []).append(c.mono)
        for chat_id, times in by_chat.items():
            if chat_id > 0:
                found += [f"chat {chat_id}: {b - a:.3f}s apart" for a, b in itertools.pairwise(times) if b - a < 1.0]
            else:
                found += [f"group {chat_id}: 21 in {times[i] - times[i - 20]:.1f}s" for i in range(20, len(times))
                          if times[i] - times[i - 20] < 60.0]  # fmt: skip
        return found

    # --- the server -------------------------------------------------------------------------------------------

    def _chat_json(self, chat_id: int) -> dict[str, Any]:
        chat = self.chats.get(chat_id) or Chat(chat_id, "private" if chat_id > 0 else "supergroup")
        body: dict[str, Any] = {"id": chat.id, "type": chat.type}
        if chat.title:
            body["title"] = chat.title
        else:
            body["first_name"] = "Người dùng"
        return body

    def _bot_json(self) -> dict[str, Any]:
        return {
            "id": BOT_ID, "is_bot": True, "first_name": "UCSC", "username": self.username, "can_join_groups": True,
            "can_read_all_group_messages": False, "supports_inline_queries": False,
        }  # fmt: skip

    def _injected(self, method: str) -> Failure | None:
        now = time.monotonic()
        with self._lock:
            for failure in list(self.failures):
                if failure.until is not None and failure.until < now:
                    self.failures.remove(failure)
                    continue
                if failure.method in (None, method):
                    if failure.until is None:
                        failure.count -= 1
                        if failure.count <= 0:
                            self.failures.remove(failure)
                    return failure
        return None

    def handle(self, token: str, method: str, params: dict[str, Any], *, via: str = "http") -> tuple[int, dict]:
        """Run one Bot API method; (HTTP status, JSON body)."""
        call = Call(method, params, time.time(), time.monotonic(), via=via)
        try:
            if token != self.token:
                raise ApiError(401, "Unauthorized")
            failure = self._injected(method)
            if failure is not None:
                extra = {"retry_after": failure.retry_after} if failure.retry_after is not None else {}
                raise ApiError(failure.status, failure.description, **extra)
            handler = getattr(self, "_m_" + method, None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = handler(params)
            body: dict[str, Any] = {"ok": True, "result": result}
        except ApiError as exc:
            call.status = exc.code
            body = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
        with self._changed:
            self.state.calls.append(call)
            self._changed.notify_all()
        return call.status, body

    @staticmethod
    def _require(params: dict[str, Any], *names: str) -> None:
        for name in names:
            if params.get(name) in (None, ""):
                raise ApiError(
                    400, f"Bad Request: {name} is empty" if name == "text" else f"Bad Request: {name} required"
                )

    def _chat(self, params: dict[str, Any]) -> Chat:
        self._require(params, "chat_id")
        try:
            chat_id = int(params["chat_id"])
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None
        chat = self.chats.get(chat_id)
        if chat is None or chat.deleted:
            raise ApiError(400, "Bad Request: chat not found")
        if chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _text(self, params: dict[str, Any], name: str = "text", limit: int = MAX_TEXT) -> str:
        self._require(params, name)
        raw = str(params[name])
        mode = str(params.get("parse_mode") or "")
        visible = parse_html(raw) if mode.upper() == "HTML" else raw
        if mode and mode.upper() not in ("HTML", "MARKDOWNV2", "MARKDOWN"):
            raise ApiError(400, f"Bad Request: unsupported parse_mode {mode}")
        if not visible.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(visible) > limit:
            raise ApiError(400, "Bad Request: message is too long")
        return visible

    @staticmethod
    def _markup(params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if isinstance(markup, str):
            try:
                markup = json.loads(markup)
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object") from None
        rows = markup.get("inline_keyboard")
        if not isinstance(rows, list):
            raise ApiError(400, 'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
        for row in rows:
            for button in row:
                if not button.get("text"):
                    raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
                if "callback_data" in button:
                    size = len(str(button["callback_data"]).encode())
                    if not 1 <= size <= MAX_CALLBACK_DATA:
                        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                elif "url" not in button:
                    raise ApiError(400, 'Bad Request: can\'t find field "callback_data"')
        params["reply_markup"] = markup
        return markup

    def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._bot_json()

    def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(params)
        visible = self._text(params)
        markup = self._markup(params)
        message: dict[str, Any] = {
            "message_id": next(self._ids), "date": int(time.time()), "chat": self._chat_json(chat.id),
            "from": self._bot_json(), "text": visible,
        }  # fmt: skip
        if markup:
            message["reply_markup"] = markup
        with self._lock:
            self.state.messages[(chat.id, message["message_id"])] = {**message, "html": params["text"]}
        return message

    def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(params)
        self._require(params, "message_id")
        visible = self._text(params)
        markup = self._markup(params)
        key = (chat.id, int(params["message_id"]))
        with self._lock:
            old = self.state.messages.get(key)
            if old is None:
                raise ApiError(400, "Bad Request: message to edit not found")
            if old["html"] == params["text"] and old.get("reply_markup") == markup:
                raise ApiError(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply "
                    "markup are exactly the same as a current content and reply markup of the message",
                )
            new = {**old, "text": visible, "html": params["text"], "edit_date": int(time.time())}
            new.pop("reply_markup", None)
            if markup:
                new["reply_markup"] = markup
            self.state.messages[key] = new
        return {k: v for k, v in new.items() if k != "html"}  # fmt: skip

    def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        self._require(params, "callback_query_id")
        if params.get("text") is not None and len(str(params["text"])) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        with self._lock:
            if params["callback_query_id"] in self.state.answers:
                raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
            self.state.answers[str(params["callback_query_id"])] = params
        return True

    def _m_setMyCommands(self, params: dict[str, Any]) -> bool:
        self._require(params, "commands")
        commands = params["commands"]
        if isinstance(commands, str):
            commands = json.loads(commands)
        for c in commands:
            if not _COMMAND.match(str(c.get("command", ""))) or not 1 <= len(str(c.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        with self._lock:
            self.state.commands[str(params.get("language_code") or "")] = commands
        return True

    def _m_getMyCommands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.state.commands.get(str(params.get("language_code") or ""), [])

    def _m_deleteMyCommands(self, params: dict[str, Any]) -> bool:
        self.state.commands.pop(str(params.get("language_code") or ""), None)
        return True

    def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        self._require(params, "url")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        with self._changed:
            self.state.webhook = {"url": params["url"], "secret_token": secret}
            if str(params.get("drop_pending_updates", "")).lower() == "true":
                self.state.updates = []
            self._changed.notify_all()
        return True

    def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        with self._changed:
            self.state.webhook = {}
            if str(params.get("drop_pending_updates", "")).lower() == "true":
                self.state.updates = []
        return True

    def _m_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        pending = len(self.state.updates)
        return {"url": self.state.webhook.get("url", ""), "has_custom_certificate": False,
                "pending_update_count": pending}  # fmt: skip

    def _m_close(self, params: dict[str, Any]) -> bool:
        return True

    def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        timeout = min(float(params.get("timeout") or 0), 50.0)
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        with self._changed:
            if self.state.webhook:
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                    "to delete the webhook first",
                )
            # Telegram ends a long poll when another one starts (409 to the earlier): count it, so a test can
            # prove that only one process polls.
            if self.state.polling:
                self.state.conflicts += 1
            self._poll_generation += 1
            mine = self._poll_generation
            self.state.polling += 1
            try:
                if offset:
                    self.state.updates = [u for u in self.state.updates if u["update_id"] >= offset]
                deadline = time.monotonic() + timeout
                while not self.state.updates and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(min(left, 0.05))
                    if self._poll_generation != mine:
                        raise ApiError(
                            409,
                            "Conflict: terminated by other getUpdates request; make sure that only "
                            "one bot instance is running",
                        )
                return self.state.updates[:limit]
            finally:
                self.state.polling -= 1

    def _deliver_webhooks(self) -> None:
        """Post pending updates to the webhook, one at a time, retrying until the receiver answers 2xx."""
        client = httpx.Client(timeout=10)
        while not self._webhook_stop:
            with self._changed:
                if not (self.state.webhook and self.state.updates):
                    self._changed.wait(0.05)
                    continue
                update, hook = self.state.updates[0], dict(self.state.webhook)
            headers = {"Content-Type": "application/json"}
            if hook.get("secret_token"):
                headers["X-Telegram-Bot-Api-Secret-Token"] = str(hook["secret_token"])
            try:
                response = client.post(hook["url"], content=json.dumps(update).encode(), headers=headers)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if response.status_code >= 300:
                time.sleep(0.2)
                continue
            with self._changed:
                if self.state.updates and self.state.updates[0] is update:
                    self.state.updates.pop(0)
                self._changed.notify_all()
            body = response.content.strip()
            if body:
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    reply = json.loads(body)
                    if isinstance(reply, dict) and reply.get("method"):
                        params = {k: v for k, v in reply.items() if k != "method"}
                        self.handle(self.token, str(reply["method"]), params, via="webhook-reply")
        client.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as api.telegram.org: a client must reuse connections

            def setup(self) -> None:
                super().setup()
                api._sockets.add(self.connection)

            def finish(self) -> None:
                api._sockets.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _params(self) -> dict[str, Any]:
                parts = urlsplit(self.path)
                params: dict[str, Any] = dict(parse_qsl(parts.query))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                kind = self.headers.get("Content-Type", "")
                if raw and "json" in kind:
                    params.update(json.loads(raw))
                elif raw and "x-www-form-urlencoded" in kind:
                    params.update(parse_qsl(raw.decode()))
                elif raw and "multipart/form-data" in kind:
                    params.update(_multipart(raw, kind))
                for key in ("reply_markup", "commands", "allowed_updates", "scope"):
                    if isinstance(params.get(key), str) and params[key][:1] in "[{":
                        params[key] = json.loads(params[key])
                return params

            def _serve(self) -> None:
                path = urlsplit(self.path).path
                match = re.fullmatch(r"/bot([^/]*)/([A-Za-z]+)", path)
                if match is None:
                    status, body = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                else:
                    status, body = api.handle(match.group(1), match.group(2), self._params())
                data = json.dumps(body, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away (a stopping worker's long poll)

            do_GET = do_POST = _serve

        return Handler


def _multipart(raw: bytes, content_type: str) -> dict[str, str]:
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    fields = {}
    for part in raw.split(b"--" + boundary):
        head, _, body = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        if name:
            fields[name.group(1).decode()] = body.rstrip(b"\r\n").decode()
    return fields
