"""Reacting to incident changes: which playbooks start, always in the worker.

A new incident's playbooks start in its filing's follow-up job (`start_filed`, a step of incidents/followup.py).
A later change that may start or stop some (`on_events`, a listener on the incident feed that app/wiring.py adds)
writes only a `playbooks.evaluate` job inside the transaction that records it, so the trigger commits with the
change or not at all, and no write transaction of the web carries playbook work (a failing playbook cannot cost a
filing). The worker starts the playbooks, ending the job in the same transaction as the runs it starts."""

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.enums import TERMINAL_STATUSES
from incidents.events import savepoint
from incidents.uow import in_transaction
from playbooks import runs
from playbooks.conditions import matches
from playbooks.models import PAGE_OPEN, RUN_RUNNING, RUN_WAITING, Page, PlaybookRun
from playbooks.settings import Settings

log = logging.getLogger("ucsc.playbooks")
# A repeat counts on its incident's open pages: a Core statement built once, as a repeat is the cheapest filing,
# on the table's own columns: the mapped attributes would make it an ORM-enabled UPDATE, which first looks for
# pages to synchronise in a session that holds none (13 % of a repeat's CPU, bench/sources.py).
_PAGES = Page.__table__
_COUNT_OCCURRENCE = (
    update(_PAGES)
    .where(_PAGES.c.incident_id == bindparam("of_incident"), _PAGES.c.state == PAGE_OPEN)
    .values(occurrences=_PAGES.c.occurrences + bindparam("n"))
)

# Job kind: start (or stop) an incident's playbooks after a change.
EVALUATE = "playbooks.evaluate"
# Incident fields whose change can make new playbooks match.
TRIGGER_FIELDS = frozenset({"category", "priority", "tlp", "exercise", "affected_system"})


def on_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Queue playbook work for incident changes in the writing transaction: nothing is lost if we crash after it."""
    rows = []
    occurrences: Counter[int] = Counter()
    for ev in events:
        kind, incident_id = ev.get("kind"), ev.get("incident_id")
        if incident_id is None or not str(kind).startswith("incident."):
            continue
        data = ev.get("data") or {}
        if (kind == "incident.updated" and TRIGGER_FIELDS & set(data.get("changes") or {})) or (
            kind == "incident.classification_decided"
        ):
            rows.append(jobs.job_values(EVALUATE, {"incident_id": incident_id}, incident_id=incident_id))
        elif kind == "incident.occurrence":
            occurrences[incident_id] += 1
        elif kind == "incident.status_changed" and data.get("to") in {s.value for s in TERMINAL_STATUSES}:
            rows.append(jobs.job_values(EVALUATE, {"incident_id": incident_id}, incident_id=incident_id))
    if occurrences:
        # A repeat of the same dedup_key updates the open pages instead of paging again (alerts filed together:
        # one statement for all their incidents).
        counted = [{"of_incident": incident_id, "n": n} for incident_id, n in occurrences.items()]
        session.connection().execute(_COUNT_OCCURRENCE, counted)
    jobs.enqueue_many(session, rows)


def start_filed(session: Session, incident_ids: Sequence[int], quiet: bool, config: dict[str, Any]) -> None:
    """The playbooks of newly filed incidents: a step of the filing's follow-up job (incidents/followup.py), in its
    transaction. A filing held by a maintenance window (`quiet`) is stored and shown, but pages nobody. Each
    incident's start is a savepoint: one that fails leaves the others started, and retries on its own job."""
    if quiet:
        return
    settings = Settings.from_config(config)
    for incident_id in incident_ids:
        try:
            with savepoint(session):
                evaluate(session, incident_id, settings)
        except Exception:
            log.exception("playbooks of incident %s did not start with its filing; retrying on their own", incident_id)
            key = f"{EVALUATE}:{incident_id}:created"
            jobs.enqueue_many(session, [jobs.job_values(EVALUATE, {"incident_id": incident_id}, key=key,
                                                        incident_id=incident_id)])  # fmt: skip


def evaluate_incident(*, session: Session, incident_id: int, settings: Settings) -> list[PlaybookRun]:
    """Start the automatic playbooks that now match the incident (each once), or stop its runs if it ended."""
    return in_transaction(session, lambda: evaluate(session, incident_id, settings))


def evaluate(session: Session, incident_id: int, settings: Settings) -> list[PlaybookRun]:
    """`evaluate_incident` inside the caller's transaction."""
    incident = runs.locked_incident(session, incident_id)
    if incident is None:
        return []
    if incident.status in TERMINAL_STATUSES:
        for run in session.scalars(
            select(PlaybookRun).where(
                PlaybookRun.incident_id == incident.id, PlaybookRun.state.in_((RUN_RUNNING, RUN_WAITING))
            )
        ):
            runs.stop(session, run, incident, None, f"incident {incident.status}")
        return []
    started = []
    for version, spec in runs.newest_for_starting(session):
        if spec.get("trigger", "auto") != "auto" or not matches(spec.get("when"), incident):
            continue
        key = f"{incident.id}:{version.name}:auto"
        if session.scalar(select(PlaybookRun.id).where(PlaybookRun.key == key)) is not None:
            continue  # running ones continue; a playbook starts once per incident on its own
        started.append(runs.start(session, incident, version, key, "auto", None, settings, spec))
    return started


def evaluate_job(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """The `playbooks.evaluate` job: an incident changed in a way that may start or stop playbooks."""
    settings = Settings.from_config(ctx.config)

    def start() -> None:
        # The runs and the job's end commit together: a crash before the commit leaves the job to be claimed
        # again, and the run keys make a start that did commit count once.
        evaluate(session, job.payload["incident_id"], settings)
        jobs.finish(session, job)

    with ctx.sessions() as session:
        in_transaction(session, start)
