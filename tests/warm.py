"""Worker processes started ahead of need: the real `flask --app wsgi worker`, its imports already done.

Importing the app takes seconds of a loaded machine's time, and a test that kills and restarts the worker
spends them at every restart, while no job runs. A spare (`python -m tests.warm_spare`) imports what the app
imports (and builds nothing: no app, no database connection) at idle priority, then blocks on its stdin.
`start` hands it the test's environment and log file; it then runs exactly what `python -m flask --app wsgi
worker` runs (`flask.cli.main`), so `create_app` reads that environment as a cold start would. Each spare is
its own session (`start_new_session`), killed with `os.killpg` like `WorkerProcess`.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.live import ROOT, WorkerProcess


class WarmWorkers:
    """A pool of spare worker processes; `start` uses one (or a cold one if none is left) and returns it."""

    def __init__(self, directory: Path, keep: int = 1) -> None:
        self.directory, self.keep = directory, keep
        self.spares: list[tuple[subprocess.Popen, Path]] = []
        self._count = 0

    def reserve(self, n: int, *, idle: bool = True) -> None:
        """Have at least `n` spares importing or ready; `idle=False` when they must be ready soon even on a busy
        machine (their imports then compete with the test for CPU time)."""
        while len(self.spares) < n:
            self._count += 1
            path = self.directory / f"spare-{self._count}.log"  # what it says before it is given a log
            with path.open("ab") as out:
                command = [sys.executable, "-m", "tests.warm_spare", *([] if idle else ["--not-idle"])]
                spare = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.spares.append((spare, path))

    def start(self, database_url: str, log_path: Path, env: dict[str, str] | None = None) -> "WarmWorker":
        """A worker from the oldest spare; a new spare takes its place (importing only on idle CPU time)."""
        self.reserve(1)
        spare = self.spares.pop(0)
        self.reserve(self.keep)
        return WarmWorker(database_url, log_path, env).start_from(spare)

    def close(self) -> None:
        for spare, _ in self.spares:
            assert spare.stdin is not None
            spare.stdin.close()
            spare.kill()
            spare.wait(timeout=30)
        self.spares.clear()


class WarmWorker(WorkerProcess):
    """A `WorkerProcess` that runs in a spare of `WarmWorkers` instead of a new interpreter."""

    def start_from(self, spare: tuple[subprocess.Popen, Path], timeout: float = 20.0) -> "WarmWorker":
        process, spare_log = spare
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps({"env": self.env, "log": str(self.log_path)}).encode() + b"\n")
            process.stdin.close()
        except BrokenPipeError:
            pass  # it died importing: reported below
        self.process = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{spare_log.read_text()}{self.log()}")
            if " started (" in self.log()[offset:]:
                return self
            time.sleep(0.02)
        raise RuntimeError(f"worker did not start within {timeout}s:\n{self.log()}")
