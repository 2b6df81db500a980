"""Who is acting, and which incidents they may see (design: roles, participants and TLP)."""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import ColumnElement, and_, exists, false, literal, or_, select, true

from incidents.enums import TLP, TLP_ORDER, Role
from incidents.errors import FieldError, Forbidden
from incidents.models import Comment, CommentRevision, Incident, Participant, User
from incidents.policy import Capability, allows

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
    return exists().where(Participant.incident_id == incident_id, Participant.organisation_id == actor.organisation_id)


def _role_allows(actor: Actor) -> ColumnElement[bool]:
    if actor.role in _DESK_ROLES:
        return true()
    if actor.role is Role.RESPONDER:
        return or_(_org_participates(actor, Incident.id), _named(actor, Incident.id))
    if actor.role is Role.INTAKE:
        # An intake client reads back what it filed. Its repeats group only into incidents it may see, so an
        # occurrence of its own grants nothing more (one on another filer's incident predates that rule).
        return Incident.created_by_id == actor.user_id
    return false()


def tlp_clause(actor: Actor, tlp_column: ColumnElement, incident_id: ColumnElement) -> ColumnElement[bool]:
    """TLP rule: shared levels reach every allowed role, amber+strict the participant organisations, red named users."""
    return or_(
        # Bound one by one: a list of plain values would be an expanding IN, rendered anew at every execution of
        # every query this clause is part of (5 % of an alert repeat's CPU on PostgreSQL, py-spy).
        tlp_column.in_([literal(t.value, tlp_column.type) for t in _SHARED_TLP]),
        and_(
            tlp_column == TLP.AMBER_STRICT.value, or_(_org_participates(actor, incident_id), _named(actor, incident_id))
        ),
        and_(tlp_column == TLP.RED.value, _named(actor, incident_id)),
    )


@lru_cache(maxsize=1024)
def visible_incidents(actor: Actor) -> ColumnElement[bool]:
    """A WHERE clause selecting the incidents `actor` may see.

    The clause depends on the actor's fields alone and SQLAlchemy expressions are immutable, so one built clause
    serves every request of the same actor: building it is a large part of a cheap request's CPU.
    """
    return and_(_role_allows(actor), tlp_clause(actor, Incident.tlp, Incident.id))


def visible_comments(actor: Actor) -> ColumnElement[bool]:
    """Comments carry their own TLP, judged against the incident's participants."""
    return tlp_clause(actor, Comment.tlp, Comment.incident_id)


def visible_revisions(actor: Actor, incident_id: int) -> ColumnElement[bool]:
    """A comment's earlier bodies keep the TLP they were written under, judged against the incident's participants."""
    return tlp_clause(actor, CommentRevision.tlp, literal(incident_id))


def tlp_allows(actor: Actor, tlp: str, participants: Iterable[Participant]) -> bool:
    """`tlp_clause` for one record of an incident whose participants are loaded already."""
    if tlp in _SHARED_TLP:
        return True
    people = list(participants)
    named = any(p.user_id == actor.user_id for p in people)
    if tlp == TLP.AMBER_STRICT:
        return named or any(p.organisation_id == actor.organisation_id for p in people)
    return tlp == TLP.RED and named


def check_tlp_change(actor: Actor, old: str | None, new: str | None) -> None:
    """Refuse a TLP lower than `old` (of an incident, a comment, or new content under its incident) to other roles."""
    if old is None or new is None or TLP_ORDER.index(str(new)) >= TLP_ORDER.index(str(old)):
        return
    # Lowering widens who reads what was written under the old level: a declassification the standing body decides.
    if not allows(actor, Capability.LOWER_TLP):
        raise Forbidden(
            f"the role {actor.role} may not lower a TLP",
            errors=[FieldError("tlp", f"only operators and admins lower {old} to {new}")],
        )


def can_see(session, actor: Actor, incident_id: int) -> bool:
    stmt = select(Incident.id).where(Incident.id == incident_id, visible_incidents(actor))
    return session.scalar(stmt) is not None


def may_edit(actor: Actor) -> bool:
    """Roles that may change incidents (committee members give directives, not edits)."""
    return allows(actor, Capability.EDIT_INCIDENT)


