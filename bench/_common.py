"""What the benchmarks share: the flask CLI, the gunicorn worker's pid and CPU time, percentiles."""

import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError("gunicorn started no worker")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]
