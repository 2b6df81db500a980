"""Live-feed benchmark: 500 Socket.IO clients on one gevent worker, the change feed against a bare emit.

What it measures, on SQLite and on PostgreSQL in turn (docs/benchmarks.md has the figures):
- the time from an incident POST returning 201 to each connected client receiving `incident.created`
  (p50/p99/max over every client and incident), beside a bare `socketio.emit` to the same clients in the
  same run (POST /_bench/emit, served only with UCSC_BENCH_ROUTES=1): rounds alternate the two, and each
  waits until every client has the frame before the next starts. Target: feed p99 <= 2 x bare p99 + 50 ms;
- the peak resident memory of the gunicorn worker holding the 500 connections (VmHWM). Target <= 200 MB;
- the job lag, from the filing's commit to the worker starting its job: each incident filed by a token that
  names a webhook queues a `receipt.webhook` job (the bench answers the webhook itself); lag is the job row's
  started_at - run_at. Target: p99 <= 250 ms.

Clients run in 4 separate processes of 125 gevent-patched websocket clients each (see bench/_live_clients.py), so
the client side does not queue on one interpreter; every process stamps arrivals with time.time(), the clock
the POSTs' return times come from. `UCSC_BENCH_SCALE` (default 1.0) scales clients and rounds; CI runs 0.1
only to prove the benchmark still runs, and targets are enforced (exit status 1 when missed) only at full
scale. Frames that never arrive, failed connects or failed requests are errors at any scale (exit status 2).
Figures go to stdout and to bench/results-live.json (`UCSC_BENCH_OUTPUT` overrides the path);
`UCSC_BENCH_BACKENDS=sqlite` runs one backend; the PostgreSQL is the tests' (`UCSC_TEST_PG_ADMIN`).
"""

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import SCALE, database, finish, machine, percentile, project_imports, rounded, scaled, target
from _common import cpu_seconds as _cpu_seconds
from _common import env as _env
from _common import flask as _flask
from _common import worker_pid as _worker_pid
from _live_clients import Clients

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = Path(os.environ.get("UCSC_BENCH_OUTPUT", ROOT / "bench" / "results-live.json"))
BACKENDS = [b.strip() for b in os.environ.get("UCSC_BENCH_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
CLIENTS = 500
ROUNDS = 100  # each round is one bare emit and one incident
WARMUP_ROUNDS = 3  # not counted: the first filing imports and caches what the others reuse
CLIENT_PROCESSES = 4
ROUND_TIMEOUT = 10.0  # a frame not at every client by then is counted missing
PAUSE = 0.1  # between deliveries, so one round's tail does not overlap the next
JOB_KIND = "receipt.webhook"
FEED_SLACK_MS = 50.0
TARGETS = {"peak_rss_mb": 200.0, "job_lag_p99_ms": 250.0}
DETECTED_AT = "2026-01-15T08:30:00+07:00"  # a fixed, past detection time (the API refuses future ones)


def summary(values_ms: list[float], **extra: Any) -> dict[str, Any]:
    done = sorted(values_ms)
    return {
        "p50_ms": percentile(done, 50),
        "p99_ms": percentile(done, 99),
        "max_ms": done[-1] if done else float("nan"),
        "samples": len(done),
        **extra,
    }


def incident_payload(n: int) -> dict[str, Any]:
    """A small SIEM filing; unique observables so no two filings are taken for the same incident."""
    host = f"live-{os.getpid()}-{n}.example.net"
    return {
        "title": f"Dò quét cổng dịch vụ công từ {host}, lần {n}",
        "description": "Luật SIEM 1024 phát hiện quét cổng liên tục vào cổng dịch vụ công của tỉnh.",
        "category": "other",
        "priority": "P4",
        "tlp": "amber",
        "detected_at": DETECTED_AT,
        "observables": [{"type": "domain-name", "value": host}],
    }


class WebhookReceiver:
    """A local HTTP server answering every POST 200: the SIEM at the other end of the receipts' webhook."""

    def __init__(self) -> None:
        receiver = self
        self.received = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/receipts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RssSampler:
    """Samples a process's VmRSS every 100 ms; the peak is the larger of the samples and VmHWM at the end."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self.hwm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _status(self) -> dict[str, int]:
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])  # kB
        return fields

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = self._status()
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples.append(status["VmRSS"])
            self.hwm = max(self.hwm, status["VmHWM"])
            self._stop.wait(0.1)

    def now_mb(self) -> float:
        return self._status()["VmRSS"] / 1024

    def stop(self) -> float:
        """Stop sampling; the peak in MB (MiB)."""
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            self.hwm = max(self.hwm, self._status()["VmHWM"])
        self._stop.set()
        self._thread.join()
        return max([self.hwm, *self.samples]) / 1024


def _post(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict, float, float]:
    """POST JSON on a fresh connection; the status, the JSON answer, and time.time() at sending and once answered."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.connect()
        sent = time.time()
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        raw = response.read()
        returned = time.time()
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"raw": raw[:200].decode(errors="replace")}
    return response.status, answer, sent, returned


def run_backend(name: str, database_url: str, workdir: Path, receiver: WebhookReceiver) -> dict[str, Any]:
    """Serve `database_url` with gunicorn and a worker, connect the clients, run the rounds; the figures."""
    from sqlalchemy import update

    from app.db import make_engine
    from incidents.models import ApiToken
    from tests.live import LiveServer, WorkerProcess

    started = time.perf_counter()
    n_clients, rounds = scaled(CLIENTS, 10), scaled(ROUNDS, 5)
    env = _env(database_url)
    _flask(env, "init-db")
    token = _flask(env, "create-token", "bench-live", "--role", "operator").strip().splitlines()[-1]
    errors: list[str] = []
    extra = {"UCSC_SECRET_KEY": "bench", "PYTHONDONTWRITEBYTECODE": "1"}
    server = LiveServer(database_url, workdir / f"gunicorn-{name}.log", env={**extra, "UCSC_BENCH_ROUTES": "1"})
    # The worker with the shipped settings (tests.live beats every 0.5 s; production every 5 s).
    worker = WorkerProcess(
        database_url, workdir / f"worker-{name}.log", env={**extra, "UCSC_WORKER_HEARTBEAT_SECONDS": "5"}
    )
    t0: dict[str, float] = {}
    incident_ids: list[int] = []
    timeouts = {"bare": 0, "feed": 0}
    request_ms: dict[str, list[float]] = {"bare": [], "feed": []}
    # Every process started here is stopped on the way out, whatever fails (each stop runs even if one fails).
    with contextlib.ExitStack() as cleanup:
        engine = make_engine(database_url)
        cleanup.callback(engine.dispose)
        with engine.begin() as conn:  # before the server starts, so no token cache holds the old row
            conn.execute(
                update(ApiToken)
                .where(ApiToken.name == "bench-live")
                .values(webhook_url=receiver.url, webhook_secret="bench")  # noqa: S106 - a bench-only secret
            )
        cleanup.callback(server.stop)
        server.start()
        web_pid = _worker_pid(server.process.pid)
        sampler = RssSampler(web_pid)
        cleanup.callback(sampler.stop)
        cleanup.callback(worker.stop)
        worker.start()
        rss_idle = sampler.now_mb()
        connect_started = time.perf_counter()
        clients = Clients(server.url, token, n_clients, min(CLIENT_PROCESSES, n_clients))
        cleanup.callback(clients.close)
        ready = clients.wait_ready(timeout=60 + n_clients / 5)
        connect_seconds = time.perf_counter() - connect_started
        if ready["connected"] == 0:
            raise RuntimeError(f"no client could connect: {ready['failures']}")
        if ready["connected"] != n_clients:
            errors.append(
                f"{n_clients - ready['connected']} of {n_clients} clients failed to connect: {ready['failures']}"
            )
        time.sleep(1.0)  # let the connects' tail (pings, room joins) settle
        rss_connected = sampler.now_mb()
        cpu0 = {"web": _cpu_seconds(web_pid), "worker": _cpu_seconds(worker.pid)}
        auth = {"Authorization": f"Bearer {token}"}
        steps = (
            ("bare", "/_bench/emit", lambda r: {"seq": r}, {}, 200, lambda r, _answer: f"bare:{r}"),
            ("feed", "/api/v1/incidents", incident_payload, auth, 201, lambda _r, answer: str(answer["ref"])),
        )
        measured: dict[str, list[str]] = {"bare": [], "feed": []}
        run_started = time.perf_counter()
        for r in range(WARMUP_ROUNDS + rounds):
            for kind, path, body, headers, expected, key_of in steps:
                status, answer, sent, returned = _post(server.port, path, body(r), headers)
                if status != expected:
                    raise RuntimeError(f"POST {path} answered {status}: {answer}")
                key = key_of(r, answer)
                t0[key] = returned
                if not clients.wait_for(key, ROUND_TIMEOUT):
                    timeouts[kind] += 1
                if r >= WARMUP_ROUNDS:
                    measured[kind].append(key)
                    request_ms[kind].append((returned - sent) * 1000)
                    if kind == "feed":
                        incident_ids.append(int(answer["id"]))
                time.sleep(PAUSE)
        run_seconds = time.perf_counter() - run_started
        cpu = {"web": _cpu_seconds(web_pid) - cpu0["web"], "worker": _cpu_seconds(worker.pid) - cpu0["worker"]}
        results = clients.collect()
        jobs = _wait_for_jobs(engine, incident_ids)
        rss_end = sampler.now_mb()
        peak_rss = sampler.stop()

    figures: dict[str, Any] = {"clients": n_clients, "client_processes": len(clients.sizes), "rounds": rounds}
    for kind in ("bare", "feed"):
        latencies, firsts, missing = [], [], 0
        for key in measured[kind]:
            got, lost = _latencies(results, key, t0[key])
            latencies += got
            firsts += [min(got)] if got else []
            missing += lost
        figures[kind] = summary(
            latencies,
            missing=missing,
            round_timeouts=timeouts[kind],
            # Where the time goes: the first client's latency (the server's path to its first frame), and
            # how long the POST itself took (the bare emit queues every frame before it answers).
            first_client_p50_ms=percentile(sorted(firsts), 50),
            request_p50_ms=percentile(sorted(request_ms[kind]), 50),
        )
    figures["ratio_p99"] = figures["feed"]["p99_ms"] / figures["bare"]["p99_ms"]
    figures["peak_rss_mb"] = peak_rss
    figures["rss_mb"] = {"idle": rss_idle, "connected": rss_connected, "end": rss_end}
    lags = [(started_at - run_at).total_seconds() * 1000 for _, state, run_at, started_at, _ in jobs if started_at]
    figures["job_lag"] = summary(lags, jobs=len(jobs))
    del figures["job_lag"]["samples"]
    figures["webhooks_received"] = receiver.received
    figures["connect_seconds"] = connect_seconds
    figures["rounds_seconds"] = run_seconds
    figures["cpu_seconds"] = {**cpu, "clients": sum(r["cpu"] for r in results)}
    figures["duplicates"] = sum(r["duplicates"] for r in results)
    figures["disconnects"] = sum(r["disconnects"] for r in results)

    bound = 2 * figures["bare"]["p99_ms"] + FEED_SLACK_MS
    figures["targets"] = {
        "feed_p99_ms": target(figures["feed"]["p99_ms"], bound),
        "peak_rss_mb": target(peak_rss, TARGETS["peak_rss_mb"]),
        "job_lag_p99_ms": target(figures["job_lag"]["p99_ms"], TARGETS["job_lag_p99_ms"]),
    }
    for kind in ("bare", "feed"):
        if figures[kind]["missing"]:
            errors.append(f"{name}: {figures[kind]['missing']} {kind} frame(s) never reached their client")
    if figures["disconnects"]:
        errors.append(f"{name}: {figures['disconnects']} client(s) were disconnected during the run")
    if len(jobs) != len(incident_ids):
        errors.append(f"{name}: {len(incident_ids)} incidents filed but {len(jobs)} {JOB_KIND} jobs found")
    not_done = [(state, attempts) for _, state, _, _, attempts in jobs if state != "done" or attempts != 1]
    if not_done:
        errors.append(f"{name}: {len(not_done)} {JOB_KIND} job(s) not done at the first attempt: {not_done[:5]}")
    figures["errors"] = errors
    figures["seconds"] = time.perf_counter() - started
    return figures


def _latencies(results: list[dict[str, Any]], key: str, t0: float) -> tuple[list[float], int]:
    """Every client's arrival of `key` minus `t0`, in ms, and how many clients never got it."""
    latencies, missing = [], 0
    for result in results:
        row = result["arrivals"].get(key)
        if row is None:
            missing += result["connected"]
            continue
        for arrival in row:
            if arrival is None:
                missing += 1
            else:
                latencies.append((arrival - t0) * 1000)
    return latencies, missing


def _wait_for_jobs(engine: Any, incident_ids: list[int], timeout: float = 20.0) -> list[tuple]:
    """The receipt jobs of the measured incidents, once all have finished (or `timeout` passed)."""
    from sqlalchemy import select

    from incidents.models import Job

    stmt = select(Job.incident_id, Job.state, Job.run_at, Job.started_at, Job.attempts).where(
        Job.kind == JOB_KIND, Job.incident_id.in_(incident_ids)
    )
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(stmt)]
        finished = all(state in ("done", "dead") for _, state, *_ in rows)
        if (finished and len(rows) >= len(incident_ids)) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _run_on(name: str, workdir: Path, receiver: WebhookReceiver) -> dict[str, Any]:
    """Make the backend's database, run the bench on it, and drop it (also after a failure)."""
    known = ("sqlite", "postgresql")
    if name not in known:
        raise ValueError(f"unknown backend {name!r} in UCSC_BENCH_BACKENDS (known: {', '.join(known)})")
    url, drop = database(name, workdir, "live", "live.db")
    try:
        received = receiver.received
        figures = run_backend(name, url, workdir, receiver)
    finally:
        drop()
    figures["webhooks_received"] -= received
    figures["database"] = url.rsplit("/", 1)[-1]
    return figures


