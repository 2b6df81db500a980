"""The zygote of tests/warm.py (`python -m tests.warm_spare`): import the app once, fork a worker per order.

It imports what `wsgi` (create_app) and the worker import, builds nothing (no app, no database connection, no
thread), then reads orders from stdin, one JSON line each: the worker's environment and log file. For each it
forks a child that becomes its own session, points stdout and stderr at the log, takes that environment and
runs what `python -m flask --app wsgi worker` runs (`flask.cli.main`), so `create_app` reads the environment
as a cold start would; the zygote answers with the child's pid and reaps it when it dies.
"""

import importlib
import json
import os
import signal
import sys
import threading

PRELOAD = (
    "flask.cli",
    "psycopg",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite.pysqlite",
    *(f"app.{m}" for m in ("ack", "api", "auth", "backup", "cli", "db", "errors", "observability", "sockets")),
    *(f"app.{m}" for m in ("stix_cli", "taxii", "telegram.runtime", "telegram.webhook", "web", "worker")),
    "notifiers.registry",
)


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_worker(order: dict) -> None:
    """In the child: never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        log = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.clear()
        os.environ.update(order["env"])
        sys.argv = ["flask", "--app", "wsgi", "worker"]
        importlib.import_module("flask.cli").main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a module renamed since: the worker imports what it needs itself
            print(f"not preloaded: {exc}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, _reap)
    for line in sys.stdin:
        if threading.active_count() != 1:
            raise RuntimeError(f"threads started while importing, forking is unsafe: {threading.enumerate()}")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become_worker(json.loads(line))
        os.write(1, f"{pid}\n".encode())


if __name__ == "__main__":
    main()
