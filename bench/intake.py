"""Intake benchmark: the REST API under gunicorn (one gevent worker, SQLite) against a plain-Core baseline.

What it measures (its targets and figures are in docs/benchmarks.md):
- saturation throughput with 16 concurrent keep-alive clients, for single POSTs (3 observables each) and
  for the bulk endpoint (500 incidents per request);
- p50/p99 latency at an open-loop offered rate of half that throughput: requests are scheduled at fixed
  times whatever the answers, and latency runs from the scheduled time (so a queue is not hidden);
- the baseline, in the same run and on the same disk: the same rows (incident, observables, participants,
  occurrence, event, the reference counter) written with SQLAlchemy Core `executemany` in a plain loop,
  no HTTP, same SQLite settings (WAL, BEGIN IMMEDIATE, `synchronous` as configured), one transaction per
  incident for the single-request comparison and one per 500 for the bulk comparison.

The load generator is a separate process (16 threads over http.client keep-alive connections) so it
does not share the server's interpreter; it reports the CPU it used. `UCSC_BENCH_SCALE` (default 1.0)
scales the request counts; CI runs 0.1 only to prove the benchmark still runs, and targets are enforced
(exit status 1 when missed) only at full scale. Figures go to stdout and to bench/results.json
(`UCSC_BENCH_OUTPUT` overrides the path).
"""

import concurrent.futures
import http.client
import itertools
import json
import math
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    PG_ADMIN_URL,
    SCALE,
    PostgresCPU,
    database,
    filesystem,
    finish,
    host_cpu,
    machine,
    percentile,
    rounded,
    scaled,
    worker_pids,
)
from _common import cpu_seconds as _cpu_seconds
from _common import env as _env
from _common import flask as _flask
from _common import worker_pid as _worker_pid
from _intake_rows import extra_rows_per_incident, rows_per_incident

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = Path(os.environ.get("UCSC_BENCH_OUTPUT", ROOT / "bench" / "results.json"))
CLIENTS = 16
BULK_SIZE = 500
OBSERVABLES = 3
# Full-size request counts, chosen so the whole run takes about two minutes on the 2-core machine.
SINGLE_SATURATION = 6000
SINGLE_OPEN_LOOP = 3000  # at half the saturation rate: about as long as the saturation run
SINGLE_BASELINE = 6000  # half before the HTTP runs and half after, so drift in fsync times hits both alike
BULK_SATURATION = 80  # 40,000 incidents
BULK_OPEN_LOOP = 40
BULK_BASELINE = 60  # 30,000 incidents, also in two halves
OPEN_LOOP_CONNECTIONS = {"single": 64, "bulk": 16}
TARGETS = {
    "single_incidents_per_s": 150.0,
    "single_ratio_to_baseline": 0.4,
    "single_p99_ms_at_half_rate": 150.0,
    "bulk_ratio_to_baseline": 0.5,
    # PostgreSQL, gunicorn.conf.py as shipped (one gevent worker), then the same with a second worker.
    "postgresql_single_incidents_per_s": 150.0,
    "postgresql_second_worker_gain": 1.05,
}
BACKENDS = [b for b in os.environ.get("UCSC_BENCH_BACKENDS", "sqlite,postgresql").split(",") if b]
PG_SATURATION = 4000  # per worker count; PostgreSQL shares the 2 cores with gunicorn, so fewer than SQLite's
PG_BASELINE = 3000  # Core baseline on PostgreSQL, half before and half after
# A fixed, past detection time: bodies must not depend on the clock (the API refuses future times).
DETECTED_AT = "2026-01-15T08:30:00+07:00"


