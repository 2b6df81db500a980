"""Paging benchmark: from the POST of an incident to its page at a real SMTP sink and a real webhook receiver.

What it measures (see docs/benchmarks.md): incidents filed at 5/s for 40 s under gunicorn (one gevent worker,
SQLite, the embedded default) with the worker process running; a bench-only playbook (uploaded through the
API like any admin's) pages, for incident n, e-mail contact n mod 20 and webhook contact n mod 20 in turn
(round-robin groups). Latency runs from the POST returning to the message's arrival at the aiosmtpd sink and
at the HTTP receiver, both in this process (one clock). The baseline, in the same run: the same deliveries at
the same rate sent directly with smtplib and httpx, timed from the start of the send to the arrival.
Storm control is raised out of the way (each contact gets 10 pages in 40 s; the limit is 6 per 10 min).

`UCSC_BENCH_SCALE` scales the duration (CI runs 0.1: 4 s); targets are enforced only at full scale.
Figures go to stdout and to bench/results-paging.json (`UCSC_BENCH_OUTPUT` overrides the path).
"""

import json
import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from _common import SCALE, finish, free_port, percentile, wait_http
from _common import env as _env
from _common import flask as _flask
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = Path(os.environ.get("UCSC_BENCH_OUTPUT", ROOT / "bench" / "results-paging.json"))
RATE = 5.0
SECONDS = 40.0
CONTACTS = 20
TARGET_P99_MS = 500.0
# `UCSC_BENCH_BACKEND=postgresql` runs the same on the machine's PostgreSQL (a database of its own, dropped after).
BACKEND = os.environ.get("UCSC_BENCH_BACKEND", "sqlite")
PG_ADMIN = os.environ.get("UCSC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
PG_NAME = f"ucsc_bench_paging_{os.getpid()}"
PLAYBOOK = """name: bench-round-robin
title_vi: Bench — gọi lần lượt 20 đầu mối
title_en: Bench — page 20 contacts in turn
when:
  category: other
steps:
  - page: {group: bench-mail, pick: round_robin, reason_vi: Đo thời gian gọi trực.}
  - page: {group: bench-hook, pick: round_robin, reason_vi: Đo thời gian gọi trực.}
"""


def _create_pg_database() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PG_NAME}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{PG_NAME}"


def _drop_pg_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')


