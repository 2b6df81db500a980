"""Changing a filed incident: its fields, observables, status (the procedure) and class."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents import assignment, lifecycle
from incidents.access import Actor, check_tlp_change, may_edit
from incidents.base import utcnow
from incidents.enums import TERMINAL_STATUSES, IncidentClass, Status
from incidents.errors import Conflict, FieldError, Forbidden, NotFound, TransitionNotAllowed, ValidationFailed
from incidents.events import record_event
from incidents.fields import apply_fields, search_text, unique_observables
from incidents.filing import dedup_scopes
from incidents.models import Incident, Observable
from incidents.policy import Capability, require
from incidents.queries import art9_assessment, get_incident, locked_incident
from incidents.records import Report
from incidents.schemas.incidents import ClassificationIn, IncidentUpdate, TransitionIn
from incidents.schemas.observables import ObservableIn
from incidents.systems import system_by_code
from incidents.uow import in_transaction


def _require_editor(actor: Actor) -> None:
    if not may_edit(actor):
        raise Forbidden(f"the role {actor.role} may not change incidents")


def update_incident(*, session: Session, incident_id: int | str, data: IncidentUpdate, actor: Actor) -> Incident:
    """Change an incident's fields; one `incident.updated` event lists what changed, and a new owner one
    `incident.assigned`: all in one transaction, so a refused owner leaves the other fields unchanged."""
    _require_editor(actor)

    def work() -> Incident:
        incident = locked_incident(session, actor, incident_id)
        fields = set(data.model_fields_set)
        if "assignee" in fields:
            fields.discard("assignee")
            assignment.set_owner(session, actor, incident, data.assignee)
        before = str(incident.tlp)
        if "tlp" in fields:
            check_tlp_change(actor, before, data.tlp)
        system_change = None
        if "affected_system" in fields:
            fields.discard("affected_system")
            system = system_by_code(session, data.affected_system) if data.affected_system else None
            if incident.affected_system_id != (system.id if system else None):
                system_change = [
                    incident.affected_system.code if incident.affected_system else None,
                    system.code if system else None,
                ]
                incident.affected_system = system
        changes = apply_fields(incident, data, fields)
        if system_change:
            changes["affected_system"] = system_change
        if not changes:
            return incident
        now = utcnow()
        incident.updated_at = now
        incident.search_text = search_text(incident, incident.observables, incident.affected_system)
        record_event(
            session,
            kind="incident.updated",
            actor=actor,
            incident=incident,
            at=now,
            data={"ref": incident.ref, "status": str(incident.status), "changes": changes},
            tlp=before,  # the old values were written under the old level
        )
        return incident

    return in_transaction(session, work)


def add_observables(
    *, session: Session, incident_id: int | str, observables: Sequence[ObservableIn], actor: Actor
) -> Incident:
    """Add observables an incident did not have yet."""
    _require_editor(actor)

    def work() -> Incident:
        incident = locked_incident(session, actor, incident_id)
        have = {(o.type, o.value) for o in incident.observables}
        now = utcnow()
        added = []
        for obs in unique_observables(observables):
            if (obs.type, obs.value) not in have:
                incident.observables.append(
                    Observable(type=obs.type, value=obs.value, hashes=obs.hashes, created_at=now)
                )
                added.append({"type": str(obs.type), "value": obs.value})
        if added:
            incident.updated_at = now
            incident.search_text = search_text(incident, incident.observables, incident.affected_system)
            record_event(
                session, kind="incident.observables_added", actor=actor, incident=incident, at=now,
                data={"ref": incident.ref, "status": str(incident.status), "observables": added},
            )  # fmt: skip
        return incident

    return in_transaction(session, work)


def transition(*, session: Session, incident_id: int | str, data: TransitionIn, actor: Actor) -> Incident:
    """Move an incident along the procedure; 409 lists the allowed targets."""
    require(actor, Capability.MOVE_INCIDENT, f"the role {actor.role} may not move incidents")

    def work() -> Incident:
        incident = locked_incident(session, actor, incident_id)
        current = Status(incident.status)
        if not lifecycle.is_allowed(current, data.to):
            allowed = [s.value for s in lifecycle.allowed_targets(current)]
            raise TransitionNotAllowed(
                f"{current} → {data.to} is not allowed; allowed: {', '.join(allowed) or 'none'}",
                errors=[FieldError("to", f"not allowed from {current}")],
                allowed=allowed,
                current=current.value,
            )
        now = utcnow()
        extra: dict[str, Any] = {}
        if data.to is Status.CLOSED:
            summary = data.resolution or incident.resolution
            if not summary:
                raise ValidationFailed(
                    "closing requires a resolution summary",
                    errors=[FieldError("resolution", "required to close an incident")],
                )
            # TT 20 Art. 9.2.b: an incident counts as resolved only once its end report (Form 04) exists.
            if session.scalar(select(Report.id).where(Report.incident_id == incident.id, Report.kind == "end")) is None:
                raise ValidationFailed(
                    "closing requires the end report (Form 04)",
                    errors=[FieldError("end_report", "create the end report (Form 04) before closing")],
                )
            incident.resolution = summary
            incident.closed_at = now
        elif data.resolution:
            incident.resolution = data.resolution
        if data.to is Status.MERGED:
            target = _merge_target(session, actor, incident, data.merged_into)
            incident.merged_into_id = target.id
            extra["merged_into"] = target.ref
        elif data.merged_into:
            raise ValidationFailed(
                "merged_into only goes with to=merged", errors=[FieldError("merged_into", "only allowed when merging")]
            )
        if data.to is Status.ERADICATION and incident.contained_at is None:
            incident.contained_at = now
        if data.to is Status.REVIEW and incident.resolved_at is None:
            incident.resolved_at = now
        if data.to in TERMINAL_STATUSES:
            incident.open_dedup_key = None
        elif current is Status.CLOSED and incident.dedup_key:
            scopes = dedup_scopes(incident.created_by.organisation_id, incident.created_by_id, incident.dedup_key)
            taken = set(session.scalars(select(Incident.open_dedup_key).where(Incident.open_dedup_key.in_(scopes))))
            incident.open_dedup_key = next((k for k in scopes if k not in taken), None)
        if current is Status.CLOSED:
            incident.closed_at = None  # reopened: open again, whether or not it carries a dedup_key
        incident.status = data.to
        incident.status_changed_at = now
        incident.updated_at = now
        record_event(
            session,
            kind="incident.status_changed",
            actor=actor,
            incident=incident,
            note=data.note,
            at=now,
            data={"ref": incident.ref, "status": data.to.value, "from": current.value, "to": data.to.value, **extra},
        )
        return incident

    return in_transaction(session, work)


def _merge_target(session: Session, actor: Actor, incident: Incident, ref: str | None) -> Incident:
    if not ref:
        raise ValidationFailed(
            "merging needs the incident it duplicates", errors=[FieldError("merged_into", "required to merge")]
        )
    try:
        target = get_incident(session, actor, ref)
    except NotFound:
        raise ValidationFailed("unknown incident", errors=[FieldError("merged_into", f"no incident {ref}")]) from None
    if target.id == incident.id or target.status == Status.MERGED:
        raise ValidationFailed(
            "bad merge target", errors=[FieldError("merged_into", "cannot merge into itself or a merged incident")]
        )
    return target


def classify(*, session: Session, incident_id: int | str, data: ClassificationIn, actor: Actor) -> Incident:
    """Operators propose the serious class; only the committee or an admin decides it."""

    def work() -> Incident:
        incident = locked_incident(session, actor, incident_id)
        now = utcnow()
        if data.conditions is not None:
            incident.serious_conditions = [c.value for c in data.conditions]
        if data.beyond_capacity is not None:
            incident.beyond_capacity = data.beyond_capacity
        if data.action == "propose":
            require(actor, Capability.PROPOSE_CLASS, f"the role {actor.role} may not propose a class")
            if data.incident_class is not IncidentClass.SERIOUS:
                raise ValidationFailed(
                    "only the serious class is proposed", errors=[FieldError("class", "propose serious")]
                )
            if incident.incident_class == IncidentClass.SERIOUS:
                raise Conflict("the incident is already serious")
            incident.class_proposed_by_id = actor.user_id
            incident.class_proposed_at = now
            incident.class_proposal_note = data.note
            kind = "incident.classification_proposed"
        else:
            require(actor, Capability.DECIDE_CLASS, "only the committee or an admin decides the class")
            incident.incident_class = data.incident_class
            incident.class_decided_by_id = actor.user_id
            incident.class_decided_at = now
            incident.class_decision_note = data.note
            kind = "incident.classification_decided"
        incident.updated_at = now
        record_event(
            session,
            kind=kind,
            actor=actor,
            incident=incident,
            note=data.note,
            at=now,
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "class": data.incident_class.value,
                "assessment": art9_assessment(incident),
            },
        )
        return incident

    return in_transaction(session, work)
