"""A real gunicorn server (one gevent worker) on loopback, as a subprocess the test can kill and restart."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
# Webhook and TAXII receivers in tests and benchmarks listen on loopback, which production refuses.
LOOPBACK = "127.0.0.0/8,::1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """gunicorn wsgi:app with the project's gunicorn.conf.py, logging to a file the test can read."""

    def __init__(self, database_url: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "UCSC_DATABASE_URL": database_url,
            "UCSC_SECRET_KEY": "test",
            "UCSC_INTAKE_RATE_LIMIT": "",
            "UCSC_BASE_URL": self.url,  # Socket.IO accepts browsers from this origin only
            "UCSC_OUTBOUND_ALLOW": LOOPBACK,
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "LiveServer":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{self.port}"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer /healthz within {timeout}s:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (arbiter and worker) with `sig` and wait for it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class WorkerProcess:
    """`flask --app wsgi worker` as a subprocess (plain asyncio, never gevent), logging to a file."""

    def __init__(self, database_url: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            "UCSC_DATABASE_URL": database_url,
            "UCSC_SECRET_KEY": "test",
            "UCSC_LOG_LEVEL": "INFO",
            "UCSC_WORKER_HEARTBEAT_SECONDS": "0.5",
            "UCSC_OUTBOUND_ALLOW": LOOPBACK,
            # Beside the test's own files (the `app` fixture's anchor too), never the repository's instance folder.
            "UCSC_AUDIT_ANCHOR_FILE": str(log_path.parent / "audit_anchor"),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "WorkerProcess":
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if " started (" in self.log()[offset:]:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"worker did not start within {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> int | None:
        """Signal the worker and wait for it; its exit code."""
        if self.process is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def stop(self) -> int | None:
        return self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
