"""What the benchmarks share: scale, the flask CLI, the gunicorn worker's pid and CPU time, percentiles, reports."""

import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
# The tests' PostgreSQL admin URL: a bench creates (and drops) a database of its own there.
PG_ADMIN_URL = os.environ.get("UCSC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
# CI runs the benches at a tenth of their size only to prove they still run; targets hold at full size.
SCALE = float(os.environ.get("UCSC_BENCH_SCALE", "1.0"))


def scaled(n: int, minimum: int = 1) -> int:
    """`n` at this run's scale, never below `minimum`."""
    return max(minimum, round(n * SCALE))


def project_imports() -> None:
    """Let the repository's packages, not the benches beside this file, answer imports.

    A bench runs as a script, so bench/ comes first on sys.path: bench/telegram.py would shadow
    python-telegram-bot for the app it imports, bench/stix.py the `stix` package.
    """
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != here)]


def env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of the processes a bench starts, on `database_url`."""
    return {
        **os.environ,
        "UCSC_DATABASE_URL": database_url,
        "UCSC_SECRET_KEY": "bench",
        "UCSC_INTAKE_RATE_LIMIT": "",  # the benches measure the paths, not the limiter's refusals
        "UCSC_OUTBOUND_ALLOW": "127.0.0.0/8,::1",  # their webhook and TAXII receivers listen on loopback
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


def flask(environment: dict[str, str], *args: str) -> str:
    """`flask --app wsgi ARGS`; its standard output, or RuntimeError with both outputs."""
    out = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=environment, capture_output=True,
        text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def worker_pid(arbiter: int, timeout: float = 10.0) -> int:
    """The pid of gunicorn's (only) worker under `arbiter`."""
    return worker_pids(arbiter, 1, timeout)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_cpu() -> tuple[int, int]:
    """The whole machine's busy and total CPU time so far, in clock ticks, from /proc/stat (Linux): the share of
    the cores a run kept busy is the busy difference over the total difference."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks[:8]) - idle, sum(ticks[:8])


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def target(value: float, goal: float) -> dict[str, Any]:
    """A report's entry for a figure that must stay at or below `goal`."""
    return {"value": value, "target": f"<= {goal:.1f}", "pass": value <= goal}


def machine(load_before: list[float]) -> dict[str, Any]:
    """What a report says of the machine: other work on it skews every figure, so how busy it was around the run."""
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def rounded(value: Any) -> Any:
    """`value` with every float in it rounded to three places, for the JSON report."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    """Return once `url` answers 200; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def finish(workdir: Path, errors: list[str], passed: bool, kept: str = "") -> int:
    """Keep `workdir` (`kept` says what it holds) when asked or after an error, else remove it; the exit status."""
    if os.environ.get("UCSC_BENCH_KEEP") or errors:
        print(f"kept {workdir}{kept}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        return 2
    # Figures at a fraction of the size are not meaningful enough to fail on; full-size runs enforce targets.
    return 0 if passed or SCALE < 1 else 1


def database(backend: str, workdir: Path, bench: str, sqlite_file: str) -> tuple[str, Callable[[], None]]:
    """A fresh database of this run's own: its URL, and a callable that drops it (call it after a failure too)."""
    if backend == "sqlite":
        return f"sqlite:///{workdir / sqlite_file}", lambda: None
    import psycopg

    name = f"ucsc_bench_{bench}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


class PostgresCPU:
    """CPU of the PostgreSQL backends connected to one database, sampled so short-lived ones still count."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url, self.database = admin_url, database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, conn: Any) -> None:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,))]
        for pid in pids:
            try:
                cpu = cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            self.first.setdefault(pid, cpu if pid in self.baseline else 0.0)
            self.last[pid] = cpu

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self._stop.wait(0.1):
                self._sample(conn)
            self._sample(conn)

    def start(self) -> "PostgresCPU":
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            self.baseline = {
                r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,))
            }
            self._sample(conn)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def filesystem(path: Path) -> str:
    """The type of the file system holding `path`, from /proc/mounts (Linux)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def worker_pids(arbiter: int, count: int, timeout: float = 10.0) -> list[int]:
    """The pids of gunicorn's `count` workers under `arbiter`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [int(c) for c in Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()]
        if len(children) >= count:
            return children
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn started fewer than {count} workers")
