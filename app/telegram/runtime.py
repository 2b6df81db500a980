"""The Telegram leader in the worker's asyncio loop: leadership, the Application, sends, updates and board posts."""

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import text as sql
from telegram import BotCommand, BotCommandScopeDefault, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, CommandHandler, MessageHandler
from telegram.ext import filters as tg_filters
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from app.telegram.commands import COMMANDS, Commands
from app.telegram.outbox import LEADER_KINDS, Outbox
from app.telegram.presses import Presses
from app.telegram.sends import Sends, Sent
from app.telegram.settings import WEBHOOK_PATH, Settings
from app.telegram.transport import (
    GROUP_SPACING,
    OVERALL_PER_SECOND,
    POOL_SIZE,
    POOLS,
    PRIVATE_SPACING,
    PooledRequest,
    SlidingLimiter,
)
from app.telegram.updates import mark_processed, unprocessed
from app.telegram.views import Views
from incidents import jobs
from incidents.base import utcnow
from incidents.models import Job
from notifiers import telegram as tg

log = logging.getLogger("ucsc.telegram")


class Runtime:
    """Leadership, the Application, the send loop, stored webhook updates and board posts, in the worker's loop."""

    def __init__(self, worker: Any, settings: Settings) -> None:
        self.worker = worker
        self.settings = settings
        self.name = worker.name
        self.engine = worker.engine
        config = dict(worker.app.config)
        self.views = Views(settings, config)
        self.outbox = Outbox(worker.sessions, settings, config)
        self.outbox.queued = self.wake
        self.sends = Sends(worker.sessions, settings, config)
        self.presses = Presses(worker.sessions, settings, config)
        self.commands = Commands(worker.sessions, settings, config)
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="ucsc-telegram")
        self.limiter = SlidingLimiter(OVERALL_PER_SECOND, 1.0)
        self.paused_until = 0.0  # monotonic: a 429 holds every send until then
        self.chat_next: dict[int, float] = {}
        self.chat_locks: dict[int, asyncio.Lock] = {}
        self.sending: set[tuple[int, int]] = set()  # (job id, attempt): a re-claimed job is a new attempt
        self.leading = False
        self.application: Application | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock_conn: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._sent: list[Sent] = []
        self._sent_changed = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake.set)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    async def run(self) -> None:
        """Try for leadership every second; lead until stopped or the lock is lost."""
        self.loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                if await self._db(self._try_lock):
                    await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Telegram runtime failed; retrying")
            finally:
                await self._db(self._unlock)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _try_lock(self) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True  # SQLite runs one worker
        conn = self.engine.connect()
        try:
            got = conn.execute(sql("SELECT pg_try_advisory_lock(:k)"), {"k": self.settings.lock_key}).scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._lock_conn = conn
        return True

    def _still_locked(self) -> bool:
        if self._lock_conn is None:
            return True
        try:
            self._lock_conn.execute(sql("SELECT 1"))
            self._lock_conn.commit()
            return True
        except Exception:
            log.warning("lost the Telegram leader lock's connection")
            return False

    def _unlock(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                self._lock_conn.close()  # closing the session ends its advisory lock
            self._lock_conn = None

    def _build(self) -> Application:
        builder = (
            ApplicationBuilder().token(self.settings.token).base_url(self.settings.api_url)
            .concurrent_updates(8).request(PooledRequest(POOLS, POOL_SIZE))
            .get_updates_request(HTTPXRequest(connection_pool_size=1, read_timeout=self.settings.poll_timeout + 10))
        )  # fmt: skip
        if self.settings.mode == "webhook":
            builder = builder.updater(None)
        app = builder.build()
        app.add_handler(CallbackQueryHandler(self._on_press))
        for name in ("start", "help", "mine", "status", "ack"):
            app.add_handler(CommandHandler(name, self._on_command))
        app.add_handler(MessageHandler(tg_filters.REPLY & tg_filters.TEXT & ~tg_filters.COMMAND, self._on_reply))
        app.add_error_handler(self._on_error)
        return app

    async def _lead(self) -> None:
        app = self._build()
        while not self._stop.is_set():
            try:
                await app.initialize()
                break
            except InvalidToken:
                log.error("the Telegram token was refused; Telegram stays off in this worker")
                await self._stop.wait()
                return
            except NetworkError as exc:
                log.warning("Telegram unreachable at start (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 2.0)
        if self._stop.is_set():
            return
        self.application = app
        self.leading = True
        await self._db(self.sends.lead, self.name)
        taken = await self._db(self.sends.takeover, self.name)
        log.info("telegram leader %s (%s mode, bot @%s, %d send lease(s) taken over)", self.name,
                 self.settings.mode, app.bot.username, taken)  # fmt: skip
        try:
            await app.start()
            workers = [asyncio.create_task(t) for t in (self._sender(), self._beat(), self._recorder(),
                                                         self._receive(app))]  # fmt: skip
            await asyncio.wait([*workers, asyncio.create_task(self._stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            for task in workers:
                task.cancel()
            for task in workers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            self.leading = False
            for task in list(self._tasks):
                task.cancel()
            for _ in range(3):  # what was sent must be recorded, or a new leader would send it again
                if self._sent:
                    with contextlib.suppress(Exception):
                        await self._flush()
            with contextlib.suppress(Exception):
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
            with contextlib.suppress(Exception):
                if app.running:
                    await app.stop()
            with contextlib.suppress(Exception):
                await app.shutdown()
            self.application = None
            log.info("telegram leader %s stepped down", self.name)

    async def _receive(self, app: Application) -> None:
        """Commands, then updates by long polling (or the webhook); retried while Telegram cannot be reached."""
        await self._register_commands(app)
        if self.settings.mode == "polling":
            while True:
                try:
                    await app.updater.start_polling(timeout=self.settings.poll_timeout, allowed_updates=[
                        "message", "callback_query"], error_callback=self._on_poll_error)  # fmt: skip
                    break
                except NetworkError as exc:
                    log.warning("starting to poll failed (%s); retrying", exc)
                    await asyncio.sleep(2)
            log.info("telegram ready: polling")
            await asyncio.Event().wait()  # the updater polls on its own; this task ends when leadership does
        await self._set_webhook(app)
        log.info("telegram ready: webhook")
        await self._stored_updates()

    async def _register_commands(self, app: Application) -> None:
        for language in tg.LANGUAGES:
            r = self.views.renderer(language)
            commands = [BotCommand(name, r.gettext(text)) for name, text in COMMANDS]
            try:
                await app.bot.set_my_commands(
                    commands,
                    scope=BotCommandScopeDefault(),
                    language_code=None if language == tg.DEFAULT_LANGUAGE else language,
                )
            except NetworkError as exc:  # commands are a convenience; paging must not wait for them
                log.warning("setMyCommands (%s) failed: %s", language, exc)

    async def _set_webhook(self, app: Application) -> None:
        url = self.settings.base_url + WEBHOOK_PATH
        while not self._stop.is_set():
            try:
                await app.bot.set_webhook(url, secret_token=self.settings.webhook_secret,
                                          allowed_updates=["message", "callback_query"])  # fmt: skip
                return
            except NetworkError as exc:
                log.warning("setWebhook failed (%s); retrying", exc)
                await asyncio.sleep(2)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not await self._db(self._still_locked):
                return  # leadership lost: _lead steps down
            with contextlib.suppress(Exception):
                await self._db(self.sends.lead, self.name)
            try:
                if await self._db(self.outbox.queue_board_posts):
                    self._wake.set()
            except Exception:
                log.exception("board posts failed")

    # sending

    async def _sender(self) -> None:
        while True:
            self._wake.clear()
            wait = self.paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            claimed, keys, slots = await self._db(self._claim, frozenset(self.chat_next))
            if claimed:
                for chat_id, at in slots.items():
                    self.chat_next.setdefault(chat_id, time.monotonic() + (at - utcnow()).total_seconds())
                for job in claimed:
                    self.sending.add((job.id, job.attempts))
                    task = asyncio.create_task(self._deliver(job, job.payload["key"] in keys))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if len(claimed) >= 100:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.05)

    def _claim(self, known: frozenset[int]) -> tuple[list[jobs.ClaimedJob], set[str], dict[int, datetime]]:
        """Due sends leased to us, the keys of those sent before, and the next slots of chats not in `known`.

        One trip to the thread pool for all three: each trip is a wait on a loaded machine, before every page.
        """
        with self.worker.sessions() as session:
            due = session.scalar(
                select(func.min(Job.run_at)).where(Job.state == jobs.QUEUED, Job.kind.in_(LEADER_KINDS))
            )
            session.rollback()
            if due is None or due > utcnow():
                return [], set(), {}
            claimed = jobs.claim(session, self.name, 100, kinds=sorted(LEADER_KINDS))
        claimed = [j for j in claimed if (j.id, j.attempts) not in self.sending]
        if not claimed:
            return [], set(), {}
        keys = self.sends.already_sent([j.payload["key"] for j in claimed])
        unknown = sorted({int(j.payload["chat_id"]) for j in claimed} - known)
        return claimed, keys, self.sends.chat_slots(unknown) if unknown else {}

    async def _deliver(self, job: jobs.ClaimedJob, sent_before: bool) -> None:
        try:
            if sent_before:  # an earlier attempt got through but its job was not marked done
                await self._db(self.sends.complete, job, self.name)
                return
            chat_id = int(job.payload["chat_id"])
            lock = self.chat_locks.setdefault(chat_id, asyncio.Lock())
            async with lock:
                await self._send_one(job, chat_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("telegram send %s failed", job.id)
            await self._db(self.sends.failed, job, self.name, f"{type(exc).__name__}: {exc}", permanent=False)
        finally:
            self.sending.discard((job.id, job.attempts))

    def _record(self, job: jobs.ClaimedJob, message_id: int, at: datetime, spacing: float) -> None:
        """Sent: written with the others sent in the same few milliseconds (one transaction, not one each)."""
        self._sent.append((job, message_id, at, spacing))
        self._sent_changed.set()

    async def _recorder(self) -> None:
        while True:
            await self._sent_changed.wait()
            await asyncio.sleep(0.01)
            await self._flush()

    async def _recorded(self) -> None:
        """Before an update is handled: what was sent is in the database (a press may come right after a send)."""
        if self._sent:
            await self._flush()

    async def _flush(self) -> None:
        self._sent_changed.clear()
        batch, self._sent = self._sent, []
        if not batch:
            return
        try:
            await self._db(self.sends.sent, batch, self.name)
        except Exception:
            log.exception("recording %d sent message(s) failed; retrying", len(batch))
            self._sent = batch + self._sent
            self._sent_changed.set()
            await asyncio.sleep(0.5)

    async def _send_one(self, job: jobs.ClaimedJob, chat_id: int) -> None:
        p = job.payload
        wait = self.chat_next.get(chat_id, 0.0) - time.monotonic()
        if wait > 5.0:  # a long wait is the database's business, not a leased job's
            await self._db(self.sends.reschedule, job, self.name, utcnow() + timedelta(seconds=wait), "chat spacing",
                           count=False)  # fmt: skip
            return
        if wait > 0:
            await asyncio.sleep(wait)
        await self.limiter.acquire()
        released = False
        try:
            pause = self.paused_until - time.monotonic()
            if pause > 0:
                self.limiter.give_back()  # nothing was sent: the slot must not hold the window after the pause
                released = True
                await self._db(self.sends.reschedule, job, self.name, utcnow() + timedelta(seconds=pause),
                               "paused by a 429", count=False)  # fmt: skip
                return
            renderer = self.views.renderer(p.get("language"))
            markup = renderer.keyboard(p.get("buttons") or {})
            message = await self.application.bot.send_message(
                chat_id, p["text"], parse_mode=ParseMode.HTML, reply_markup=markup, disable_web_page_preview=True
            )
            await self.limiter.release()
            released = True
            spacing = PRIVATE_SPACING if chat_id > 0 else GROUP_SPACING
            self.chat_next[chat_id] = time.monotonic() + spacing
            self._record(job, message.message_id, utcnow(), spacing)
            if p.get("queued_at"):
                log.debug("telegram page %s sent %.3fs after queueing", job.id, time.time() - p["queued_at"])
        except RetryAfter as exc:
            seconds = tg.retry_seconds(exc)
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)
            log.warning("Telegram asked to wait %.0fs; every send pauses", seconds)
            await self._db(self.sends.reschedule, job, self.name, utcnow() + timedelta(seconds=seconds),
                           f"429 retry after {seconds}s", count=False)  # fmt: skip
        except Forbidden as exc:
            await self._db(self.sends.undeliverable, job, self.name, str(exc))
        except ChatMigrated as exc:
            await self._db(self.sends.undeliverable, job, self.name, f"group moved to {exc.new_chat_id}")
        except BadRequest as exc:
            if "chat not found" in str(exc).lower() or "user is deactivated" in str(exc).lower():
                await self._db(self.sends.undeliverable, job, self.name, str(exc))
            else:
                await self._db(self.sends.failed, job, self.name, f"BadRequest: {exc}", permanent=True)
        except NetworkError as exc:  # TimedOut included: retried with backoff, the attempt counts
            delay = jobs.backoff(job.attempts, base=self.settings.retry_base, cap=60.0)
            await self._db(self.sends.reschedule, job, self.name, utcnow() + delay, f"{type(exc).__name__}: {exc}",
                           count=True)  # fmt: skip
        finally:
            if not released:
                await self.limiter.release()

    # updates

    async def _stored_updates(self) -> None:
        """Webhook mode: process updates the web route stored, in update_id order."""
        while True:
            rows = await self._db(self._unprocessed)
            for row_id, body in rows:
                try:
                    update = Update.de_json(body, self.application.bot)
                    await self.application.process_update(update)
                finally:
                    await self._db(self._processed, row_id)
            if not rows:
                await asyncio.sleep(0.05)

    def _unprocessed(self) -> list[tuple[int, dict]]:
        with self.worker.sessions() as session:
            return unprocessed(session, self.settings.bot)

    def _processed(self, row_id: int) -> None:
        with self.worker.sessions() as session:
            mark_processed(session, row_id)

    async def _on_press(self, update: Update, context: Any) -> None:
        q = update.callback_query
        if q is None or q.message is None:
            return
        await self._recorded()
        chat = q.message.chat
        outcome = await self._db(
            self.presses.press, data=q.data or "", chat_id=chat.id, message_id=q.message.message_id,
            user_id=q.from_user.id, name=q.from_user.full_name, chat_type=chat.type,
        )  # fmt: skip
        webhook = self.settings.mode == "webhook"
        if not webhook:  # in webhook mode the web route answered already, in its response body
            await self._safely(q.answer(outcome.answer, show_alert=outcome.alert))
        if outcome.accepted and outcome.edit_text:
            markup = self.views.renderer(outcome.language).keyboard(outcome.edit_buttons or {})
            await self._edit(chat.id, q.message.message_id, outcome.edit_text, markup)

    async def _edit(self, chat_id: int, message_id: int, text: str, markup: Any) -> None:
        await self.limiter.acquire()
        try:
            await self._safely(self.application.bot.edit_message_text(
                text, chat_id=chat_id, message_id=message_id, parse_mode=ParseMode.HTML, reply_markup=markup,
                disable_web_page_preview=True))  # fmt: skip
        finally:
            await self.limiter.release()

    async def _on_command(self, update: Update, context: Any) -> None:
        message = update.effective_message
        if message is None or message.from_user is None:
            return
        await self._recorded()
        name = (message.text or "").split()[0][1:].split("@")[0].lower()
        outcome = await self._db(
            self.commands.command, name=name, args=list(context.args or []), chat_id=message.chat.id,
            user_id=message.from_user.id, chat_type=message.chat.type, user_language=message.from_user.language_code,
        )  # fmt: skip
        await self._reply(message.chat.id, outcome.answer, message.message_id)
        for chat_id, message_id, text in outcome.page_messages:
            markup = self.views.renderer(outcome.language).keyboard(outcome.edit_buttons or {})
            await self._edit(chat_id, message_id, text, markup)

    async def _on_reply(self, update: Update, context: Any) -> None:
        message = update.effective_message
        if message is None or message.reply_to_message is None or message.from_user is None:
            return
        await self._recorded()
        outcome = await self._db(self.commands.directive, chat_id=message.chat.id, user_id=message.from_user.id,
                                 reply_to=message.reply_to_message.message_id, text=message.text or "")  # fmt: skip
        if outcome is not None:
            await self._reply(message.chat.id, tg.esc(outcome.answer), message.message_id)

    async def _reply(self, chat_id: int, text: str, reply_to: int | None) -> None:
        await self.limiter.acquire()
        try:
            await self._safely(
                self.application.bot.send_message(
                    chat_id,
                    text,
                    parse_mode=ParseMode.HTML,
                    disable_web_page_preview=True,
                    reply_parameters={"message_id": reply_to, "allow_sending_without_reply": True}
                    if reply_to
                    else None,
                )
            )
        finally:
            await self.limiter.release()

    async def _safely(self, call: Any) -> Any:
        """Answers and edits are best effort: a failure is logged, never raised into the update's handler."""
        try:
            return await call
        except RetryAfter as exc:
            self.paused_until = max(self.paused_until, time.monotonic() + tg.retry_seconds(exc))
        except NetworkError as exc:
            log.warning("Telegram call failed: %s", exc)
        return None

    async def _on_error(self, update: object, context: Any) -> None:
        log.error("Telegram update %s failed", getattr(update, "update_id", "?"), exc_info=context.error)

    def _on_poll_error(self, exc: Exception) -> None:
        log.warning("getUpdates failed: %s", exc)


def attach(worker: Any) -> Runtime | None:
    """Give the worker its Telegram runtime (None when Telegram is off) and the `telegram` channel."""
    settings = Settings.from_config(worker.app.config)
    if settings is None:
        return None
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Bot API call otherwise
    # PTB 22 warns on every 429 that retry_after becomes a timedelta; `tg.retry_seconds` reads both forms.
    warnings.filterwarnings("ignore", message=".*retry_after.*", category=PTBDeprecationWarning)
    runtime = Runtime(worker, settings)
    worker.ctx.notifiers[tg.CHANNEL] = tg.TelegramNotifier(runtime.outbox.enqueue_page)
    return runtime
