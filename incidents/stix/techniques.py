"""MITRE ATT&CK techniques of an incident: events on its timeline, exported as attack-pattern objects."""

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from incidents.access import Actor, may_edit
from incidents.base import utcnow
from incidents.errors import FieldError, Forbidden, ValidationFailed
from incidents.events import record_event
from incidents.models import Event, Incident
from incidents.queries import get_incident
from incidents.stix import mapping
from incidents.uow import in_transaction, transaction_memo

TECHNIQUES_ADDED = "incident.attack_techniques_added"
MAX_TECHNIQUES = 100


# Techniques each recent incident is known to have had at a commit, per database: an incident's techniques only
# ever grow (they are events), so an alert naming none beyond them has nothing to add, and its incident's timeline
# need not be read again (a Wazuh rule repeats its techniques with every alert). Keyed by id and ref, which a
# database never reuses.
_KNOWN: "weakref.WeakKeyDictionary[Any, OrderedDict[tuple[int, str], frozenset[str]]]" = weakref.WeakKeyDictionary()
_KNOWN_MAX = 4096


def nothing_to_add(session: Session, incident: Incident, techniques: Sequence[str]) -> bool:
    """True when `incident` is known to have every one of `techniques` already (False: look)."""
    known = _KNOWN.get(session.get_bind(), {}).get((incident.id, incident.ref))
    return known is not None and known.union(_added_here(session, incident.id)).issuperset(techniques)


def _added_here(session: Session, incident_id: int) -> list[str]:
    """The techniques this transaction gave the incident: their events are written at its commit, so reading the
    timeline does not show them (alerts filed in one shared transaction would each add them again)."""
    return transaction_memo(session, TECHNIQUES_ADDED).setdefault(incident_id, [])


def _remember(session: Session, incident: Incident, have: Sequence[str]) -> None:
    # `have` was read from committed events (this transaction's wait in session.info until its commit), so it stays
    # true whether or not this transaction commits.
    known = _KNOWN.setdefault(session.get_bind(), OrderedDict())
    key = (incident.id, incident.ref)
    known[key] = frozenset(have)
    known.move_to_end(key)
    while len(known) > _KNOWN_MAX:
        known.popitem(last=False)


def attack_techniques(session: Session, incident_id: int) -> tuple[str, ...]:
    """The MITRE ATT&CK technique ids given to an incident, first added first: its timeline is their record."""
    rows = session.scalars(_techniques_events(), {"incident_id": incident_id})
    return tuple(dict.fromkeys(t for data in rows for t in (data or {}).get("techniques", [])))


@cache
def _techniques_events() -> Any:
    # Built once: every alert that names techniques (Wazuh's rule.mitre.id) asks what its incident has.
    return (
        select(Event.data)
        .where(Event.incident_id == bindparam("incident_id"), Event.kind == TECHNIQUES_ADDED)
        .order_by(Event.id)
    )


def add_attack_techniques(
    session: Session, actor: Actor, incident_ref: int | str, techniques: Sequence[str]
) -> tuple[Incident, tuple[str, ...]]:
    """Give an incident ATT&CK technique ids (an event on its timeline; the projector maps them to
    attack-pattern objects and `incident uses attack-pattern`). Ids it has already are ignored."""
    if not may_edit(actor):
        raise Forbidden(f"the role {actor.role} may not change incidents")
    bad = [f"techniques[{i}]" for i, t in enumerate(techniques) if not mapping.ATTACK_TECHNIQUE.fullmatch(t)]
    if bad:
        raise ValidationFailed(
            "not ATT&CK technique ids", errors=[FieldError(f, "like T1566 or T1566.001") for f in bad]
        )

    def work() -> tuple[Incident, tuple[str, ...]]:
        incident = get_incident(session, actor, incident_ref, for_update=True)
        return incident, record_attack_techniques(session, actor, incident, techniques)

    return in_transaction(session, work)


def record_attack_techniques(
    session: Session, actor: Actor | None, incident: Incident, techniques: Sequence[str]
) -> tuple[str, ...]:
    """Add valid technique ids to `incident` inside the caller's transaction (its caller decided who may)."""
    committed = attack_techniques(session, incident.id)
    _remember(session, incident, committed)
    here = _added_here(session, incident.id)
    have = (*committed, *(t for t in here if t not in committed))
    added = [t for t in dict.fromkeys(techniques) if t not in have]
    if len(have) + len(added) > MAX_TECHNIQUES:
        raise ValidationFailed(
            "too many techniques", errors=[FieldError("techniques", f"at most {MAX_TECHNIQUES} per incident")]
        )
    if added:
        here.extend(added)
        incident.updated_at = utcnow()
        record_event(
            session, kind=TECHNIQUES_ADDED, actor=actor, incident=incident,
            data={"ref": incident.ref, "status": str(incident.status), "techniques": added},
        )  # fmt: skip
    return (*have, *added)
