"""The worker process (`flask --app wsgi worker`): an asyncio loop that claims due jobs and runs them.

Handlers are synchronous (domain services, SMTP, HTTP with timeouts) and run in a bounded thread pool, one
session per call. Nothing here is monkey-patched: this process is plain asyncio, never gevent.
"""

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import socket
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app import db, source_watch, stix_worker, wiring
from app.observability import log_config
from app.telegram import outbox as telegram_outbox
from app.telegram import runtime as telegram_runtime
from incidents import audit, evidence, jobs
from incidents.base import utcnow
from incidents.reporting import periodic
from incidents.sources import mailbox

log = logging.getLogger("ucsc.worker")


class Worker:
    """Claims due jobs, runs each in the thread pool, records the outcome; heartbeats; stops on SIGTERM."""

    def __init__(self, app: Flask, *, name: str | None = None) -> None:
        cfg = app.config
        self.app = app
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.engine = app.extensions["ucsc.engine"]
        db.give_way(self.engine)  # SQLite: requests waiting for the write lock get it before this process
        info = wiring.session_info(app)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autobegin=True, info=info)
        self.threads = int(cfg["WORKER_THREADS"])
        self.poll = float(cfg["WORKER_POLL_SECONDS"])
        self.heartbeat_every = float(cfg["WORKER_HEARTBEAT_SECONDS"])
        self.grace = float(cfg["WORKER_SHUTDOWN_GRACE"])
        self.ctx = jobs.JobContext(self.sessions, dict(cfg), wiring.channels(app))
        self.telegram = telegram_runtime.attach(self)  # None when Telegram is off; binds the `telegram` channel
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ucsc-job")
        # The worker's own queries (claim, heartbeat, release) get a thread of their own, so they never wait
        # behind jobs that fill the pool; one thread keeps them in order (the stopping beat comes last).
        self.control = ThreadPoolExecutor(1, thread_name_prefix="ucsc-worker")
        self.abandoned = False  # jobs released at shutdown whose threads were still inside their call
        self.running: dict[int, jobs.ClaimedJob] = {}
        self.lags: deque[float] = deque(maxlen=1000)  # seconds from due to start, for the bench and /metrics
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def run(self) -> bool:
        """Run until stopped; True when threads of released jobs were left running (see `worker_command`)."""
        asyncio.run(self.main())
        return self.abandoned

    async def main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.stop)
        event.listen(self.sessions, "after_commit", self._after_commit)
        started = utcnow()
        await self._call(self._beat, started)
        await self._call(self._schedule_sweep)
        tasks = [asyncio.create_task(self._heartbeat(started))]
        tasks.append(asyncio.create_task(stix_worker.run(self)))  # the STIX projector (app/stix_worker.py)
        telegram = asyncio.create_task(self.telegram.run()) if self.telegram else None  # app/telegram/runtime.py
        if self.app.config.get("MAILBOX_URL"):  # the [TBSC] mailbox (incidents/sources/mailbox.py)
            tasks.append(asyncio.create_task(mailbox.run(self._mailbox())))
        if float(self.app.config.get("SOURCE_WATCH_SECONDS") or 0) > 0:  # silent sources (app/source_watch.py)
            tasks.append(asyncio.create_task(source_watch.run(self)))
        if self.engine.dialect.name == "postgresql":
            tasks.append(asyncio.create_task(self._listen()))
        log.info("worker %s started (%d threads, poll %.2fs)", self.name, self.threads, self.poll)
        try:
            await self._claim_loop()
        finally:
            if telegram is not None:
                await self.telegram.stop()  # steps down: stops polling, ends its leases, frees the lock
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(telegram, self.grace)
            for task in tasks:
                task.cancel()
            await self._drain()
            await self._call(self._beat, started, True)
            # A released job's outcome no longer counts (its lease is gone): do not wait for its network call.
            self.pool.shutdown(wait=not self.abandoned, cancel_futures=True)
            self.control.shutdown(wait=True)
            log.info("worker %s stopped", self.name)

    def stop(self) -> None:
        """Stop claiming; running jobs get `WORKER_SHUTDOWN_GRACE` seconds, then their leases are released."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping)

    def _stopping(self) -> None:
        if not self._stop.is_set():
            log.info("worker %s stopping", self.name)
            self._stop.set()
            self._wake.set()

    def wake(self) -> None:
        """Safe from any thread: look for due jobs now."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # --- the loop ----------------------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        slots = asyncio.Semaphore(self.threads)
        while not self._stop.is_set():
            self._wake.clear()
            free = self.threads - len(self.running)
            try:
                claimed = await self._call(self._claim, free) if free > 0 else []
            except OperationalError as exc:
                # SQLite busy past its busy_timeout, a lost PostgreSQL connection: the worker must outlive it.
                log.warning("claiming jobs failed, retrying at the next poll: %s", exc)
                claimed = []
            for job in claimed:
                await slots.acquire()
                self.running[job.id] = job
                self.lags.append((job.started_at - job.run_at).total_seconds())
                task = asyncio.create_task(self._run(job))
                task.add_done_callback(lambda _t: slots.release())
            if len(claimed) == free and free > 0:
                continue  # there may be more due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    def _claim(self, limit: int) -> list[jobs.ClaimedJob]:
        with self.sessions() as session:
            # An idle poll is a read; the write lock (BEGIN IMMEDIATE on SQLite) is taken only when work is due.
            # Telegram sends are claimed by the Telegram leader alone (per-token limits, app/telegram/).
            kinds = [k for k in jobs.KINDS if k not in telegram_outbox.LEADER_KINDS]
            due = jobs.next_due_at(session, kinds)
            if due is None or due > utcnow():
                return []
            return jobs.claim(session, self.name, limit, kinds=kinds)

    async def _run(self, job: jobs.ClaimedJob) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self.pool, self._execute, job)
        finally:
            self.running.pop(job.id, None)
            self._wake.set()

    def _execute(self, job: jobs.ClaimedJob) -> None:
        kind = jobs.KINDS[job.kind]
        started = time.perf_counter()
        try:
            kind.handler(self.ctx, job)
        except jobs.PermanentError as exc:
            self._record_failure(job, exc, permanent=True)
        except Exception as exc:  # any failure of a job is recorded on the job, never lost
            self._record_failure(job, exc)
        else:
            if job.finished:  # the handler ended it in its own transaction (jobs.finish)
                done = job.finished[0]
            else:
                with self.sessions() as session:
                    done = jobs.complete(session, job, self.name)
            if not done:
                log.warning("job %s finished after its lease passed to another worker", job.id)
            log.debug("job %s %s done in %.3fs", job.id, job.kind, time.perf_counter() - started)

    def _record_failure(self, job: jobs.ClaimedJob, exc: Exception, *, permanent: bool = False) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self.sessions() as session:
            state = jobs.fail(session, job, self.name, message, permanent=permanent)
        level = logging.ERROR if state == jobs.DEAD else logging.WARNING
        log.log(level, "job %s %s failed (attempt %d, now %s): %s", job.id, job.kind, job.attempts, state, message)

    async def _drain(self) -> None:
        if self.running:
            deadline = time.monotonic() + self.grace
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if self.running:
            left = list(self.running.values())
            released = await self._call(self._release, left)
            self.abandoned = True
            log.warning("released %d lease(s) of jobs still running at shutdown", released)

    def _release(self, left: list[jobs.ClaimedJob]) -> int:
        with self.sessions() as session:
            return jobs.release(session, left, self.name)

    # --- heartbeat, wake-ups -----------------------------------------------------------------------------------

    async def _heartbeat(self, started: Any) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_every)
            try:
                await self._call(self._beat, started)
            except Exception:  # a database hiccup must not kill the worker; the stale beat shows it
                log.exception("heartbeat failed")

    def _beat(self, started: Any, stopped: bool = False) -> None:
        with self.sessions() as session:
            jobs.beat(session, self.name, started=started, stopped=stopped)

    def _schedule_sweep(self) -> None:
        with self.sessions() as session, session.begin():
            session.connection(execution_options={"ucsc_write": True})
            jobs.schedule_sweep(session)
            # Form 05 reminders before 20 June and 15 December.
            periodic.schedule_reminders(session, days_before=int(self.ctx.config.get("PERIODIC_REMINDER_DAYS", 7)))
            audit.schedule_checkpoint(session, self.ctx.config)  # signed checkpoints of the audit trail

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(jobs.JOBS_WRITTEN, False):
            self.wake()  # a job that created jobs: run them without waiting for the next poll

    async def _listen(self) -> None:
        """PostgreSQL: LISTEN for the hint that another process queued jobs."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {jobs.JOBS_CHANNEL}")
                    async for _ in conn.notifies():
                        self._wake.set()
                        if self.telegram is not None:  # a send queued by another worker: the leader looks now
                            self.telegram.wake()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("LISTEN %s lost; retrying", jobs.JOBS_CHANNEL)
                await asyncio.sleep(1)

    def _mailbox(self) -> mailbox.Poller:
        root = self.app.config.get("EVIDENCE_DIR") or os.path.join(self.app.instance_path, "evidence")
        store = evidence.Store(Path(root), int(self.app.config["EVIDENCE_MAX_BYTES"]))
        return mailbox.Poller(self.sessions, mailbox.MailboxSettings.from_config(self.app.config), store)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.control, fn, *args)


@click.command("worker")
@with_appcontext
def worker_command() -> None:
    """Run the worker: claim and run due jobs until SIGTERM."""
    level = os.environ.get("UCSC_LOG_LEVEL", "INFO")
    logging.config.dictConfig(log_config(str(current_app.config["LOG_FORMAT"]), level))
    if Worker(current_app._get_current_object()).run():
        # Threads of released jobs may wait on the network for up to NOTIFY_TIMEOUT, and the interpreter joins
        # every pool thread at exit; their leases are back in the table, so leave without them.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
