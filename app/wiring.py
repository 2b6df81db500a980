"""Everything a process registers, in one place: event listeners, at-commit writers, job kinds and channels.

The app factory calls `install(app)`; the worker runs inside an app the factory built, so the web and the worker
wire the same things, and no module registers anything when it is imported. The registries (incidents/events.py,
`jobs.KINDS`) belong to the process, since the domain cannot hold an app: an app installed later, as the tests
build many, replaces what an earlier one put there (the paging leases). What the domain reads per app rides on
its sessions instead (`session.info`), so each app's sessions keep their own settings. The channels are the one
list in notifiers/registry.py (the directory and the playbook schema read their names at import); the worker
takes the ones the configuration enables from `channels(app)`.
"""

from typing import Any

from flask import Flask

from app import deadline_paging
from app.telegram import outbox as telegram_outbox
from incidents import audit, deadlines, events, followup, jobs, receipts
from incidents.reporting import periodic
from incidents.stix import push as stix_push
from notifiers import registry
from notifiers.base import Notifier
from playbooks import delivery, focal, paging, runs, steps, triggers

# The app's extension holding what its session factories put in `session.info` (the worker's too).
SESSION_INFO = "ucsc.session_info"


def install(app: Flask) -> None:
    """Register the listeners, at-commit writers and job kinds; configure the app's sessions."""
    config = app.config

    # Rows kept for the commit are written then, events first (incidents/events.py), then these in this order.
    events.install()
    jobs.install()  # a job's run counts once its outcome commits (incidents/jobs.py)
    events.at_commit(audit.PENDING, audit.link_pending)

    # Listeners on every recorded event, in this order (the web's until now: playbooks, then clocks), inside the
    # recording transaction.
    events.add_listener(triggers.on_events)
    events.add_listener(deadlines.on_events)

    # Job kinds the worker runs: name, handler, attempts before `dead`, lease.
    jobs.register(jobs.EXPIRE, jobs.expire_idempotency_keys, max_attempts=3)
    jobs.register(receipts.EMAIL, receipts.send_email_receipt, max_attempts=8)
    jobs.register(receipts.WEBHOOK, receipts.send_webhook_receipt, max_attempts=8)
    jobs.register(audit.CHECKPOINT_JOB, audit.checkpoint_job, max_attempts=3)
    jobs.register(deadlines.CHECK, deadlines.run_check, max_attempts=8)
    jobs.register(periodic.REMINDER, periodic.remind, max_attempts=5)
    jobs.register(stix_push.KIND, stix_push.push, max_attempts=50, lease_seconds=120)
    jobs.register(telegram_outbox.SEND, telegram_outbox.leader_only, max_attempts=25, lease_seconds=30)
    # Paging's: a killed worker's sends are taken up again after PAGING_LEASE_SECONDS. A delivery retries with
    # its own new job per attempt (PAGING_RETRY_*), so its job rarely fails.
    paging_lease = float(config.get("PAGING_LEASE_SECONDS") or 30)
    jobs.register(triggers.EVALUATE, triggers.evaluate_job, max_attempts=10, lease_seconds=paging_lease)
    # A filing's one job: its clocks and receipts, then these steps (incidents/followup.py).
    jobs.register(followup.FILED, followup.run, max_attempts=10, lease_seconds=paging_lease)
    followup.add_step(triggers.start_filed)
    jobs.register(steps.WAIT, runs.wait_job, max_attempts=10, lease_seconds=paging_lease)
    jobs.register(runs.CONTINUE, runs.continue_job, max_attempts=10, lease_seconds=paging_lease)
    jobs.register(delivery.DELIVER, delivery.deliver, max_attempts=3, lease_seconds=paging_lease)
    jobs.register(paging.DIGEST, paging.send_digest, max_attempts=10, lease_seconds=paging_lease)
    jobs.register(focal.FOCAL, focal.focal_check, max_attempts=3, lease_seconds=60)
    jobs.register(focal.CONFIRM, focal.send_confirm_request, max_attempts=8, lease_seconds=30)

    # What the domain reads from a session rather than from a process-wide global: every session of the app,
    # the worker's included, follows its deadline rules and pages the standing body on a warning.
    info: dict[str, Any] = {deadlines.SETTINGS: deadline_paging.settings(config)}
    app.extensions[SESSION_INFO] = info
    app.extensions["ucsc.sessionmaker"].configure(info=dict(info))


def session_info(app: Flask) -> dict[str, Any]:
    """What every session of `app` carries in `session.info` (a session factory of its own starts with it)."""
    return dict(app.extensions[SESSION_INFO])


def channels(app: Flask) -> dict[str, Notifier]:
    """The worker's channels: each one in `registry.CHANNELS` that the configuration enables (the Telegram runtime
    binds `telegram` to its outbox when it starts)."""
    return registry.build_notifiers(app.config)
