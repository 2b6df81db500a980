"""Helpers of the paging tests: the shipped playbooks and demo directory loaded, contacts, incidents, the jobs."""

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from incidents import followup, jobs
from incidents.models import Event, Job
from playbooks import runs, seed, triggers
from playbooks.models import Contact, Page
from playbooks.settings import Settings
from tests.conftest import incident_payload


def load_shipped(app: Flask, *, demo: bool = True) -> None:
    """What `init-db` loads beside the roster: the demo directory and the shipped playbooks."""
    with app.app_context():
        session = db.session()
        with session.begin():
            if demo:
                seed.load_demo_directory(session)
            _, errors = seed.load_playbooks(session)
            assert errors == [], errors


def settings(app: Flask) -> Settings:
    return Settings.from_config(app.config)


def run_jobs(
    app: Flask, kinds: tuple[str, ...] = (followup.FILED, triggers.EVALUATE, runs.CONTINUE), *, send: bool = False
) -> int:
    """Run due jobs of `kinds` in this process through their real handlers (the worker's code path, no thread);
    with `send`, through the channels the configuration names (real SMTP, real HTTP)."""
    from notifiers.registry import build_notifiers

    ran = 0
    with app.app_context():
        notifiers = build_notifiers(app.config) if send else {}
        ctx = jobs.JobContext(app.extensions["ucsc.sessionmaker"], dict(app.config), notifiers)
        session = db.session()
        session.rollback()
        while True:
            claimed = jobs.claim(session, "test", 50, kinds)
            if not claimed:
                return ran
            for job in claimed:
                jobs.KINDS[job.kind].handler(ctx, job)
                jobs.complete(session, job, "test")
                ran += 1


def file_followed_up(client: FlaskClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """File one incident by the API, then run its follow-up job as the worker would after the commit: it starts
    the deadline clocks and queues the receipts. The filing's answer."""
    r = client.post("/api/v1/incidents", json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    assert run_jobs(client.application, (followup.FILED,)) == 1
    return r.json


def events(session: Session, kind: str | None = None, incident_id: int | None = None) -> list[Event]:
    session.rollback()
    stmt = select(Event).order_by(Event.id)
    if kind:
        stmt = stmt.where(Event.kind == kind)
    if incident_id is not None:
        stmt = stmt.where(Event.incident_id == incident_id)
    return list(session.scalars(stmt))


def pages(session: Session, incident_id: int | None = None) -> list[Page]:
    session.rollback()
    stmt = select(Page).order_by(Page.id)
    if incident_id is not None:
        stmt = stmt.where(Page.incident_id == incident_id)
    return list(session.scalars(stmt))


def queued(session: Session, kind: str) -> list[Job]:
    session.rollback()
    return list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def add_contact(app: Flask, **fields: Any) -> int:
    """A contact (organisation code in `organisation`), confirmed; its id."""
    [contact_id] = add_contacts(app, [fields])
    return contact_id


def add_contacts(app: Flask, rows: list[dict[str, Any]]) -> list[int]:
    """Contacts as `add_contact` makes them, in one transaction; their ids."""
    from incidents.models import Organisation

    with app.app_context():
        session = db.session()
        with session.begin():
            orgs = {o.code: o.id for o in session.scalars(select(Organisation))}
            contacts = []
            for row in rows:
                fields = dict(row)
                organisation_id = orgs[fields.pop("organisation", "dic")]
                defaults = {"language": "vi", "active": True, "roles": []}
                contacts.append(Contact(organisation_id=organisation_id, **{**defaults, **fields}))
            session.add_all(contacts)
            session.flush()
            return [c.id for c in contacts]
