"""Topology benchmark: intake on PostgreSQL through one and through two gunicorn instances, two workers.

What it measures (its targets and figures are in docs/benchmarks.md):
- throughput of single POSTs (3 observables each) from 16 keep-alive connections, spread over the instances;
- server-side CPU seconds per accepted incident: the gunicorn workers plus the PostgreSQL backends serving
  the bench's database, from the kernel's per-process accounting (/proc/PID/stat utime + stime). Backends are
  sampled every 0.1 s, so one that closes mid-run still counts up to its last sample; cluster-wide background
  processes (WAL writer, checkpointer) are left out because other databases share them;
- that nothing is lost or doubled (incidents in the database = 201 answers, each title once) and zero errors;
- job lag p99 with two workers under that load: each filing queues a receipt to a webhook on loopback, and the
  lag is the time from a job being due to a worker starting it (`jobs.started_at - jobs.run_at`).

The baseline is the one-instance run, in the same process on the same machine; each run has a fresh database.
The target: CPU per incident with two instances ≤ 1.15× that of one. `UCSC_BENCH_SCALE` scales the request
count (CI: 0.1, targets reported, not enforced). Figures go to stdout and bench/results-topology.json.
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from _common import SCALE, PostgresCPU, cpu_seconds, env, flask, free_port, percentile, worker_pid
from intake import Connection, incident_payload

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = Path(os.environ.get("UCSC_BENCH_OUTPUT", ROOT / "bench" / "results-topology.json"))
ADMIN_URL = os.environ.get("UCSC_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REQUESTS = 3000
CONNECTIONS = 16
WORKERS = 2
TARGET_CPU_RATIO = 1.15


class _Receiver(ThreadingHTTPServer):
    """The SIEM's receipt webhook: answers 200 at once and counts what it got."""

    daemon_threads = True

    def __init__(self) -> None:
        self.count = 0
        self.keys: set[str] = set()  # delivery is at least once: a retried receipt carries the same key
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.count += 1
                    receiver.keys.add(self.headers.get("Idempotency-Key") or f"none-{receiver.count}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def _load(ports: list[int], token: str, first: int, count: int) -> dict[str, Any]:
    """Closed loop: CONNECTIONS keep-alive clients, spread evenly over the instances, `count` POSTs in all."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [json.dumps(incident_payload(first + n, "topo"), separators=(",", ":")).encode() for n in range(count)]
    nxt, lock = iter(range(count)), threading.Lock()
    statuses: dict[int, int] = {}
    failures: list[str] = []
    latencies: list[float] = []

    def client(port: int) -> None:
        conn = Connection("127.0.0.1", port)
        while True:
            with lock:
                k = next(nxt, None)
            if k is None:
                return
            started = time.perf_counter()
            try:
                status = conn.post("/api/v1/incidents", bodies[k], headers)
            except OSError as exc:
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(client, [ports[i % len(ports)] for i in range(CONNECTIONS)]))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {"seconds": seconds, "statuses": {str(k): v for k, v in sorted(statuses.items())}, "failures": failures,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}  # fmt: skip


def run(instances: int, requests_count: int, receiver: _Receiver) -> dict[str, Any]:
    """One fresh database, `instances` gunicorns and WORKERS workers; file `requests_count` incidents."""
    database = f"ucsc_bench_topology_{os.getpid()}_{instances}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    environment = env(url, UCSC_LOG_LEVEL="WARNING")
    processes: list[subprocess.Popen] = []
    try:
        flask(environment, "init-db", "--no-demo")
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/receipt"
        token = flask(environment, "create-token", "bench-siem", "--role", "intake", "--webhook", hook)
        token = token.strip().splitlines()[-1]
        ports = [free_port() for _ in range(instances)]
        logs = ROOT / "bench" / ".topology-logs"
        logs.mkdir(exist_ok=True)
        for port in ports:
            with (logs / f"web-{instances}-{port}.log").open("wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"], cwd=ROOT,
                    env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
        for n in range(WORKERS):
            with (logs / f"worker-{instances}-{n}.log").open("wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=environment,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
        web_pids = [worker_pid(p.pid) for p in processes[:instances]]
        _wait_healthy(ports)
        _load(ports, token, 0, max(20, requests_count // 20))  # warm-up: connections, pools, caches
        time.sleep(1.0)
        with receiver.lock:  # each run's database numbers its incidents, and so its receipts' keys, from 1
            received_before = receiver.count
            receiver.keys = set()
        backends = PostgresCPU(ADMIN_URL, database).start()
        web_before = [cpu_seconds(pid) for pid in web_pids]
        load = _load(ports, token, 1_000_000, requests_count)
        web_cpu = sum(cpu_seconds(pid) - before for pid, before in zip(web_pids, web_before, strict=True))
        pg_cpu = backends.stop()
        accepted = int(load["statuses"].get("201", 0))
        with psycopg.connect(url) as conn:
            stored, titles = conn.execute(
                "SELECT count(*), count(DISTINCT title) FROM incidents WHERE title LIKE %s", ("%đợt topo-1______",)
            ).fetchone()
        deadline = time.monotonic() + 60
        while len(receiver.keys) < accepted and time.monotonic() < deadline:
            time.sleep(0.1)
        with psycopg.connect(url) as conn:
            lags = sorted(
                float(r[0]) for r in conn.execute(
                    "SELECT extract(epoch FROM started_at - run_at) FROM jobs "
                    "WHERE kind = 'receipt.webhook' AND started_at IS NOT NULL"
                )
            )  # fmt: skip
        return {
            "instances": instances,
            "workers": WORKERS,
            "requests": requests_count,
            "accepted": accepted,
            "statuses": load["statuses"],
            "errors": load["failures"][:5] + [f"HTTP {k}" for k in load["statuses"] if k != "201"],
            "stored": stored,
            "distinct_titles": titles,
            "incidents_per_s": accepted / load["seconds"],
            "p50_ms": load["p50_ms"],
            "p99_ms": load["p99_ms"],
            "web_cpu_seconds": web_cpu,
            "postgres_cpu_seconds": pg_cpu,
            "cpu_ms_per_incident": (web_cpu + pg_cpu) / max(accepted, 1) * 1000,
            "receipts_delivered": receiver.count - received_before,
            "receipts_distinct": len(receiver.keys),
            "job_lag_p50_ms": percentile(lags, 50) * 1000,
            "job_lag_p99_ms": percentile(lags, 99) * 1000,
        }
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in processes:
            process.wait(timeout=30)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_healthy(ports: list[int], timeout: float = 30.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn on {port} did not answer /healthz")
            time.sleep(0.1)


def main() -> int:
    count = max(100, round(REQUESTS * SCALE))
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        one = run(1, count, receiver)
        two = run(2, count, receiver)
    finally:
        receiver.shutdown()
    ratio = two["cpu_ms_per_incident"] / one["cpu_ms_per_incident"]
    errors = one["errors"] + two["errors"]
    intact = all(r["stored"] == r["distinct_titles"] == r["accepted"] == r["requests"] for r in (one, two))
    targets = {
        "cpu_per_incident_ratio": {"value": ratio, "target": TARGET_CPU_RATIO, "pass": ratio <= TARGET_CPU_RATIO},
        "errors": {"value": len(errors), "target": 0, "pass": not errors},
        "lost_or_doubled": {"value": 0 if intact else 1, "target": 0, "pass": intact},
    }
    report = {"scale": SCALE, "one": one, "two": two, "ratio_cpu_per_incident": ratio, "errors": errors,
              "targets": targets, "passed": all(t["pass"] for t in targets.values()),
              "load_average": os.getloadavg()}  # fmt: skip
    OUTPUT.write_text(json.dumps(report, indent=2))
    for r in (one, two):
        print(f"{r['instances']} instance(s), {r['workers']} workers: {r['accepted']}/{r['requests']} accepted, "
              f"{r['incidents_per_s']:.1f} incidents/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; "
              f"CPU {r['web_cpu_seconds']:.2f} s web + {r['postgres_cpu_seconds']:.2f} s PostgreSQL = "
              f"{r['cpu_ms_per_incident']:.2f} ms per incident; stored {r['stored']} "
              f"({r['distinct_titles']} distinct); "
              f"receipts {r['receipts_delivered']} ({r['receipts_distinct']} distinct); "
              f"job lag p50 {r['job_lag_p50_ms']:.1f} ms, "
              f"p99 {r['job_lag_p99_ms']:.1f} ms")  # fmt: skip
    print(f"CPU per incident, 2 instances / 1 instance: {ratio:.3f} (target ≤ {TARGET_CPU_RATIO})")
    print(
        "targets: " + ", ".join(f"{k} {v['value']:.3g} ({'pass' if v['pass'] else 'FAIL'})" for k, v in targets.items())
    )
    print(f"load average {report['load_average'][0]:.2f}")
    return 0 if report["passed"] or SCALE < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
