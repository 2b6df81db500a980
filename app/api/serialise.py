"""Turn domain objects into the API's JSON; IncidentRead and friends in incidents/schemas document the shapes."""

from datetime import UTC, datetime
from typing import Any

from incidents import lifecycle
from incidents.enums import Status
from incidents.models import Comment, Event, Incident, Participant, System
from incidents.queries import art9_assessment


def ts(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with an explicit offset and a fixed width."""
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value is not None else None


def system(s: System | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "code": s.code,
        "name": s.name,
        "owner": s.owner.code if s.owner else None,
        "operator": s.operator.code if s.operator else None,
        "security_level": s.security_level,
        "national_important": s.national_important,
        "domains": list(s.domains or []),
        "public_ips": list(s.public_ips or []),
        "security_provider": s.security_provider,
        "connectivity_provider": s.connectivity_provider,
        "os": s.os,
        "services": s.services,
    }


def participant(p: Participant) -> dict[str, Any]:
    return {
        "id": p.id,
        "user": p.user.username if p.user else None,
        "organisation": p.organisation.code if p.organisation else None,
        "role": p.role,
        "added_at": ts(p.added_at),
    }


def incident(i: Incident, occurrences: int) -> dict[str, Any]:
    return {
        "id": i.id,
        "ref": i.ref,
        "title": i.title,
        "description": i.description,
        "category": str(i.category),
        "priority": str(i.priority),
        "status": str(i.status),
        "class": str(i.incident_class),
        "tlp": str(i.tlp),
        "exercise": i.exercise,
        "detected_at": ts(i.detected_at),
        "detection_method": i.detection_method,
        "detection_detail": i.detection_detail,
        "affected_system": system(i.affected_system),
        "reporter": {
            "name": i.reporter_name,
            "organisation": i.reporter_organisation,
            "address": i.reporter_address,
            "phone": i.reporter_phone,
            "email": i.reporter_email,
        },
        "contact": {
            "name": i.contact_name,
            "position": i.contact_position,
            "phone": i.contact_phone,
            "email": i.contact_email,
        },
        "handled_at_report": i.handled_at_report,
        "notified_parties": list(i.notified_parties or []),
        "system_os": i.system_os,
        "system_services": i.system_services,
        "security_measures": i.security_measures,
        "support_requested": i.support_requested,
        "beyond_capacity": i.beyond_capacity,
        "classification": classification(i),
        "resolution": i.resolution,
        "merged_into": i.merged_into.ref if i.merged_into_id and i.merged_into else None,
        "dedup_key": i.dedup_key,
        "occurrence_count": occurrences,
        "observables": [{"id": o.id, "type": o.type, "value": o.value, "hashes": o.hashes} for o in i.observables],
        "participants": [participant(p) for p in i.participants],
        "allowed_transitions": [s.value for s in lifecycle.allowed_targets(Status(i.status))],
        "created_by": i.created_by.username,
        "assignee": i.assignee.username if i.assignee else None,
        "created_at": ts(i.created_at),
        "updated_at": ts(i.updated_at),
        "status_changed_at": ts(i.status_changed_at),
        "contained_at": ts(i.contained_at),
        "resolved_at": ts(i.resolved_at),
        "closed_at": ts(i.closed_at),
    }


def classification(i: Incident) -> dict[str, Any]:
    return {
        "class": str(i.incident_class),
        **art9_assessment(i),
        "proposed_by": i.class_proposed_by.username if i.class_proposed_by else None,
        "proposed_at": ts(i.class_proposed_at),
        "proposal_note": i.class_proposal_note,
        "decided_by": i.class_decided_by.username if i.class_decided_by else None,
        "decided_at": ts(i.class_decided_at),
        "decision_note": i.class_decision_note,
    }


def event(e: Event) -> dict[str, Any]:
    return {"id": e.id, "kind": e.kind, "actor": e.actor, "at": ts(e.at), "note": e.note, "data": e.data}


def comment(c: Comment) -> dict[str, Any]:
    return {
        "id": c.id,
        "author": c.author.username,
        "body": c.body,
        "tlp": str(c.tlp),
        "created_at": ts(c.created_at),
        "updated_at": ts(c.updated_at),
        "edits": [{"body": r.body, "tlp": r.tlp, "edited_at": ts(r.edited_at)} for r in c.revisions],
    }
