"""A spare worker (`python -m tests.warm_spare`, see tests/warm.py): import the app, wait, then be the worker.

While it imports and waits, its main thread runs under SCHED_IDLE (unless `--not-idle`) when this machine lets
a thread leave that policy again: it then only takes CPU time nobody else wants, so a spare importing during a
timed test does not slow that test. The order on stdin (one JSON line: the environment and the log file)
returns it to SCHED_OTHER before anything of the worker runs; from there it does what `python -m flask --app
wsgi worker` does.
"""

import importlib
import json
import os
import sys
import threading

# What `wsgi` (create_app) and the worker import, and the database drivers its engine loads.
PRELOAD = (
    "flask.cli",
    "psycopg",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite.pysqlite",
    *(f"app.{m}" for m in ("ack", "api", "auth", "backup", "cli", "db", "errors", "observability", "sockets")),
    *(f"app.{m}" for m in ("stix_cli", "taxii", "telegram_bot", "web", "worker")),
    "notifiers.registry",
)


def _can_leave_idle() -> bool:
    """Probe in a thread of its own (scheduling policy is per thread): into SCHED_IDLE and out again."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            ok.append(True)
        except (AttributeError, OSError):
            pass

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return bool(ok)


def main() -> None:
    main_thread = threading.get_native_id()
    lock = threading.Lock()
    idle = False
    order: list[str] = []
    arrived = threading.Event()

    def read() -> None:
        nonlocal idle
        order.append(sys.stdin.readline())
        with lock:  # back to normal at once, even while the imports below still run
            if idle:
                os.sched_setscheduler(main_thread, os.SCHED_OTHER, os.sched_param(0))
                idle = False
            arrived.set()

    reader = threading.Thread(target=read, daemon=True)  # started before idling: it keeps normal priority
    reader.start()
    if "--not-idle" not in sys.argv and _can_leave_idle():
        with lock:
            if not arrived.is_set():
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                idle = True

    for name in PRELOAD:
        importlib.import_module(name)

    arrived.wait()
    reader.join()
    if not order[0]:
        sys.exit(0)  # the pool closed without using this spare
    request = json.loads(order[0])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["flask", "--app", "wsgi", "worker"]
    importlib.import_module("flask.cli").main()


if __name__ == "__main__":
    main()
