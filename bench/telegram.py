"""Telegram paging benchmark: incident filed → first sendMessage at the Bot API stand-in, and a 120-contact burst.

What it measures (the Telegram issue, "Benchmark"), on SQLite and on PostgreSQL in turn, with gunicorn serving
the API, one worker leading the bot, and the stand-in of tests/botapi.py as the Bot API:
- latency from an incident POST returning 201 to the stand-in receiving its first sendMessage, p50/p99, for
  incidents filed at 5 per second whose playbook pages 20 contacts of a group in turn (round robin); beside a
  bare `Bot.send_message` loop (one PTB Bot, the same stand-in, the same run) timed from the call to receipt.
  Target: p99 <= 500 ms;
- one incident paging 120 contacts at once: the span from the first to the last sendMessage received against
  the least span Telegram's limits allow (30 in any second: (n - 1) // 30 seconds), and that no limit was broken
  at the stand-in's receive times. Target: within 10 % of the least span.

`UCSC_BENCH_SCALE` (default 1.0) scales the counts; CI runs 0.1 only to prove the benchmark still runs, and
targets are enforced (exit status 1 when missed) only at full scale. A page that never arrives or a broken limit
is an error at any scale (exit status 2). Figures go to stdout and to bench/results-telegram.json
(`UCSC_BENCH_OUTPUT` overrides it); `UCSC_BENCH_BACKENDS=sqlite` runs one backend.
"""

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import SCALE, database, percentile, scaled
from _common import env as _env
from _common import flask as _flask

ROOT = Path(__file__).resolve().parent.parent
# This file is bench/telegram.py: with bench/ first on the path, `import telegram` would find it instead of
# python-telegram-bot. The root replaces it (the stand-in is imported from tests/ too).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from tests.botapi import BotAPI  # noqa: E402 - the stand-in lives with the tests, the bench reuses it
from tests.live import free_port  # noqa: E402

OUTPUT = Path(os.environ.get("UCSC_BENCH_OUTPUT", ROOT / "bench" / "results-telegram.json"))
BACKENDS = [b.strip() for b in os.environ.get("UCSC_BENCH_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
TOKEN = "700000001:BENCH-token_abc"  # noqa: S105 - the stand-in's token
RATE = 5.0  # incidents per second in the turn phase
IN_TURN = 20
TARGETS = {"first_send_p99_ms": 500.0, "burst_ratio": 1.10}
TURN_PLAYBOOK = """
name: bench-telegram-turn
title_vi: Gọi lần lượt qua Telegram
when: {category: phishing}
steps:
  - page: {group: tg-bench, pick: round_robin, reason_vi: Đề nghị kiểm tra}
"""
BURST_PLAYBOOK = """
name: bench-telegram-burst
title_vi: Gọi đồng loạt qua Telegram
when: {category: malware}
steps:
  - page: {organisation: viettel, pick: all, reason_vi: Đề nghị kiểm tra}
"""


def payload(n: int, category: str) -> dict[str, Any]:
    return {
        "title": f"Telegram bench {n}", "description": "bench", "category": category, "priority": "P2",
        "tlp": "green", "detected_at": "2026-01-15T08:30:00+07:00",
        "observables": [{"type": "domain-name", "value": f"tg-{os.getpid()}-{n}.example.net"}],
    }  # fmt: skip


def prepare(database_url: str, api: BotAPI, burst: int) -> str:
    """Schema, the roster, 20 contacts in a group, `burst` contacts of one organisation, two playbooks; a token."""
    from sqlalchemy import select

    from app import create_app, db
    from app.auth import new_token
    from incidents import accounts
    from incidents.access import Actor
    from incidents.enums import Role
    from incidents.models import Organisation
    from playbooks import oncall
    from playbooks import service as playbooks
    from playbooks.models import Contact, PlaybookVersion

    _flask(_env(database_url), "init-db")
    app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "bench", "TESTING": True})
    token, digest = new_token()
    with app.app_context():
        session = db.session()
        with session.begin():
            admin = accounts.create_user(session=session, username="bench-admin", role=Role.ADMIN,
                                         organisation="dic", password_hash=None)  # fmt: skip
            accounts.create_token(session=session, name="bench", role=Role.OPERATOR, digest=digest,
                                  user="bench-admin")  # fmt: skip
            orgs = {o.code: o.id for o in session.scalars(select(Organisation))}
            turn, many = [], []
            for i in range(IN_TURN + burst):
                chat = 20_000 + i
                api.add_chat(chat)
                contact = Contact(organisation_id=orgs["vnpt" if i < IN_TURN else "viettel"], name=f"Bench {i}",
                                  telegram_chat_id=str(chat), channels=["telegram"], roles=[], language="vi",
                                  active=True)  # fmt: skip
                session.add(contact)
                (turn if i < IN_TURN else many).append(contact)
            # The demo directory's own viettel contacts would be paged too: the burst is ours alone.
            for demo in session.scalars(select(Contact).where(Contact.organisation_id == orgs["viettel"])):
                if demo not in many:
                    demo.active = False
            session.flush()
            actor = Actor(admin.id, admin.username, Role.ADMIN, admin.organisation_id)
            turn_ids = [c.id for c in turn]
            names = list(session.scalars(select(PlaybookVersion.name).distinct()))
        oncall.save_group(session=session, code="tg-bench", name_vi="Nhóm thử", name_en=None, organisation=None,
                             members=turn_ids, actor=actor)  # fmt: skip
        for name in names:  # only the bench's playbooks start on the bench's incidents
            playbooks.set_enabled(session=session, name=name, enabled=False, actor=actor)
        for source in (TURN_PLAYBOOK, BURST_PLAYBOOK):
            playbooks.upload_playbook(session=session, source=source, actor=actor)
        db.engine().dispose()
    return token


