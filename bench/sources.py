"""Alert-source benchmark: Wazuh alerts posted by 16 concurrent clients, first-of-a-kind and repeats measured apart.

What it measures (see docs/benchmarks.md): 2,000 raw Wazuh alerts from 20 rules x 5 agents posted to
`POST /api/v1/sources/wazuh` under gunicorn (one gevent worker, as deployed) by 16 concurrent clients, each as
fast as it can. The 100 first-of-a-kind alerts (one per rule and agent) open incidents and are timed as one
phase; the 1,900 repeats that follow are grouped into them as occurrences and timed as a second phase. Then the
database is read: exactly 100 incidents and 2,000 occurrences from the source (100 first + 1,900 repeats), one
idempotency key per alert id, 20 occurrences per incident: nothing lost or doubled. Target: the repeats'
throughput at least 3 times the first-of-a-kind's, on SQLite and on PostgreSQL.

Two more phases, after those, say what bounds that ratio (reported, no target): the repeats posted again to
`POST /_bench/intake-floor/wazuh` (served with UCSC_BENCH_ROUTES=1), which checks the token, takes the rate limit,
reads and parses the body and answers without filing: the request floor every alert pays, and the ratio a repeat
costing nothing beyond it would reach (`floor_bound`). Then 100 first-of-a-kind alerts of a second source's own
rules on the warm server (`ratio_warm`): the timed first phase is the server's first filing work of its life.

A client retries a 503 or 429 as Wazuh's integration script does; retries are counted and reported.
`UCSC_BENCH_SCALE` scales the rules (CI runs 0.1: 2 rules x 5 agents, 200 alerts); targets are enforced only at
full scale. `UCSC_BENCH_BACKENDS` (default `sqlite,postgresql`) picks the backends. Figures go to stdout and to
bench/results-sources.json (`UCSC_BENCH_OUTPUT` overrides the path).
"""

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _common import SCALE, cpu_seconds, free_port, percentile, wait_http, worker_pid
from _common import env as _env
from _common import flask as _flask
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = Path(os.environ.get("UCSC_BENCH_OUTPUT", ROOT / "bench" / "results-sources.json"))
BACKENDS = [b for b in os.environ.get("UCSC_BENCH_BACKENDS", "sqlite,postgresql").split(",") if b]
PG_ADMIN = os.environ.get("UCSC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
RULES, AGENTS, ALERTS, CLIENTS = 20, 5, 2000, 16
TARGET_RATIO = 3.0
RETRIES = 8
GROUPS = (["web", "attack"], ["sshd", "authentication_failed"], ["syscheck"], ["rootcheck"], ["ddos"])


def alert(n: int, rule: int, agent: int) -> dict[str, Any]:
    """A raw Wazuh alert (the shape of alerts.json) of `rule` on `agent`, with its own alert id."""
    return {
        "timestamp": "2026-12-06T10:15:02.123+0700",
        "id": f"1733454902.{n}",
        "rule": {
            "id": str(31100 + rule),
            "level": 3 + rule % 12,
            "description": f"Bench rule {rule}: suspicious activity",
            "groups": GROUPS[rule % len(GROUPS)],
            "mitre": {
                "id": ["T1190"],
                "tactic": ["Initial Access"],
                "technique": ["Exploit Public-Facing Application"],
            },
        },
        "agent": {"id": f"{agent:03d}", "name": f"bench-agent-{agent}", "ip": f"203.0.113.{10 + agent}"},
        "manager": {"name": "wazuh-manager"},
        "data": {"srcip": f"198.51.100.{n % 250 + 1}", "url": f"https://portal.example.vn/p?id={n}"},
        "full_log": f"bench alert {n} of rule {rule} on agent {agent}",
        "location": "/var/log/nginx/access.log",
    }


class Clients:
    """16 threads, each with its own keep-alive connection, posting alerts as fast as they are answered.

    The connections are made before any phase is timed, and serve both phases: an httpx.Client
    takes about 27 ms of CPU to build (its TLS context), and 16 built as a phase began held its first requests
    for about 0.4 s (the first-of-a-kind phase lasts about half a second)."""

    def __init__(self, url: str, token: str, health: str) -> None:
        self.url = url
        self.local = threading.local()
        self.retries = 0
        self.lock = threading.Lock()
        self.idle: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
        for _ in range(CLIENTS):
            client = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            client.get(health).raise_for_status()  # the keep-alive connection is open before the clock starts
            self.idle.put(client)
        self.pool = ThreadPoolExecutor(CLIENTS)  # its threads take a ready client each, as they start

    def _client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = self.idle.get_nowait()
        return self.local.client

    def close(self) -> None:
        self.pool.shutdown()

    def post(self, body: dict[str, Any], url: str | None = None, token: str | None = None) -> tuple[int, float]:
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        for attempt in range(RETRIES):
            response = self._client().post(url or self.url, json=body, headers=headers)
            if response.status_code not in (429, 503):
                return response.status_code, time.perf_counter() - started
            with self.lock:
                self.retries += 1
            time.sleep(min(0.05 * 2**attempt, 1.0))
        return response.status_code, time.perf_counter() - started

    def phase(self, bodies: list[dict[str, Any]], web_pid: int, url: str | None = None,
              token: str | None = None) -> dict[str, Any]:  # fmt: skip
        """`bodies` posted to `url` (the source's by default) with `token` (the source's by default)."""
        cpu = cpu_seconds(web_pid)
        started = time.perf_counter()
        answers = list(self.pool.map(lambda body: self.post(body, url, token), bodies))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(web_pid) - cpu
        latencies = sorted(t for _, t in answers)
        codes: dict[str, int] = {}
        for code, _ in answers:
            codes[str(code)] = codes.get(str(code), 0) + 1
        return {
            "alerts": len(bodies),
            "seconds": round(elapsed, 3),
            "alerts_per_s": round(len(bodies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            # The gunicorn worker's CPU (user + system) over the phase, per alert: the work, apart from waiting.
            "web_cpu_ms_per_alert": round(cpu / len(bodies) * 1000, 2),
            "status_codes": codes,
        }


def _database(backend: str, workdir: Path) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'ucsc.db'}", None
    import psycopg

    name = f"ucsc_bench_sources_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


def _drop(name: str | None) -> None:
    if name is None:
        return
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _verify(database: str, source_id: int, keys: int, total: int, warm: int) -> dict[str, Any]:
    """What the database holds after the run: counted, not taken from the answers. The warm source's `warm` alerts
    opened an incident each."""
    url = database.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            one = lambda sql: conn.execute(text(sql), {"s": source_id}).scalar_one()  # noqa: E731
            per_incident = [
                r[0]
                for r in conn.execute(
                    text("SELECT count(*) FROM occurrences WHERE source_id = :s GROUP BY incident_id"), {"s": source_id}
                )
            ]
            found = {
                "incidents": one("SELECT count(DISTINCT incident_id) FROM occurrences WHERE source_id = :s"),
                "incidents_total": one("SELECT count(*) FROM incidents"),
                "occurrences": one("SELECT count(*) FROM occurrences WHERE source_id = :s"),
                "idempotency_keys": conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar_one(),
                "occurrences_per_incident": sorted(set(per_incident)),
            }
    finally:
        engine.dispose()
    found["lost_or_doubled"] = not (
        found["incidents"] == found["incidents_total"] - warm == keys
        and found["occurrences"] == found["idempotency_keys"] - warm == total
        and found["occurrences_per_incident"] == [total // keys]
    )
    return found


def run_backend(backend: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"ucsc-bench-sources-{backend}-"))
    database, pg_name = _database(backend, workdir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = _env(database, UCSC_BASE_URL=base, UCSC_LOG_LEVEL="WARNING", UCSC_BENCH_ROUTES="1")
    server: subprocess.Popen | None = None
    try:
        _flask(environment, "init-db", "--no-demo")
        operator = _flask(environment, "create-token", "bench-soc", "--role", "operator").strip().splitlines()[-1]
        with (workdir / "gunicorn.log").open("ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"],
                cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_http(base + "/healthz")
        source, warm_source = (
            httpx.post(f"{base}/api/v1/sources", json={"kind": "wazuh", "name": name},
                       headers={"Authorization": f"Bearer {operator}"}, timeout=30).raise_for_status().json()
            for name in ("Wazuh bench", "Wazuh bench, warm")
        )  # fmt: skip
        rules = max(1, round(RULES * SCALE))
        keys = rules * AGENTS
        total = keys * (ALERTS // (RULES * AGENTS))
        bodies = [alert(n, (n % keys) // AGENTS, n % AGENTS) for n in range(total)]
        clients = Clients(f"{base}/api/v1/sources/wazuh", source["token"]["value"], base + "/healthz")
        web = worker_pid(server.pid)
        first = clients.phase(bodies[:keys], web)
        repeats = clients.phase(bodies[keys:], web)
        floor = clients.phase(bodies[keys:], web, url=f"{base}/_bench/intake-floor/wazuh")
        warm_bodies = [alert(ALERTS + n, RULES + (n % keys) // AGENTS, n % AGENTS) for n in range(keys)]
        warm = clients.phase(warm_bodies, web, token=warm_source["token"]["value"])
        clients.close()
        found = _verify(database, source["id"], keys, total, keys)
        ratio = repeats["alerts_per_s"] / first["alerts_per_s"]
        return {
            "backend": backend,
            "rules": rules,
            "agents": AGENTS,
            "clients": CLIENTS,
            "first_of_a_kind": first,
            "repeats": repeats,
            "ratio": round(ratio, 2),
            "floor": floor,
            "floor_bound": round(floor["alerts_per_s"] / first["alerts_per_s"], 2),
            "first_of_a_kind_warm": warm,
            "ratio_warm": round(repeats["alerts_per_s"] / warm["alerts_per_s"], 2),
            "retries": clients.retries,
            "database": found,
            "answers_as_expected": first["status_codes"] == warm["status_codes"] == {"201": keys}
            and repeats["status_codes"] == floor["status_codes"] == {"200": total - keys},
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        _drop(pg_name)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    t0 = time.perf_counter()
    report: dict[str, Any] = {"scale": SCALE, "backends": {}, "errors": []}
    for backend in BACKENDS:
        try:
            report["backends"][backend] = run_backend(backend)
        except Exception as exc:  # one backend's failure is reported; the other still runs
            report["errors"].append(f"{backend}: {type(exc).__name__}: {exc}")
    targets = {}
    for name, figures in report["backends"].items():
        targets[f"{name}_ratio"] = {"value": figures["ratio"], "target": TARGET_RATIO,
                                    "pass": figures["ratio"] >= TARGET_RATIO}  # fmt: skip
        targets[f"{name}_lost_or_doubled"] = {"value": figures["database"]["lost_or_doubled"], "target": False,
                                              "pass": not figures["database"]["lost_or_doubled"]
                                              and figures["answers_as_expected"]}  # fmt: skip
    report["targets"] = targets
    report["passed"] = not report["errors"] and all(t["pass"] for t in targets.values())
    report["seconds"] = round(time.perf_counter() - t0, 1)
    OUTPUT.write_text(json.dumps(report, indent=2))
    for name, f in report["backends"].items():
        print(f"{name}: first-of-a-kind {f['first_of_a_kind']['alerts']} alerts in {f['first_of_a_kind']['seconds']} s "
              f"= {f['first_of_a_kind']['alerts_per_s']}/s ({f['first_of_a_kind']['web_cpu_ms_per_alert']} ms web CPU "
              f"each); repeats {f['repeats']['alerts']} in {f['repeats']['seconds']} s = "
              f"{f['repeats']['alerts_per_s']}/s ({f['repeats']['web_cpu_ms_per_alert']} ms); repeats / first = "
              f"{f['ratio']}; request floor {f['floor']['alerts_per_s']}/s ({f['floor']['web_cpu_ms_per_alert']} ms), "
              f"a free repeat's ratio {f['floor_bound']}; first-of-a-kind warm "
              f"{f['first_of_a_kind_warm']['alerts_per_s']}/s "
              f"({f['first_of_a_kind_warm']['web_cpu_ms_per_alert']} ms), "
              f"repeats / warm = {f['ratio_warm']}; "
              f"incidents {f['database']['incidents']}, occurrences {f['database']['occurrences']}, "
              f"retries {f['retries']}")  # fmt: skip
    for error in report["errors"]:
        print("error:", error)
    print("targets:", ", ".join(f"{k} {'pass' if t['pass'] else 'FAIL'} ({t['value']})" for k, t in targets.items()))
    print(f"figures in {OUTPUT}; {report['seconds']} s")
    if report["errors"]:
        return 1
    return 0 if SCALE < 1 or report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
