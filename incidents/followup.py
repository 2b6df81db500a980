"""What a filing leaves to the worker: one durable job per filing, whatever its size.

A filing's transaction writes the incidents, their rows, their events and one `incidents.filed` job that names
them, and nothing else: the caller's `201` does not wait for bookkeeping it does not need. The worker runs the
job set-based, in one transaction that also ends the job and takes along the filings queued behind it (a storm of
single filings is followed up in batches, not one write transaction each): the deadline clocks of every incident
(one INSERT), their receipts (one INSERT of jobs), then the steps other packages register (`add_step`, from
app/wiring.py: the playbooks). A crash before that commit leaves the job to be claimed again, and nothing it
wrote stays; a step that fails for one incident is that step's to isolate (playbooks retry it on a job of their
own), so the clocks of the other incidents in a batch still start.
"""

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents import deadlines, jobs, receipts
from incidents.models import Incident
from incidents.uow import in_transaction

FILED = "incidents.filed"

# A step gets the session, the incidents' ids (locked, in id order), whether the filing pages nobody (an alert
# held by a maintenance window) and the worker's configuration.
Step = Callable[[Session, Sequence[int], bool, dict[str, Any]], None]

_STEPS: list[Step] = []


def add_step(step: Step) -> None:
    """Run `step` for every filing the worker follows up, after the clocks and receipts (app/wiring.py)."""
    if step not in _STEPS:
        _STEPS.append(step)


def enqueue(
    session: Session,
    incident_ids: Sequence[int],
    *,
    token_id: int | None,
    receipts_by_email: bool,
    quiet: bool,
    each: bool = False,
) -> None:
    """The filing's one job, in its transaction; with `each`, one job per incident (filings that shared a
    transaction follow up as they would alone: the worker takes JOB_BATCH of them at a time, not JOB_BATCH
    transactions' worth, and a transaction holding SQLite's write lock that long would hold the web back)."""
    if not incident_ids:
        return
    settings = {"token_id": token_id, "receipts_by_email": receipts_by_email, "quiet": quiet}
    groups = [[i] for i in incident_ids] if each else [list(incident_ids)]
    rows = [jobs.job_values(FILED, {"incident_ids": ids, **settings}, incident_id=ids[0]) for ids in groups]
    jobs.enqueue_many(session, rows)


def follow_up(session: Session, payloads: Sequence[dict[str, Any]], config: dict[str, Any]) -> None:
    """Start the clocks, queue the receipts and run the registered steps for the incidents of filings (each an
    `enqueue` payload), inside the caller's transaction."""
    ids = sorted({i for payload in payloads for i in payload["incident_ids"]})
    # Locked in id order, as every writer of incidents locks them: a change being made to one of them waits for
    # this commit (or this waits for it), so the clocks start from the incident as it then is.
    rows = session.execute(
        select(Incident.id, Incident.reporter_email).where(Incident.id.in_(ids)).order_by(Incident.id)
        .with_for_update(key_share=True)
    ).all()  # fmt: skip
    emails = {row.id: row.reporter_email for row in rows}
    deadlines.start_filed(session, list(emails))
    # Receipts go by the filing's token and choice, playbooks by whether a window holds it: one call per kind.
    receipt_groups: dict[tuple[int | None, bool], list[tuple[int, str | None]]] = {}
    quiet: dict[bool, list[int]] = {False: [], True: []}
    for payload in payloads:
        found = [i for i in payload["incident_ids"] if i in emails]
        group = (payload.get("token_id"), bool(payload.get("receipts_by_email")))
        receipt_groups.setdefault(group, []).extend((i, emails[i]) for i in found)
        quiet[bool(payload.get("quiet"))] += found
    for (token_id, by_email), created in receipt_groups.items():
        receipts.enqueue_receipts(session, created, token_id=token_id, by_email=by_email)
    for step in _STEPS:
        for held, found in quiet.items():
            if found:
                step(session, sorted(found), held, config)


def run(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """The `incidents.filed` job: its work and its end commit together, with the filings queued behind it (up to
    JOB_BATCH in all), whose organisations, on-call and playbooks the transaction then reads once."""
    more = int(ctx.config.get("JOB_BATCH", 1)) - 1

    def work() -> None:
        follow_up(session, [job.payload, *jobs.absorb(session, job, more)], ctx.config)
        jobs.finish(session, job)

    with ctx.sessions() as session:
        in_transaction(session, work)