def _show(name: str, f: dict[str, Any]) -> None:
    print(f"{name}: {f['clients']} clients in {f['client_processes']} processes, {f['rounds']} rounds")
    print(f"  {'':22}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'missing':>9}{'1st client':>12}{'POST':>8}")
    for label, key in (("bare socketio.emit", "bare"), ("feed incident.created", "feed")):
        s = f[key]
        print(
            f"  {label:22}{s['p50_ms']:10.1f}{s['p99_ms']:10.1f}{s['max_ms']:10.1f}{s['missing']:9d}"
            f"{s['first_client_p50_ms']:12.1f}{s['request_p50_ms']:8.1f}"
        )
    lag = f["job_lag"]
    label = f"job lag ({lag['jobs']} jobs)"
    print(f"  {label:22}{lag['p50_ms']:10.1f}{lag['p99_ms']:10.1f}{lag['max_ms']:10.1f}")
    rss = f["rss_mb"]
    print(f"  feed p99 / bare p99: {f['ratio_p99']:.2f}x")
    print(
        f"  web worker RSS: peak {f['peak_rss_mb']:.1f} MB (idle {rss['idle']:.1f}, "
        f"{f['clients']} connected {rss['connected']:.1f}, end {rss['end']:.1f})"
    )
    cpu = f["cpu_seconds"]
    print(
        f"  connect {f['connect_seconds']:.1f} s, rounds {f['rounds_seconds']:.1f} s; CPU during rounds: "
        f"web {cpu['web']:.1f} s, worker {cpu['worker']:.1f} s, clients {cpu['clients']:.1f} s; "
        f"{f['webhooks_received']} webhooks received"
    )
    for tname, t in f["targets"].items():
        print(f"  {'pass' if t['pass'] else 'MISS'}  {tname} = {t['value']:.1f} (target {t['target']})")
    print(flush=True)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop processes and drop the database


