"""An incident's owner (assignee): the account that answers for its progress, set by the standing body."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.access import Actor, can_see
from incidents.base import utcnow
from incidents.enums import Role
from incidents.errors import FieldError, ValidationFailed
from incidents.events import record_event
from incidents.models import Incident, User
from incidents.policy import Capability, allows, require, roles_with
from incidents.queries import get_incident
from incidents.uow import in_transaction


def _as_actor(user: User) -> Actor:
    return Actor(user_id=user.id, username=user.username, role=Role(user.role), organisation_id=user.organisation_id)


def may_own(session: Session, user: User, incident_id: int) -> str | None:
    """Why `user` cannot own the incident (None when they can): owners work it, so they must edit and see it."""
    if not user.active or user.is_service:
        return "not an active person's account"
    if not allows(user, Capability.EDIT_INCIDENT):
        return "this account's role does not work on incidents"
    if not can_see(session, _as_actor(user), incident_id):
        return "this account may not see the incident"
    return None


def check_assignee(session: Session, actor: Actor, incident: Incident, username: str | None) -> User | None:
    """The account `username` names, if `actor` may assign it to `incident`; refusals raise (nothing is written)."""
    require(actor, Capability.ASSIGN_INCIDENT, "only the standing body (operators) or an admin assigns an owner")
    if not username:
        return None
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise ValidationFailed("unknown account", errors=[FieldError("assignee", "no such account")])
    why = may_own(session, user, incident.id)
    if why is not None:
        raise ValidationFailed(why, errors=[FieldError("assignee", why)])
    return user


def assign(*, session: Session, incident_id: int | str, assignee: str | None, actor: Actor) -> Incident:
    """Make `assignee` (a username; None or "" to clear) the incident's owner; one `incident.assigned` event."""
    require(actor, Capability.ASSIGN_INCIDENT, "only the standing body (operators) or an admin assigns an owner")

    def work() -> Incident:
        incident = get_incident(session, actor, incident_id, for_update=True)
        set_owner(session, actor, incident, assignee)
        return incident

    return in_transaction(session, work)


def set_owner(session: Session, actor: Actor, incident: Incident, assignee: str | None) -> None:
    """`assign` inside the caller's write transaction, on an incident it holds locked."""
    user = check_assignee(session, actor, incident, assignee)
    new_id = user.id if user else None
    if incident.assignee_id == new_id:
        return
    before = incident.assignee.username if incident.assignee else None
    incident.assignee_id = new_id
    incident.updated_at = utcnow()
    record_event(
        session,
        kind="incident.assigned",
        actor=actor,
        incident=incident,
        data={
            "ref": incident.ref,
            "status": str(incident.status),
            "from": before,
            "to": user.username if user else None,
        },
    )
    session.flush()
    session.refresh(incident, ["assignee"])


def candidates(session: Session, actor: Actor, incident: Incident) -> list[User]:
    """Accounts the incident could be assigned to, for a form's choices (names in username order)."""
    if not allows(actor, Capability.ASSIGN_INCIDENT):
        return []
    editors = [r.value for r in roles_with(Capability.EDIT_INCIDENT)]
    users = session.scalars(
        select(User)
        .where(User.active.is_(True), User.is_service.is_(False), User.role.in_(editors))
        .order_by(User.username)
        .limit(200)
    )
    return [u for u in users if can_see(session, _as_actor(u), incident.id)]
