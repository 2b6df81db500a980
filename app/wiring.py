"""Everything a process registers, in one place: event listeners, at-commit writers, job kinds and channels.

The app factory calls `install(app)`, and the worker runs inside that app, so the web and the worker wire the
same things. No module registers anything when it is imported. The registries themselves are the process's
(the domain cannot hold an app); what depends on an app's configuration rides on its sessions instead
(`session_info`), so two apps in one process (the tests build many) each keep their own settings.
"""

from typing import Any

from flask import Flask

from app import deadline_paging
from incidents import deadlines, events, jobs

# The app's extension holding what its session factories put in `session.info` (the worker's too).
SESSION_INFO = "ucsc.session_info"


def install(app: Flask) -> None:
    """Register the listeners, at-commit writers, job kinds and channels; configure the app's sessions."""
    config = app.config

    # Rows kept for the commit are written then, events first (incidents/events.py).
    events.install()

    # Listeners on every recorded event, in this order, inside the recording transaction.
    events.add_listener(deadlines.on_events)

    # Job kinds the worker runs: name, handler, attempts before `dead`, lease.
    jobs.register(deadlines.CHECK, deadlines.run_check, max_attempts=8)

    # What the domain reads from a session rather than from a process-wide global.
    info: dict[str, Any] = {deadlines.SETTINGS: deadline_paging.settings(config)}
    app.extensions[SESSION_INFO] = info
    maker = app.extensions["ucsc.sessionmaker"]
    maker.configure(info={**maker.kw.get("info", {}), **info})


def session_info(app: Flask) -> dict[str, Any]:
    """What every session of `app` carries in `session.info` (a session factory of its own starts with it)."""
    return dict(app.extensions[SESSION_INFO])