def main() -> int:
    project_imports()
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="ucsc-bench-live-"))
    t0 = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(
        f"UCSC live-feed benchmark, scale {SCALE}, {os.cpu_count()} CPUs, load average {load_before[0]},"
        f" work files in {workdir}",
        flush=True,
    )
    receiver = WebhookReceiver()
    backends: dict[str, Any] = {}
    errors: list[str] = []
    try:
        for name in BACKENDS:
            try:
                figures = _run_on(name, workdir, receiver)
            except Exception as exc:  # the other backend still runs; the error fails the bench
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                print(f"{name}: ERROR {type(exc).__name__}: {exc}", flush=True)
                continue
            errors += figures.pop("errors")
            backends[name] = figures
            _show(name, figures)
    finally:
        receiver.close()

    report = {
        "scale": SCALE,
        "finished_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "machine": machine(load_before),
        "setup": {
            "server": "gunicorn, gunicorn.conf.py (1 gevent worker), UCSC_BENCH_ROUTES=1",
            "worker": "flask --app wsgi worker (shipped settings)",
            "clients": "Socket.IO 5 / Engine.IO 4 over websocket-client under gevent, one operator token",
            "client_processes": CLIENT_PROCESSES,
            "warmup_rounds": WARMUP_ROUNDS,
            "pause_s": PAUSE,
            "round_timeout_s": ROUND_TIMEOUT,
            "feed_target": f"feed p99 <= 2 x bare p99 + {FEED_SLACK_MS:g} ms",
        },
        "backends": backends,
        "passed": len(backends) == len(BACKENDS)
        and all(t["pass"] for b in backends.values() for t in b["targets"].values()),
        "errors": errors,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(rounded(report), indent=2) + "\n")
    for e in errors:
        print("ERROR:", e)
    print(f"{'passed' if report['passed'] else 'targets missed'}; {report['seconds']} s; figures written to {OUTPUT}")
    return finish(workdir, errors, report["passed"], " (SQLite database, gunicorn and worker logs)")


if __name__ == "__main__":
    sys.exit(main())
