"""Who takes part in an incident: users and organisations, which widens who may see amber+strict and red."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.access import Actor
from incidents.base import utcnow
from incidents.enums import ParticipantRole
from incidents.errors import Conflict, FieldError, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.models import Participant, User
from incidents.policy import Capability, require
from incidents.queries import locked_incident
from incidents.schemas.incidents import ParticipantIn
from incidents.systems import organisation_by_code
from incidents.uow import in_transaction


def resolve_participants(
    session: Session, wanted: Sequence[ParticipantIn], actor: Actor, standing_body_id: int | None, prefix: str
) -> list[tuple[int | None, int | None, str]]:
    """The creator, their organisation and the standing body take part in every incident they file."""
    rows: dict[tuple[str, int], str] = {("user", actor.user_id): ParticipantRole.REPORTER.value}
    rows[("org", actor.organisation_id)] = ParticipantRole.REPORTER.value
    if standing_body_id is not None:
        rows[("org", standing_body_id)] = ParticipantRole.LEAD.value
    errors = []
    for n, p in enumerate(wanted):
        try:
            key = participant_key(session, p, f"{prefix}participants[{n}]")
        except ValidationFailed as exc:
            errors.extend(exc.errors)
            continue
        rows[key] = p.role.value
    if errors:
        raise ValidationFailed("unknown participants", errors=errors)
    return [(i if k == "user" else None, i if k == "org" else None, r) for (k, i), r in rows.items()]


def participant_key(session: Session, p: ParticipantIn, field_name: str) -> tuple[str, int]:
    prefix = f"{field_name}." if field_name else ""  # "" for a participant posted on its own
    if p.user is not None:
        user_id = session.scalar(select(User.id).where(User.username == p.user, User.active.is_(True)))
        if user_id is None:
            raise ValidationFailed("unknown user", errors=[FieldError(f"{prefix}user", f"no user {p.user!r}")])
        return ("user", user_id)
    return ("org", organisation_by_code(session, p.organisation or "", f"{prefix}organisation").id)


def add_participant(*, session: Session, incident_id: int | str, data: ParticipantIn, actor: Actor) -> Participant:
    """Name a user or an organisation as taking part; this widens who may see amber+strict and red."""
    require(actor, Capability.MANAGE_PARTICIPANTS, "only operators and admins change participants")

    def work() -> Participant:
        incident = locked_incident(session, actor, incident_id)
        kind, ident = participant_key(session, data, "")
        existing = next(
            (p for p in incident.participants if (p.user_id if kind == "user" else p.organisation_id) == ident), None
        )
        if existing is not None:
            raise Conflict(
                "already a participant",
                errors=[FieldError(kind if kind == "user" else "organisation", "already taking part")],
            )
        now = utcnow()
        participant = Participant(
            user_id=ident if kind == "user" else None,
            organisation_id=ident if kind == "org" else None,
            role=data.role.value,
            added_by_id=actor.user_id,
            added_at=now,
        )
        incident.participants.append(participant)
        incident.updated_at = now
        session.flush()
        record_event(
            session, kind="incident.participant_added", actor=actor, incident=incident, at=now,
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "user": data.user,
                "organisation": data.organisation,
                "role": data.role.value,
            },
        )  # fmt: skip
        return participant

    return in_transaction(session, work)


def remove_participant(*, session: Session, incident_id: int | str, participant_id: int, actor: Actor) -> None:
    require(actor, Capability.MANAGE_PARTICIPANTS, "only operators and admins change participants")

    def work() -> None:
        incident = locked_incident(session, actor, incident_id)
        participant = next((p for p in incident.participants if p.id == participant_id), None)
        if participant is None:
            raise NotFound(f"no participant {participant_id}")
        label = {"user": participant.user.username if participant.user else None,
                 "organisation": participant.organisation.code if participant.organisation else None}  # fmt: skip
        incident.participants.remove(participant)
        incident.updated_at = utcnow()
        record_event(
            session, kind="incident.participant_removed", actor=actor, incident=incident,
            data={"ref": incident.ref, "status": str(incident.status), **label},
        )  # fmt: skip

    in_transaction(session, work)