class Server:
    """gunicorn wsgi:app and one worker on `database_url`, Telegram pointed at the stand-in."""

    def __init__(self, database_url: str, api: BotAPI, workdir: Path) -> None:
        self.port = free_port()
        self.env = _env(
            database_url, UCSC_TELEGRAM_TOKEN=TOKEN, UCSC_TELEGRAM_API_URL=api.url, UCSC_TELEGRAM_MODE="polling",
            UCSC_TELEGRAM_POLL_TIMEOUT="5", UCSC_WORKER_THREADS="8", UCSC_WORKER_POLL_SECONDS="0.05",
            UCSC_PAGING_RATE_LIMIT="100000", UCSC_BASE_URL=f"http://127.0.0.1:{self.port}", UCSC_LOG_LEVEL="INFO",
        )  # fmt: skip
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "Server":
        for name, args in (
            ("gunicorn", [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{self.port}"]),
            ("worker", [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]),
        ):
            log = (self.workdir / f"{name}.log").open("ab")
            self.procs.append(subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "telegram ready" in (self.workdir / "worker.log").read_text(errors="replace"):
                with contextlib.suppress(OSError):
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        return self
            time.sleep(0.1)
        raise RuntimeError("gunicorn or the worker did not start:\n" + (self.workdir / "worker.log").read_text())

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def file(port: int, token: str, body: dict[str, Any]) -> tuple[str, float]:
    """POST an incident; its reference and the time the 201 came back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/v1/incidents", json.dumps(body).encode(),
                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    answer = json.loads(response.read())
    done = time.time()
    conn.close()
    if response.status != 201:
        raise RuntimeError(f"filing answered {response.status}: {answer}")
    return answer["ref"], done


def first_sends(api: BotAPI) -> dict[str, float]:
    """The receive time of the first sendMessage naming each incident reference."""
    found: dict[str, float] = {}
    for call in api.calls_of("sendMessage"):
        text = str(call.params.get("text", ""))
        start = text.find("TH-")
        if start >= 0:
            ref = text[start : start + 13]
            found.setdefault(ref, call.at)
    return found


def bare_loop(api: BotAPI, sends: int) -> list[float]:
    """The baseline: one PTB Bot, send_message to 20 chats in turn at the same rate; call to receipt, in ms."""
    from telegram import Bot

    for i in range(IN_TURN):  # chats of its own: the system's per-chat spacing is not the baseline's business
        api.add_chat(30_000 + i)

    async def go() -> list[float]:
        out = []
        async with Bot(TOKEN, base_url=api.url) as bot:
            for i in range(sends):
                before = len(api.state.calls)
                started = time.time()
                await bot.send_message(30_000 + i % IN_TURN, f"bare {i}")
                received = next(c.at for c in api.state.calls[before:] if c.method == "sendMessage")
                out.append((received - started) * 1000)
                await asyncio.sleep(max(0.0, started + 1 / RATE - time.time()))
        return out

    return asyncio.run(go())


def run_backend(name: str, database_url: str, workdir: Path) -> dict[str, Any]:
    incidents, burst = scaled(100, 10), scaled(120, 36)
    api = BotAPI(TOKEN).start()
    server = None
    try:
        token = prepare(database_url, api, burst)
        server = Server(database_url, api, workdir).start()
        filed: dict[str, float] = {}
        errors: list[str] = []
        threads = []
        t0 = time.time()
        for n in range(incidents):  # open loop: filings at fixed times, whatever the answers
            delay = t0 + n / RATE - time.time()
            if delay > 0:
                time.sleep(delay)

            def one(n: int = n) -> None:
                try:
                    ref, at = file(server.port, token, payload(n, "phishing"))
                    filed[ref] = at
                except Exception as exc:  # a failed filing is an error of the run, reported
                    errors.append(f"filing {n}: {exc}")

            thread = threading.Thread(target=one)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(set(first_sends(api)) & set(filed)) < len(filed):
            time.sleep(0.05)
        sent = first_sends(api)
        latencies = sorted((sent[ref] - at) * 1000 for ref, at in filed.items() if ref in sent)
        missing = [ref for ref in filed if ref not in sent]
        turn_violations = api.limit_violations()
        stages = breakdown(database_url, filed, sent)
        bare = sorted(bare_loop(api, incidents))
        # The baseline's sends share the token's 30-a-second budget at the stand-in, which the system cannot know
        # of: the burst starts once the last of them is more than a second old.
        time.sleep(1.1)

        before = len(api.calls_of("sendMessage"))
        _, filed_at = file(server.port, token, payload(10_000, "malware"))
        burst_chats = {20_000 + IN_TURN + i for i in range(burst)}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = [c for c in api.calls_of("sendMessage")[before:] if int(c.params["chat_id"]) in burst_chats]
            if len(got) >= burst:
                break
            time.sleep(0.05)
        span = max(c.mono for c in got) - min(c.mono for c in got) if got else float("nan")
        least = (burst - 1) // 30
        # Where the span above the least goes: the first 30 arriving over a spread (the span can be no less than
        # the least plus it), and each later window of 31 taking longer than a second (the round trip a send
        # waits for, since a slot opens a second after a completion).
        at = sorted(c.mono for c in got)
        excess = sorted((at[i] - at[i - 30] - 1.0) * 1000 for i in range(30, len(at)))
        burst_figures = {
            "contacts": burst, "received": len(got), "span_s": span, "least_span_s": least,
            "ratio": span / least if least else float("nan"),
            "filed_to_last_s": max(c.at for c in got) - filed_at if got else float("nan"),
            "filed_to_first_ms": (min(c.at for c in got) - filed_at) * 1000 if got else float("nan"),
            "first_30_spread_ms": (at[min(29, len(at) - 1)] - at[0]) * 1000 if at else float("nan"),
            "window_excess_ms": {"p50": percentile(excess, 50), "max": excess[-1]} if excess else None,
            "received_ms": [round((t - at[0]) * 1000, 1) for t in at],
        }  # fmt: skip
        violations = api.limit_violations()
        if missing:
            errors.append(f"{len(missing)} incident(s) never reached the stand-in")
        if len(got) < burst:
            errors.append(f"burst: {len(got)} of {burst} pages arrived")
        if turn_violations or violations:
            errors.append(f"Telegram limits broken: {(turn_violations or violations)[:3]}")
        p99 = percentile(latencies, 99)
        return {
            "database": database_url.rsplit("/", 1)[-1],
            "first_send": {
                "p50_ms": percentile(latencies, 50),
                "p99_ms": p99,
                "max_ms": latencies[-1] if latencies else float("nan"),
                "samples": len(latencies),
                "incidents": incidents,
                "rate_per_s": RATE,
                "contacts_in_turn": IN_TURN,
            },
            "bare_send": {"p50_ms": percentile(bare, 50), "p99_ms": percentile(bare, 99), "samples": len(bare)},
            "ratio_p99": p99 / percentile(bare, 99) if bare else float("nan"),
            "stages": stages,
            "burst": burst_figures,
            "errors": errors,
            "targets": {
                "first_send_p99_ms": _target(p99, TARGETS["first_send_p99_ms"]),
                "burst_ratio": _target(burst_figures["ratio"], TARGETS["burst_ratio"]),
            },
        }
    finally:
        if server is not None:
            server.stop()
        api.close()


def breakdown(database_url: str, filed: dict[str, float], sent: dict[str, float]) -> dict[str, Any]:
    """Where the time goes, p50/p99 in ms from the filing: the playbook's evaluation job starting and ending, the
    delivery job starting, the Telegram send job queued, and from that queueing to the stand-in's receipt."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    marks: dict[str, list[float]] = {"evaluate_started": [], "evaluate_done": [], "deliver_started": [],
                                     "telegram_queued": [], "queued_to_received": []}  # fmt: skip
    with engine.connect() as conn:
        refs = dict(conn.execute(text("SELECT ref, id FROM incidents")).all())
        rows = conn.execute(text("SELECT incident_id, kind, created_at, started_at, finished_at FROM jobs WHERE "
                                 "kind IN ('playbooks.evaluate', 'page.deliver', 'telegram.send')")).all()  # fmt: skip
    engine.dispose()

    def ts(value: Any) -> float:
        from datetime import UTC, datetime

        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

    for ref, at in filed.items():
        mine = [r for r in rows if r[0] == refs.get(ref)]
        first = {kind: min((r for r in mine if r[1] == kind), key=lambda r: ts(r[2]), default=None)
                 for kind in ("playbooks.evaluate", "page.deliver", "telegram.send")}  # fmt: skip
        ev, de, tq = first["playbooks.evaluate"], first["page.deliver"], first["telegram.send"]
        if ev is not None and ev[3] is not None and ev[4] is not None:  # evaluated by a job, or in the filing
            marks["evaluate_started"].append((ts(ev[3]) - at) * 1000)
            marks["evaluate_done"].append((ts(ev[4]) - at) * 1000)
        if de is None or tq is None or de[3] is None:
            continue
        marks["deliver_started"].append((ts(de[3]) - at) * 1000)
        marks["telegram_queued"].append((ts(tq[2]) - at) * 1000)
        if ref in sent:
            marks["queued_to_received"].append((sent[ref] - ts(tq[2])) * 1000)
    return {k: {"p50_ms": percentile(sorted(v), 50), "p99_ms": percentile(sorted(v), 99)} for k, v in marks.items()
            if v}  # fmt: skip


def _target(value: float, goal: float) -> dict[str, Any]:
    return {"value": value, "target": goal, "pass": value == value and value <= goal}


def _show(name: str, f: dict[str, Any]) -> None:
    first, bare, burst = f["first_send"], f["bare_send"], f["burst"]
    print(f"[{name}] incident filed -> first sendMessage ({first['samples']} incidents at {RATE:g}/s, "
          f"{IN_TURN} contacts in turn): p50 {first['p50_ms']:.1f} ms, p99 {first['p99_ms']:.1f} ms, "
          f"max {first['max_ms']:.1f} ms")  # fmt: skip
    print(f"[{name}] bare Bot.send_message loop: p50 {bare['p50_ms']:.1f} ms, p99 {bare['p99_ms']:.1f} ms; "
          f"first-send p99 / bare p99 = {f['ratio_p99']:.1f}")  # fmt: skip
    print(f"[{name}] {burst['contacts']} contacts at once: first to last sendMessage {burst['span_s']:.2f} s against "
          f"the least {burst['least_span_s']} s Telegram's limits allow (ratio {burst['ratio']:.3f}); filed to "
          f"first {burst['filed_to_first_ms']:.0f} ms, to last {burst['filed_to_last_s']:.2f} s")  # fmt: skip
    if burst.get("window_excess_ms"):
        print(f"[{name}] burst: the first 30 arrived over {burst['first_30_spread_ms']:.0f} ms; each window of 31 "
              f"took 1 s + {burst['window_excess_ms']['p50']:.0f} ms (p50), + {burst['window_excess_ms']['max']:.0f} "
              f"ms (max)")  # fmt: skip
    stages = ", ".join(f"{k} {v['p50_ms']:.0f}/{v['p99_ms']:.0f}" for k, v in f["stages"].items())
    print(f"[{name}] stages p50/p99 ms (from the filing; the last from the send's queueing): {stages}")
    for key, t in f["targets"].items():
        print(f"[{name}] target {key}: {t['value']:.3f} <= {t['target']} {'pass' if t['pass'] else 'MISS'}")
    for error in f["errors"]:
        print(f"[{name}] ERROR {error}")


def main() -> int:
    print(f"UCSC Telegram benchmark, scale {SCALE}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    report: dict[str, Any] = {"scale": SCALE, "backends": {}, "errors": []}
    for name in BACKENDS:
        workdir = Path(tempfile.mkdtemp(prefix=f"ucsc-bench-telegram-{name}-"))
        url, drop = database(name, workdir, "telegram", "bench.db")
        try:
            figures = run_backend(name, url, workdir)
        except Exception as exc:  # the run's failure is reported as an error, with the logs kept
            report["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"[{name}] ERROR {exc} (logs in {workdir})")
            drop()
            continue
        drop()
        report["backends"][name] = figures
        report["errors"] += [f"{name}: {e}" for e in figures["errors"]]
        _show(name, figures)
        if not figures["errors"] and not os.environ.get("UCSC_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    report["passed"] = bool(report["backends"]) and all(
        t["pass"] for b in report["backends"].values() for t in b["targets"].values()
    )
    OUTPUT.write_text(json.dumps(report, indent=2, default=float))
    print(f"targets: {'all met' if report['passed'] else 'missed'}; figures in {OUTPUT}")
    if report["errors"]:
        return 2
    return 0 if report["passed"] or SCALE < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
