"""Who is acting, and which incidents they may see (design: roles, participants and TLP)."""

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true

from incidents.enums import TLP, Role
from incidents.models import Comment, Incident, Occurrence, Participant

# Roles that see every incident their TLP clearance allows; responders see their organisation's.
_DESK_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.COMMITTEE})
_SHARED_TLP = (TLP.CLEAR, TLP.GREEN, TLP.AMBER)


@dataclass(frozen=True)
class Actor:
    """The authenticated caller: a user, acting with a role (a token's role for API callers)."""

    user_id: int
    username: str
    role: Role
    organisation_id: int
    token_id: int | None = None

    @property
    def label(self) -> str:
        return self.username


def _named(actor: Actor, incident_id: ColumnElement) -> ColumnElement[bool]:
    return exists().where(Participant.incident_id == incident_id, Participant.user_id == actor.user_id)


def _org_participates(actor: Actor, incident_id: ColumnElement) -> ColumnElement[bool]:
    return exists().where(
        Participant.incident_id == incident_id, Participant.organisation_id == actor.organisation_id
    )


def _role_allows(actor: Actor) -> ColumnElement[bool]:
    if actor.role in _DESK_ROLES:
        return true()
    if actor.role is Role.RESPONDER:
        return or_(_org_participates(actor, Incident.id), _named(actor, Incident.id))
    if actor.role is Role.INTAKE:
        # An intake client reads back what it filed, first filing or a repeat that became an occurrence.
        return or_(
            Incident.created_by_id == actor.user_id,
            exists().where(Occurrence.incident_id == Incident.id, Occurrence.created_by_id == actor.user_id),
        )
    return false()


def tlp_clause(actor: Actor, tlp_column: ColumnElement, incident_id: ColumnElement) -> ColumnElement[bool]:
    """TLP rule: shared levels reach every allowed role, amber+strict the participant organisations, red named users."""
    return or_(
        tlp_column.in_([t.value for t in _SHARED_TLP]),
        and_(tlp_column == TLP.AMBER_STRICT.value, or_(_org_participates(actor, incident_id), _named(actor, incident_id))),
        and_(tlp_column == TLP.RED.value, _named(actor, incident_id)),
    )


def visible_incidents(actor: Actor) -> ColumnElement[bool]:
    """A WHERE clause selecting the incidents `actor` may see."""
    return and_(_role_allows(actor), tlp_clause(actor, Incident.tlp, Incident.id))


def visible_comments(actor: Actor) -> ColumnElement[bool]:
    """Comments carry their own TLP, judged against the incident's participants."""
    return tlp_clause(actor, Comment.tlp, Comment.incident_id)


def can_see(session, actor: Actor, incident_id: int) -> bool:
    stmt = select(Incident.id).where(Incident.id == incident_id, visible_incidents(actor))
    return session.scalar(stmt) is not None


def may_edit(actor: Actor) -> bool:
    """Roles that may change incidents (committee members give directives, not edits)."""
    return actor.role in (Role.ADMIN, Role.OPERATOR, Role.RESPONDER)
