"""What playbooks and paging write on an incident's timeline: every event carries the incident's ref and status."""

from typing import Any

from sqlalchemy.orm import Session

from incidents.access import Actor
from incidents.events import record_event
from incidents.models import Incident


def record(session: Session, kind: str, incident: Incident, actor: Actor | None, note: str | None = None,
           **data: Any) -> None:  # fmt: skip
    """Record `kind` on `incident`'s timeline in the caller's transaction."""
    record_event(
        session,
        kind=kind,
        actor=actor,
        incident=incident,
        note=note,
        data={"ref": incident.ref, "status": str(incident.status), **data},
    )