def visible_ids(session, actor: Actor, incident_ids: set[int]) -> set[int]:
    """Which of `incident_ids` `actor` may see now."""
    if not incident_ids:
        return set()
    stmt = select(Incident.id).where(Incident.id.in_(incident_ids), visible_incidents(actor))
    return set(session.scalars(stmt))


# The live feed's rooms follow the rules above: who receives an event is decided as who may read it.


def rooms_of(actor: Actor) -> list[str]:
    """The /live rooms a connected user joins: their own, and their role's within their organisation."""
    rooms = [f"user:{actor.user_id}"]
    if actor.role in _DESK_ROLES:
        rooms += ["desk", f"desk:{actor.organisation_id}"]
    elif actor.role is Role.RESPONDER:
        rooms.append(f"responders:{actor.organisation_id}")
    return rooms


ALARM_ROOMS = ["desk"]  # events that belong to no incident (a dead job, a stale worker) go to the desk


def audience(session, events) -> dict[int, tuple[list[str], str | None, str | None]]:
    """For each event: the rooms allowed to receive it, judged now, and the incident's ref and status now.

    The stricter of the event's TLP and the incident's current one applies, so raising an incident's TLP
    also narrows who receives its older events on replay.
    """
    incident_ids = {ev.incident_id for ev in events if ev.incident_id is not None}
    incidents = {
        row.id: row
        for row in session.execute(
            select(Incident.id, Incident.ref, Incident.status, Incident.tlp, Incident.created_by_id).where(
                Incident.id.in_(incident_ids)
            )
        )
    }
    people: dict[int, tuple[set[int], set[int]]] = {i: (set(), set()) for i in incident_ids}
    for incident_id, user_id, org_id in session.execute(
        select(Participant.incident_id, Participant.user_id, Participant.organisation_id).where(
            Participant.incident_id.in_(incident_ids)
        )
    ):
        users, orgs = people[incident_id]
        if user_id is not None:
            users.add(user_id)
        if org_id is not None:
            orgs.add(org_id)
    users_needed = set().union(*(p[0] for p in people.values())) if incident_ids else set()
    users_needed |= {row.created_by_id for row in incidents.values() if row.created_by_id is not None}
    users = {
        u.id: (Role(u.role), u.organisation_id)
        for u in session.execute(select(User.id, User.role, User.organisation_id).where(User.id.in_(users_needed)))
    }
    result: dict[int, tuple[list[str], str | None, str | None]] = {}
    for ev in events:
        row = incidents.get(ev.incident_id)
        if row is None:
            result[ev.id] = (list(ALARM_ROOMS) if ev.incident_id is None else [], None, None)
            continue
        tlp = stricter(ev.tlp, row.tlp)
        named, orgs = people[row.id]
        filed = {row.created_by_id} if row.created_by_id else set()
        result[ev.id] = (_rooms_for(tlp, named, orgs, filed, users), row.ref, str(row.status))
    return result


def stricter(*tlps: str | None) -> str:
    """The strictest of the given TLPs (red when none is known)."""
    levels = [TLP_ORDER.index(str(t)) for t in tlps if t is not None]
    return TLP_ORDER[max(levels)].value if levels else TLP.RED.value


def _rooms_for(
    tlp: str, named: set[int], orgs: set[int], filed: set[int], users: dict[int, tuple[Role, int]]
) -> list[str]:
    """Rooms mirroring `visible_incidents`: the role allows (desk, responder, intake filer) and the TLP allows."""
    rooms: list[str] = []
    if tlp in _SHARED_TLP:
        rooms += ["desk", *(f"responders:{o}" for o in sorted(orgs))]
    elif tlp == TLP.AMBER_STRICT:
        rooms += [*(f"desk:{o}" for o in sorted(orgs)), *(f"responders:{o}" for o in sorted(orgs))]
    for user_id in sorted(named | filed):
        role, org = users.get(user_id, (None, None))
        if role is None:
            continue
        role_allows = role in _DESK_ROLES or (role is Role.RESPONDER and (user_id in named or org in orgs))
        role_allows = role_allows or (role is Role.INTAKE and user_id in filed)
        tlp_allows = tlp in _SHARED_TLP or user_id in named or (tlp == TLP.AMBER_STRICT and org in orgs)
        if role_allows and tlp_allows:
            rooms.append(f"user:{user_id}")
    return rooms