class Arrivals:
    """When each reference (or baseline key) reached a receiver, by clock of this process."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def note(self, key: str) -> None:
        now = time.perf_counter()
        with self.lock:
            self.at.setdefault(key, now)


class _Sink:
    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        subject = str(message["Subject"])
        key = next((w.strip("[]") for w in subject.split() if w.startswith("[TH-") or w.startswith("[B-")), subject)
        self.arrivals.note(key)
        return "250 OK"


def _receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            arrivals.note(body.get("incident", {}).get("ref") or body.get("key", "?"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _figures(latencies: list[float], expected: int) -> dict[str, Any]:
    done = sorted(latencies)
    return {
        "samples": len(done),
        "missing": expected - len(done),
        "p50_ms": percentile(done, 50) * 1000,
        "p99_ms": percentile(done, 99) * 1000,
        "max_ms": (done[-1] if done else float("nan")) * 1000,
    }


def main() -> int:
    t0 = time.perf_counter()
    count = max(10, round(RATE * SECONDS * SCALE))
    workdir = Path(tempfile.mkdtemp(prefix="ucsc-bench-paging-"))
    errors: list[str] = []
    mail_at, hook_at = Arrivals(), Arrivals()
    smtp_port = free_port()
    smtp = Controller(_Sink(mail_at), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    receiver = _receiver(hook_at)
    hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database = f"sqlite:///{workdir / 'ucsc.db'}"
    if BACKEND == "postgresql":
        database = _create_pg_database()
    environment = _env(
        database,
        UCSC_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        UCSC_MAIL_FROM="ucsc@bench.example.vn",
        UCSC_BASE_URL=base,
        UCSC_PAGING_RATE_LIMIT="100000",
        UCSC_LOG_LEVEL="WARNING",
    )
    processes: list[subprocess.Popen] = []
    report: dict[str, Any] = {}
    try:
        _flask(environment, "init-db", "--no-demo")
        admin = _flask(environment, "create-token", "bench-admin", "--role", "admin").strip().splitlines()[-1]
        operator = _flask(environment, "create-token", "bench-soc", "--role", "operator").strip().splitlines()[-1]
        log = (workdir / "processes.log").open("ab")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_http(base + "/healthz")
        client = httpx.Client(base_url=base, timeout=30)
        auth = {"Authorization": f"Bearer {admin}"}
        mail_ids, hook_ids = [], []
        for n in range(CONTACTS):
            r = client.post(
                "/api/v1/contacts",
                headers=auth,
                json={
                    "organisation": "dost",
                    "name": f"Bench mail {n}",
                    "email": f"m{n}@bench.example.vn",
                    "channels": ["email"],
                },
            )
            assert r.status_code == 201, r.text
            mail_ids.append(r.json()["id"])
            r = client.post(
                "/api/v1/contacts",
                headers=auth,
                json={
                    "organisation": "dost",
                    "name": f"Bench hook {n}",
                    "webhook_url": hook_url,
                    "channels": ["webhook"],
                },
            )
            hook_ids.append(r.json()["id"])
        for code, ids in (("bench-mail", mail_ids), ("bench-hook", hook_ids)):
            r = client.post("/api/v1/groups", headers=auth, json={"code": code, "name_vi": code, "members": ids})
            assert r.status_code == 201, r.text
        assert client.patch("/api/v1/playbooks/other", headers=auth, json={"enabled": False}).status_code == 200
        r = client.post(
            "/api/v1/playbooks", headers={**auth, "Content-Type": "application/yaml"}, content=PLAYBOOK.encode()
        )
        assert r.status_code == 201, r.text

        posted: dict[str, float] = {}
        soc = {"Authorization": f"Bearer {operator}"}
        start = time.perf_counter() + 0.5
        for k in range(count):
            delay = start + k / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body = {
                "title": f"Bench paging {k}",
                "category": "other",
                "priority": "P3",
                "tlp": "green",
                # Detected now: a long-past time would make the reporting deadlines' timers fall due at once.
                "detected_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                "reporter": {"name": "bench"},
            }
            r = client.post("/api/v1/incidents", headers=soc, json=body)
            if r.status_code != 201:
                errors.append(f"POST {r.status_code}: {r.text[:200]}")
                continue
            posted[r.json()["ref"]] = time.perf_counter()
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and (len(mail_at.at) < len(posted) or len(hook_at.at) < len(posted)):
            time.sleep(0.05)
        api_mail = [mail_at.at[ref] - t for ref, t in posted.items() if ref in mail_at.at]
        api_hook = [hook_at.at[ref] - t for ref, t in posted.items() if ref in hook_at.at]

        # The baseline: the same deliveries at the same rate, straight from this process.
        direct_mail, direct_hook = [], []
        http = httpx.Client(timeout=10)
        start = time.perf_counter() + 0.2
        for k in range(count):
            delay = start + k / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key = f"B-{k}"
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = (
                "ucsc@bench.example.vn",
                f"m{k % CONTACTS}@bench.example.vn",
                f"[{key}] x",
            )
            message.set_content("Đo thời gian gọi trực.")
            sent = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as s:
                s.send_message(message)
            direct_mail.append(mail_at.at.get(key, time.perf_counter()) - sent)
            sent = time.perf_counter()
            http.post(hook_url, json={"key": key})
            direct_hook.append(hook_at.at.get(key, time.perf_counter()) - sent)
        figures = {
            "email": {"api": _figures(api_mail, len(posted)), "baseline": _figures(direct_mail, count)},
            "webhook": {"api": _figures(api_hook, len(posted)), "baseline": _figures(direct_hook, count)},
        }
        for channel in figures.values():
            channel["ratio_p99"] = channel["api"]["p99_ms"] / max(channel["baseline"]["p99_ms"], 1e-6)
            if channel["api"]["missing"]:
                errors.append(f"{channel['api']['missing']} deliveries never arrived")
        targets = {
            f"{name}_p99_ms": {
                "value": f["api"]["p99_ms"],
                "target": TARGET_P99_MS,
                "pass": f["api"]["p99_ms"] <= TARGET_P99_MS,
            }
            for name, f in figures.items()
        }
        report = {
            "scale": SCALE,
            "finished_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "setup": {
                "database": BACKEND,
                "rate_per_s": RATE,
                "incidents": count,
                "contacts": CONTACTS,
                "server": "gunicorn (1 gevent worker) + flask worker",
            },
            "machine": {"cpus": os.cpu_count(), "load_average_after": [round(x, 2) for x in os.getloadavg()]},
            **figures,
            "targets": targets,
            "passed": all(t["pass"] for t in targets.values()),
            "errors": errors,
        }
    except Exception as exc:  # the report says what broke; the exit status too
        errors.append(f"{type(exc).__name__}: {exc}")
        report = {"scale": SCALE, "errors": errors, "passed": False}
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        smtp.stop()
        receiver.shutdown()
        receiver.server_close()
    if BACKEND == "postgresql":
        _drop_pg_database()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2, default=float) + "\n")
    for name in ("email", "webhook"):
        if name in report:
            f = report[name]
            print(
                f"  {name:8} POST→arrival p50 {f['api']['p50_ms']:7.1f} ms  p99 {f['api']['p99_ms']:7.1f} ms"
                f"  | direct p50 {f['baseline']['p50_ms']:6.1f} ms  p99 {f['baseline']['p99_ms']:6.1f} ms"
                f"  | p99 ratio to baseline {f['ratio_p99']:.1f}"
            )
    if "targets" in report:
        print("targets:")
        for name, t in report["targets"].items():
            print(f"  {'pass' if t['pass'] else 'MISS'}  {name} = {t['value']:.1f} (target {t['target']})")
    for e in errors:
        print("ERROR:", e)
    print(f"{report['seconds']} s; figures written to {OUTPUT}")
    return finish(workdir, errors, report["passed"])


if __name__ == "__main__":
    sys.exit(main())