def incident_payload(n: int, tag: str) -> dict[str, Any]:
    """A SIEM filing in Vietnamese: title, description, category, priority, TLP, detection time, 3 observables."""
    host = f"login-{tag}-{n}.example.net"
    return {
        "title": f"Lừa đảo giả mạo trang đăng nhập Cổng dịch vụ công tỉnh Thanh Hoá, đợt {tag}-{n}",
        "description": (
            "Luật SIEM 4711 phát hiện trang thu thập mật khẩu giả giao diện đăng nhập của Cổng; "
            f"nhiều hộp thư cán bộ nhận được đường dẫn tới {host} trong vòng mười phút."
        ),
        "category": "phishing",
        "priority": "P3",
        "tlp": "amber",
        "detected_at": DETECTED_AT,
        "observables": [
            {"type": "ipv4-addr", "value": f"198.51.{(n >> 8) & 255}.{n & 255}"},
            {"type": "domain-name", "value": host},
            {"type": "url", "value": f"https://{host}/verify?session={n}"},
        ],
    }


# ---------------------------------------------------------------------------------------------- the client


class Connection:
    """One keep-alive connection; it reconnects when idle long enough for gunicorn's keepalive to close it."""

    IDLE = 1.5  # gunicorn closes idle keep-alive connections after 2 s by default

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn: http.client.HTTPConnection | None = None
        self.last = 0.0
        self.reconnects = 0

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self.conn is None or time.perf_counter() - self.last > self.IDLE:
            if self.conn is not None:
                self.conn.close()
                self.reconnects += 1
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            self.conn.request("POST", path, body, headers)
            response = self.conn.getresponse()
            response.read()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        self.last = time.perf_counter()
        if response.will_close:
            self.conn.close()
            self.conn = None
        return response.status


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """In the client process: send `spec`'s requests closed-loop (saturation) or open-loop; return raw figures."""
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in _bodies(spec)]
    headers = {"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"}
    path, open_rate = spec["path"], spec.get("rate")
    n = len(bodies)
    latencies: list[float | None] = [None] * n
    statuses: dict[int, int] = {}
    failures: list[str] = []
    slots = itertools.count()
    lock = threading.Lock()
    connections = [Connection("127.0.0.1", spec["port"]) for _ in range(spec["connections"])]
    start = time.perf_counter() + 0.2  # every thread is waiting before the first slot

    def client(conn: Connection) -> None:
        while True:
            k = next(slots)
            if k >= n:
                return
            scheduled = start + k / open_rate if open_rate else time.perf_counter()
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if not open_rate:
                scheduled = time.perf_counter()
            try:
                status = conn.post(path, bodies[k], headers)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies[k] = time.perf_counter() - scheduled
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(c,)) for c in connections]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    time.sleep(max(0.0, start - time.perf_counter()))
    cpu_start = time.process_time()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    done = sorted(x for x in latencies if x is not None)
    return {
        "requests": n,
        "ok": statuses.get(201, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "failures": failures[:5],
        "failure_count": len(failures),
        "reconnects": sum(c.reconnects for c in connections),
        "seconds": elapsed,
        "p50_ms": percentile(done, 50) * 1000,
        "p99_ms": percentile(done, 99) * 1000,
        "max_ms": (done[-1] if done else float("nan")) * 1000,
        "client_cpu_seconds": cpu,
        "client_cpu_setup_seconds": cpu_start - cpu0,
    }


def _bodies(spec: dict[str, Any]) -> list[dict[str, Any]]:
    first, tag = spec["first"], spec["tag"]
    if spec["bulk"]:
        return [
            {"incidents": [incident_payload(first + r * BULK_SIZE + i, tag) for i in range(BULK_SIZE)]}
            for r in range(spec["requests"])
        ]
    return [incident_payload(first + r, tag) for r in range(spec["requests"])]


# ---------------------------------------------------------------------------------------------- the server


# ---------------------------------------------------------------------------------------------- baseline


def run_baseline(database_url: str, *, incidents: int, per_transaction: int, tag: str) -> dict[str, Any]:
    """Write the rows a filing writes with Core executemany, `per_transaction` incidents per transaction."""
    from sqlalchemy import insert, select, update

    from app import config as defaults
    from app.db import make_engine
    from incidents.models import Event, Incident, Observable, Occurrence, Organisation, Participant, RefCounter, User
    from incidents.text import fold

    engine = make_engine(
        database_url,
        busy_timeout=float(os.environ.get("UCSC_SQLITE_BUSY_TIMEOUT", defaults.DEFAULTS["SQLITE_BUSY_TIMEOUT"])),
        synchronous=os.environ.get("UCSC_SQLITE_SYNCHRONOUS", str(defaults.DEFAULTS["SQLITE_SYNCHRONOUS"])),
    )
    t_inc, t_obs, t_par = Incident.__table__, Observable.__table__, Participant.__table__
    t_occ, t_evt, t_ref = Occurrence.__table__, Event.__table__, RefCounter.__table__
    with engine.connect() as conn:
        user = conn.execute(select(User.id, User.username, User.organisation_id).where(User.username == "bench")).one()
        standing = conn.scalar(select(Organisation.id).where(Organisation.code == "dic"))
        conn.rollback()
    # The filing's participants: the reporter, their organisation, and the standing body as lead.
    participants = {("user", user.id): "reporter", ("org", user.organisation_id): "reporter", ("org", standing): "lead"}
    detected = datetime.fromisoformat(DETECTED_AT).astimezone(UTC)
    prefix, year = tag.upper(), datetime.now(UTC).year  # a counter row of the baseline's own
    with engine.begin() as conn:
        conn.execute(insert(t_ref).values(prefix=prefix, year=year, value=0))

    conn = engine.connect().execution_options(ucsc_write=True)  # BEGIN IMMEDIATE, like the service
    started = time.perf_counter()
    for first in range(0, incidents, per_transaction):
        batch = [incident_payload(n, tag) for n in range(first, min(incidents, first + per_transaction))]
        now = datetime.now(UTC)
        with conn.begin():
            last = conn.execute(
                update(t_ref).where(t_ref.c.prefix == prefix, t_ref.c.year == year)
                .values(value=t_ref.c.value + len(batch)).returning(t_ref.c.value)
            ).scalar_one()  # fmt: skip
            refs = [f"{prefix}-{year}-{n:05d}" for n in range(last - len(batch) + 1, last + 1)]
            rows = [_baseline_incident(r, p, user.id, detected, now, fold) for r, p in zip(refs, batch, strict=True)]
            ids = conn.execute(insert(t_inc).returning(t_inc.c.id, sort_by_parameter_order=True), rows).scalars().all()
            observables, people, occurrences, events = [], [], [], []
            for incident_id, p, row in zip(ids, batch, rows, strict=True):
                observables += [
                    {"incident_id": incident_id, "type": o["type"], "value": o["value"], "hashes": None,
                     "created_at": now}
                    for o in p["observables"]
                ]  # fmt: skip
                people += [
                    {"incident_id": incident_id, "user_id": i if k == "user" else None,
                     "organisation_id": i if k == "org" else None, "role": r, "added_by_id": user.id, "added_at": now}
                    for (k, i), r in participants.items()
                ]  # fmt: skip
                occurrences.append(
                    {"incident_id": incident_id, "received_at": now, "detected_at": detected,
                     "created_by_id": user.id, "payload": p}
                )  # fmt: skip
                events.append({
                    "incident_id": incident_id, "kind": "incident.created", "actor_id": user.id,
                    "actor": user.username, "at": now, "note": None, "tlp": p["tlp"],
                    "data": {"ref": row["ref"], "status": "new", "title": p["title"], "category": p["category"],
                             "priority": p["priority"], "class": "ordinary", "tlp": p["tlp"], "exercise": False,
                             "affected_system": None, "affected_system_matched": False},
                })  # fmt: skip
            conn.execute(insert(t_obs), observables)
            conn.execute(insert(t_par), people)
            conn.execute(insert(t_occ), occurrences)
            conn.execute(insert(t_evt), events)
    elapsed = time.perf_counter() - started
    conn.close()
    engine.dispose()
    return {
        "incidents": incidents,
        "per_transaction": per_transaction,
        "transactions": math.ceil(incidents / per_transaction),
        "seconds": elapsed,
        "incidents_per_s": incidents / elapsed,
    }


def _baseline_incident(ref: str, p: dict[str, Any], user_id: int, detected: datetime, now: datetime, fold: Any) -> dict:
    """The incidents row a filing of `p` writes, keyed by column name."""
    words = [ref, p["title"], p["description"], *(o["value"] for o in p["observables"])]
    return {
        "ref": ref, "title": p["title"], "description": p["description"], "category": p["category"],
        "priority": p["priority"], "status": "new", "class": "ordinary", "tlp": p["tlp"], "exercise": False,
        "detected_at": detected, "affected_system_id": None, "beyond_capacity": False, "notified_parties": [],
        "serious_conditions": [], "dedup_key": None, "open_dedup_key": None, "search_text": fold(" ".join(words)),
        "created_by_id": user_id, "created_at": now, "updated_at": now, "status_changed_at": now,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- the run


def run_postgresql(workdir: Path) -> dict[str, Any]:
    """Single filings on PostgreSQL: with gunicorn.conf.py as shipped (one gevent worker), then with a second
    worker (GUNICORN_CMD_ARGS), against the same Core baseline on a database of its own, in this run."""
    from tests.live import LiveServer

    server_url, drop_server = database("postgresql", workdir, "intake", "")
    baseline_url, drop_baseline = database("postgresql", workdir, "intake_baseline", "")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        for url in (server_url, baseline_url):
            _flask(_env(url), "init-db")
            token = _flask(_env(url), "create-token", "bench", "--role", "intake").strip().splitlines()[-1]
        token = _flask(_env(server_url), "create-token", "bench-pg", "--role", "intake").strip().splitlines()[-1]
        n_base = scaled(PG_BASELINE, 200) // 2
        halves = [run_baseline(baseline_url, incidents=n_base, per_transaction=1, tag="pg1")]
        counter = itertools.count(step=1_000_000)
        runs: dict[str, Any] = {}
        for workers in (1, 2):
            env = {"UCSC_SECRET_KEY": "bench", "GUNICORN_CMD_ARGS": f"--workers {workers}"}
            server = LiveServer(server_url, workdir / f"gunicorn-pg-{workers}.log", env=env)
            server.start()
            try:
                pids = worker_pids(server.process.pid, workers)

                def load(requests: int, pids: list[int] = pids, port: int = server.port) -> dict[str, Any]:
                    spec = {"port": port, "token": token, "bulk": False, "requests": requests, "rate": None,
                            "path": "/api/v1/incidents", "connections": CLIENTS, "first": next(counter),
                            "tag": "p"}  # fmt: skip
                    cpu0 = sum(_cpu_seconds(p) for p in pids)
                    backends = PostgresCPU(PG_ADMIN_URL, server_url.rsplit("/", 1)[1]).start()
                    host0 = host_cpu()
                    figures = pool.submit(run_load, spec).result()
                    host1 = host_cpu()
                    # How much of the machine the run kept busy: near 1, a second worker has no core to run on.
                    figures["host_cpu_busy"] = (host1[0] - host0[0]) / max(1, host1[1] - host0[1])
                    figures["server_cpu_seconds"] = sum(_cpu_seconds(p) for p in pids) - cpu0
                    figures["postgres_cpu_seconds"] = backends.stop()
                    figures["total_cpu_ms_per_filing"] = (
                        (figures["server_cpu_seconds"] + figures["postgres_cpu_seconds"]) / max(1, figures["ok"]) * 1000
                    )
                    figures["incidents_per_s"] = figures["ok"] / figures["seconds"]
                    figures["requests_per_s"] = figures["incidents_per_s"]
                    figures["client_cpu_cores"] = figures["client_cpu_seconds"] / figures["seconds"]
                    figures["server_cpu_cores"] = figures["server_cpu_seconds"] / figures["seconds"]
                    figures["web_cpu_ms_per_filing"] = figures["server_cpu_seconds"] / max(1, figures["ok"]) * 1000
                    return figures

                load(scaled(200, 50))  # warm-up: imports, caches, the pool's connections
                runs[f"workers_{workers}"] = saturation = load(scaled(PG_SATURATION, 200))
                _show("single", f"postgresql, {workers} gevent worker(s), {CLIENTS} clients", saturation)
            finally:
                server.stop()
        halves.append(run_baseline(baseline_url, incidents=n_base, per_transaction=1, tag="pg2"))
    finally:
        pool.shutdown()
        drop_server()
        drop_baseline()
    incidents, seconds = sum(h["incidents"] for h in halves), sum(h["seconds"] for h in halves)
    baseline = {"incidents": incidents, "per_transaction": 1, "transactions": incidents, "seconds": seconds,
                "incidents_per_s": incidents / seconds,
                "incidents_per_s_before_and_after": [h["incidents_per_s"] for h in halves]}  # fmt: skip
    _show("single", "postgresql baseline, 1 per transaction", baseline)
    one, two = runs["workers_1"], runs["workers_2"]
    result = {
        **runs,
        "baseline": baseline,
        "ratio_to_baseline": one["incidents_per_s"] / baseline["incidents_per_s"],
        "second_worker_gain": two["incidents_per_s"] / one["incidents_per_s"],
        # Web and PostgreSQL CPU per filing, two workers over one: above 1, the second worker costs contention.
        "second_worker_cpu_ratio": two["total_cpu_ms_per_filing"] / one["total_cpu_ms_per_filing"],
    }
    print(f"  single postgresql: ratio to baseline {result['ratio_to_baseline']:.2f}x, "
          f"second worker {result['second_worker_gain']:.2f}x (the host's cores busy {one['host_cpu_busy']:.0%} "
          f"with one worker, {two['host_cpu_busy']:.0%} with two); web CPU {one['web_cpu_ms_per_filing']:.2f} ms "
          f"a filing with one worker, {two['web_cpu_ms_per_filing']:.2f} ms with two; web + PostgreSQL "
          f"{one['total_cpu_ms_per_filing']:.2f} ms and {two['total_cpu_ms_per_filing']:.2f} ms "
          f"({result['second_worker_cpu_ratio']:.2f}x)")  # fmt: skip
    return result


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.live import LiveServer

    workdir = Path(tempfile.mkdtemp(prefix="ucsc-bench-"))  # the default temp dir: the same disk as the baseline's
    server_db, baseline_db = workdir / "server.db", workdir / "baseline.db"
    env = _env(f"sqlite:///{server_db}")
    t0 = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(
        f"UCSC intake benchmark, scale {SCALE}, {os.cpu_count()} CPUs, load average {load_before[0]},"
        f" databases in {workdir}",
        flush=True,
    )
    _flask(env, "init-db")
    token = _flask(env, "create-token", "bench", "--role", "intake").strip().splitlines()[-1]
    # The baseline gets the same schema, roster and registry; SQLite's backup API also takes what is still in the WAL.
    with sqlite3.connect(server_db) as source, sqlite3.connect(baseline_db) as target:
        source.backup(target)
    halves: dict[str, list[dict[str, Any]]] = {"single": [], "bulk": []}

    def baseline(part: int) -> None:
        url = f"sqlite:///{baseline_db}"
        n_single, n_bulk = scaled(SINGLE_BASELINE, 200) // 2, max(2, scaled(BULK_BASELINE, 4) // 2)
        halves["single"].append(run_baseline(url, incidents=n_single, per_transaction=1, tag=f"bs{part}"))
        halves["bulk"].append(
            run_baseline(url, incidents=n_bulk * BULK_SIZE, per_transaction=BULK_SIZE, tag=f"bb{part}")
        )

    baseline(1)

    server = LiveServer(f"sqlite:///{server_db}", workdir / "gunicorn.log", env={"UCSC_SECRET_KEY": "bench"})
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    results: dict[str, Any] = {}
    restarts: list[str] = []
    try:
        server.start()
        worker = [_worker_pid(server.process.pid)]
        counter = itertools.count(step=1_000_000)

        def load(
            kind: str, requests: int, *, rate: float | None = None, connections: int = CLIENTS, warmup: bool = False
        ) -> dict:
            spec = {
                "port": server.port, "token": token, "bulk": kind == "bulk", "requests": requests, "rate": rate,
                "path": "/api/v1/incidents/bulk" if kind == "bulk" else "/api/v1/incidents",
                "connections": connections, "first": next(counter), "tag": kind[0],
            }  # fmt: skip
            cpu0 = _cpu_seconds(worker[0])
            figures = pool.submit(run_load, spec).result()
            try:
                figures["server_cpu_seconds"] = _cpu_seconds(worker[0]) - cpu0
            except FileNotFoundError:
                # gunicorn replaced its worker (WORKER TIMEOUT, a crash): say so rather than stop here.
                figures["server_cpu_seconds"] = float("nan")
                restarts.append(f"the gunicorn worker was replaced during {kind} {'open loop' if rate else 'load'}")
                worker[0] = _worker_pid(server.process.pid)
            per_request = BULK_SIZE if kind == "bulk" else 1
            figures["incidents_per_s"] = figures["ok"] * per_request / figures["seconds"]
            figures["requests_per_s"] = figures["ok"] / figures["seconds"]
            figures["client_cpu_cores"] = figures["client_cpu_seconds"] / figures["seconds"]
            figures["server_cpu_cores"] = figures["server_cpu_seconds"] / figures["seconds"]
            if rate:
                figures["offered_requests_per_s"] = rate
            phase = "warm-up" if warmup else "open loop, half rate" if rate else f"saturation, {connections} clients"
            _show(kind, phase, figures)
            return figures

        for kind, sat_n, open_n, warm in (
            ("single", scaled(SINGLE_SATURATION, 200), scaled(SINGLE_OPEN_LOOP, 100), scaled(200, 50)),
            ("bulk", scaled(BULK_SATURATION, CLIENTS), scaled(BULK_OPEN_LOOP, 4), 2),
        ):
            load(kind, warm, warmup=True)  # warm-up: imports, caches, the first pages of every index
            saturation = load(kind, sat_n)
            half = saturation["requests_per_s"] / 2
            open_loop = load(kind, open_n, rate=half, connections=OPEN_LOOP_CONNECTIONS[kind])
            results[kind] = {"saturation": saturation, "open_loop": open_loop}
    finally:
        pool.shutdown()
        server.stop()

    baseline(2)
    for kind in ("single", "bulk"):
        r = results[kind]
        parts = halves[kind]
        incidents, seconds = sum(h["incidents"] for h in parts), sum(h["seconds"] for h in parts)
        r["baseline"] = {
            "incidents": incidents,
            "per_transaction": parts[0]["per_transaction"],
            "transactions": sum(h["transactions"] for h in parts),
            "seconds": seconds,
            "incidents_per_s": incidents / seconds,
            "incidents_per_s_before_and_after": [h["incidents_per_s"] for h in parts],
        }
        r["ratio_to_baseline"] = r["saturation"]["incidents_per_s"] / r["baseline"]["incidents_per_s"]
        _show(kind, f"baseline, {r['baseline']['per_transaction']} per transaction", r["baseline"])
        print(f"  {kind:6} ratio to baseline: {r['ratio_to_baseline']:.2f}x")

    postgresql: dict[str, Any] | None = None
    if "postgresql" in BACKENDS:
        try:
            postgresql = run_postgresql(workdir)
        except Exception as exc:  # reported, and the targets it measures fail
            restarts.append(f"postgresql: {type(exc).__name__}: {exc}")

    rows = {"api": rows_per_incident(server_db, "bench"), "baseline": rows_per_incident(baseline_db, "bench")}
    extra_rows = extra_rows_per_incident(server_db, "bench")
    rows["api"].pop("incidents")
    rows["baseline"].pop("incidents")
    print(f"  rows per incident: api {rows['api']}, baseline {rows['baseline']}")

    figures = {
        "single_incidents_per_s": results["single"]["saturation"]["incidents_per_s"],
        "single_ratio_to_baseline": results["single"]["ratio_to_baseline"],
        "single_p99_ms_at_half_rate": results["single"]["open_loop"]["p99_ms"],
        "bulk_ratio_to_baseline": results["bulk"]["ratio_to_baseline"],
    }
    if postgresql is not None:
        figures["postgresql_single_incidents_per_s"] = postgresql["workers_1"]["incidents_per_s"]
        figures["postgresql_second_worker_gain"] = postgresql["second_worker_gain"]
    targets = {
        name: {
            "value": round(figures[name], 3),
            "target": ("<= " if name.endswith("_ms_at_half_rate") else ">= ") + str(goal),
            "pass": figures[name] <= goal if name.endswith("_ms_at_half_rate") else figures[name] >= goal,
        }
        for name, goal in TARGETS.items()
        if name in figures
    }
    errors = [
        f"{kind} {phase}: {r['requests'] - r['ok']} of {r['requests']} requests did not get 201 "
        f"(statuses {r['statuses']}, failures {r['failures']})"
        for kind in ("single", "bulk")
        for phase, r in results[kind].items()
        if phase in ("saturation", "open_loop") and r["ok"] != r["requests"]
    ]
    errors += restarts
    if rows["api"] != rows["baseline"]:
        errors.append(f"the baseline does not write the rows the API writes: {rows}")
    report = {
        "scale": SCALE,
        "finished_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "machine": machine(load_before),
        "setup": {
            "database": "sqlite (WAL, BEGIN IMMEDIATE)",
            # fsync is most of a one-incident transaction: a tmpfs would flatter both sides.
            "database_filesystem": filesystem(workdir),
            "sqlite_synchronous": os.environ.get("UCSC_SQLITE_SYNCHRONOUS", "FULL"),
            "server": "gunicorn, gunicorn.conf.py (1 gevent worker, access log on)",
            "client": "separate process, http.client keep-alive threads",
            "clients": CLIENTS,
            "observables_per_incident": OBSERVABLES,
            "bulk_size": BULK_SIZE,
            "open_loop_connections": OPEN_LOOP_CONNECTIONS,
        },
        "rows_per_incident": rows,
        "extra_rows_per_incident": extra_rows,
        "single": results["single"],
        "bulk": results["bulk"],
        "postgresql": postgresql,
        "targets": targets,
        "passed": all(t["pass"] for t in targets.values()) and len(targets) == len(TARGETS),
        "errors": errors,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(rounded(report), indent=2) + "\n")
    print("targets:")
    for name, t in targets.items():
        print(f"  {'pass' if t['pass'] else 'MISS'}  {name} = {t['value']:g} (target {t['target']})")
    for e in errors:
        print("ERROR:", e)
    print(f"{report['seconds']} s; figures written to {OUTPUT}")
    return finish(workdir, errors, report["passed"], " (databases, gunicorn.log)")


def _show(kind: str, phase: str, f: dict[str, Any]) -> None:
    line = f"  {kind:6} {phase:32} {f['incidents_per_s']:9.1f} incidents/s"
    if "p50_ms" in f:
        line += (
            f"  {f['requests_per_s']:7.1f} req/s  p50 {f['p50_ms']:8.1f} ms  p99 {f['p99_ms']:8.1f} ms"
            f"  max {f['max_ms']:8.1f} ms  ({f['ok']}/{f['requests']} ok;"
            f" cpu: server {f['server_cpu_cores']:.2f}, client {f['client_cpu_cores']:.2f} cores)"
        )
    else:
        line += f"  ({f['incidents']} incidents in {f['transactions']} transactions, {f['seconds']:.1f} s"
        if "incidents_per_s_before_and_after" in f:
            before, after = f["incidents_per_s_before_and_after"]
            line += f"; {before:.1f} before the HTTP runs, {after:.1f} after"
        line += ")"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
