"""Worker processes forked from a zygote that imported the app once: the real worker, without the import.

Importing the app costs a loaded machine seconds of wall time and one to two seconds of CPU per process, and
the paging worker tests start sixteen workers (four per kill test, one per timing and outage test, on two
backends). `python -m tests.warm_spare` imports it once per test module and process, then forks a worker per
`start`, as gunicorn's `preload_app` forks its workers: each is its own process and session, runs
`flask.cli.main` with the test's environment (so `create_app` reads its configuration as a cold start would),
and is killed with `os.killpg` like `tests.live.WorkerProcess`, whose interface it keeps.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.live import ROOT, WorkerProcess


class WorkerZygote:
    """The importing parent; `start` forks a worker from it and returns that worker once it has started."""

    def __init__(self, directory: Path) -> None:
        self.log_path = directory / "zygote.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.warm_spare"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, start_new_session=True,
            )  # fmt: skip

    def start(self, database_url: str, log_path: Path, env: dict[str, str] | None = None) -> "ForkedWorker":
        worker = ForkedWorker(database_url, log_path, env)
        assert self.process.stdin is not None and self.process.stdout is not None
        offset = log_path.stat().st_size if log_path.exists() else 0
        try:
            self.process.stdin.write(json.dumps({"env": worker.env, "log": str(log_path)}).encode() + b"\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except BrokenPipeError:
            answer = b""
        if not answer:
            raise RuntimeError(f"the worker zygote exited:\n{self.log_path.read_text(errors='replace')}")
        return worker.started(int(answer), offset)

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process.stdout.close()


class ForkedWorker(WorkerProcess):
    """A `WorkerProcess` forked by `WorkerZygote`: a child of the zygote, which reaps it when it dies."""

    _pid: int | None = None

    def started(self, pid: int, offset: int, timeout: float = 20.0) -> "ForkedWorker":
        self._pid = pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " started (" in self.log()[offset:]:
                return self
            if not self._alive():
                raise RuntimeError(f"worker {pid} exited:\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"worker did not start within {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self._pid is not None
        return self._pid

    def _alive(self) -> bool:
        assert self._pid is not None
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> int | None:
        """Signal the worker's session and wait until it is gone (reaped by the zygote); its exit code is not known."""
        if self._pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._pid, sig)
        deadline = time.monotonic() + timeout
        while self._alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self._pid} still there {timeout}s after signal {sig}")
            time.sleep(0.01)
        self._pid = None
        return None
