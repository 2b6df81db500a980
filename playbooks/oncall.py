"""Who a page reaches: groups, on-call schedules with their overrides, and who is on call now.

A page to an organisation or a group reaches whoever its schedules put on call at that moment (an override
covering the moment wins), or every active member when it has no schedule.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from incidents.access import Actor
from incidents.base import utcnow
from incidents.errors import FieldError, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.models import Incident, Organisation
from incidents.policy import Capability, allows, require
from incidents.uow import in_transaction
from playbooks.directory import contact_view, organisation_by_code, require_desk
from playbooks.models import Contact, Group, GroupMember, Schedule, ScheduleMember, ScheduleOverride


def save_group(
    *,
    session: Session,
    code: str,
    name_vi: str,
    name_en: str | None,
    organisation: str | None,
    members: Sequence[int],
    actor: Actor,
) -> Group:
    """Create or replace a group and its ordered members."""
    require_desk(actor)

    def work() -> Group:
        group = session.scalar(select(Group).where(Group.code == code))
        if group is None:
            group = Group(code=code, name_vi=name_vi)
            session.add(group)
        group.name_vi, group.name_en = name_vi, name_en
        group.organisation_id = organisation_by_code(session, organisation).id if organisation else None
        _check_contacts(session, members, "members")
        repeated = [FieldError(f"members[{n}]", f"contact {c} is already in the group")
                    for n, c in enumerate(members) if c in members[:n]]  # fmt: skip
        if repeated:
            raise ValidationFailed("a contact listed twice", errors=repeated)
        # Old rows go first: a member kept across the change would otherwise collide with itself (unique pair).
        group.members = []
        session.flush()
        group.members = [GroupMember(contact_id=c, position=n) for n, c in enumerate(members)]
        session.flush()
        record_event(session, kind="group.saved", actor=actor, data={"ref": None, "status": None, "group": code})
        return group

    return in_transaction(session, work)


def _check_contacts(session: Session, ids: Sequence[int], field: str) -> None:
    have = set(session.scalars(select(Contact.id).where(Contact.id.in_(list(ids)), Contact.erased_at.is_(None))))
    errors = [FieldError(f"{field}[{n}]", f"no contact {c}") for n, c in enumerate(ids) if c not in have]
    if errors:
        raise ValidationFailed("unknown contacts", errors=errors)


def save_schedule(
    *,
    session: Session,
    code: str,
    name: str,
    organisation: str | None,
    group: str | None,
    starts_at: datetime,
    shift_hours: int,
    members: Sequence[int],
    actor: Actor,
) -> Schedule:
    """Create or replace a rotation: members take turns of `shift_hours` (168 = weekly) from `starts_at`."""
    require_desk(actor)
    if shift_hours <= 0:
        raise ValidationFailed("bad shift", errors=[FieldError("shift_hours", "a positive number of hours")])
    if not members:
        raise ValidationFailed("no members", errors=[FieldError("members", "at least one contact")])

    def work() -> Schedule:
        schedule = session.scalar(select(Schedule).where(Schedule.code == code))
        if schedule is None:
            schedule = Schedule(code=code, name=name, starts_at=starts_at)
            session.add(schedule)
        schedule.name, schedule.starts_at, schedule.shift_hours = name, starts_at, shift_hours
        schedule.organisation_id = organisation_by_code(session, organisation).id if organisation else None
        if group:
            found = session.scalar(select(Group).where(Group.code == group))
            if found is None:
                raise ValidationFailed("unknown group", errors=[FieldError("group", f"no group {group!r}")])
            schedule.group_id = found.id
        else:
            schedule.group_id = None
        _check_contacts(session, members, "members")
        schedule.members = [ScheduleMember(contact_id=c, position=n) for n, c in enumerate(members)]
        session.flush()
        record_event(session, kind="schedule.saved", actor=actor, data={"ref": None, "status": None, "schedule": code})
        return schedule

    return in_transaction(session, work)


def add_override(
    *,
    session: Session,
    schedule_code: str,
    contact_id: int,
    starts_at: datetime,
    ends_at: datetime,
    reason: str | None,
    actor: Actor,
) -> ScheduleOverride:
    """Someone else is on call for a span (leave, a swap)."""
    require_desk(actor)
    if ends_at <= starts_at:
        raise ValidationFailed("bad span", errors=[FieldError("ends_at", "after starts_at")])

    def work() -> ScheduleOverride:
        schedule = session.scalar(select(Schedule).where(Schedule.code == schedule_code))
        if schedule is None:
            raise NotFound(f"no schedule {schedule_code!r}")
        _check_contacts(session, [contact_id], "contact")
        override = ScheduleOverride(
            schedule=schedule, contact_id=contact_id, starts_at=starts_at, ends_at=ends_at, reason=reason
        )
        session.add(override)
        session.flush()
        record_event(
            session,
            kind="schedule.override_added",
            actor=actor,
            data={"ref": None, "status": None, "schedule": schedule_code, "contact_id": contact_id},
        )
        return override

    return in_transaction(session, work)


def on_call(schedule: Schedule, at: datetime) -> Contact | None:
    """Who `schedule` puts on call at `at`: an override covering it (the latest added wins), else the rotation."""
    covering = [o for o in schedule.overrides if o.starts_at <= at < o.ends_at and o.contact.active]
    if covering:
        return max(covering, key=lambda o: o.id).contact
    members = [m.contact for m in schedule.members if m.contact.active and m.contact.erased_at is None]
    return _turn(members, schedule.starts_at, schedule.shift_hours, at)


def _turn(members: Sequence[Contact], starts_at: datetime, shift_hours: int, at: datetime) -> Contact | None:
    """Whose shift of the rotation `at` falls in: shifts of `shift_hours` from `starts_at`, in member order."""
    if not members:
        return None
    turn = int((at - starts_at).total_seconds() // (shift_hours * 3600))
    return members[turn % len(members)]


def _on_call_now(
    session: Session, *, at: datetime, organisation_id: int | None = None, group_id: int | None = None
) -> list[Contact | None] | None:
    """`on_call` for each schedule of an organisation (or a group) at `at`; None when it has no schedule.

    Paging runs this in every filing, so it reads only the rows that matter now: the schedules' rotations and the
    overrides covering `at`, not every override ever entered."""
    stmt = select(Schedule.id, Schedule.starts_at, Schedule.shift_hours)
    if organisation_id is not None:
        stmt = stmt.where(Schedule.organisation_id == organisation_id, Schedule.group_id.is_(None))
    if group_id is not None:
        stmt = stmt.where(Schedule.group_id == group_id)
    schedules = session.execute(stmt.order_by(Schedule.id)).all()
    if not schedules:
        return None
    ids = [row.id for row in schedules]
    covering: dict[int, Contact] = {}
    overrides = (
        select(ScheduleOverride.schedule_id, Contact)
        .join(Contact, Contact.id == ScheduleOverride.contact_id)
        .where(ScheduleOverride.schedule_id.in_(ids), ScheduleOverride.starts_at <= at, ScheduleOverride.ends_at > at)
        .where(Contact.active.is_(True))
        .order_by(ScheduleOverride.id)
    )
    for schedule_id, contact in session.execute(overrides):
        covering[schedule_id] = contact  # the latest added wins
    members: dict[int, list[Contact]] = {}
    rotation = (
        select(ScheduleMember.schedule_id, Contact)
        .join(Contact, Contact.id == ScheduleMember.contact_id)
        .where(ScheduleMember.schedule_id.in_(ids), Contact.active.is_(True), Contact.erased_at.is_(None))
        .order_by(ScheduleMember.schedule_id, ScheduleMember.position, ScheduleMember.id)
    )
    for schedule_id, contact in session.execute(rotation):
        members.setdefault(schedule_id, []).append(contact)
    return [
        covering.get(row.id) or _turn(members.get(row.id, []), row.starts_at, row.shift_hours, at) for row in schedules
    ]


def who_is_on_call(
    *, session: Session, organisation: str | None = None, group: str | None = None, at: datetime | None = None
) -> list[Contact]:
    """Who a page to this organisation or group reaches now: its schedules' on-call, or all its active members."""
    at = at or utcnow()
    if group is not None:
        found = session.scalar(select(Group).where(Group.code == group))
        if found is None:
            raise NotFound(f"no group {group!r}")
        return group_contacts(session, found, pick="default", at=at)
    if organisation is not None:
        org = session.scalar(select(Organisation).where(Organisation.code == organisation))
        if org is None:
            raise NotFound(f"no organisation {organisation!r}")
        return organisation_contacts(session, org.id, pick="default", at=at)
    raise ValidationFailed("name an organisation or a group", errors=[FieldError("organisation", "or group")])


def _unique(contacts: Sequence[Contact | None]) -> list[Contact]:
    seen: dict[int, Contact] = {}
    for c in contacts:
        if c is not None and c.active and c.erased_at is None:
            seen.setdefault(c.id, c)
    return list(seen.values())


def organisation_contacts(session: Session, organisation_id: int, *, pick: str, at: datetime) -> list[Contact]:
    if pick != "all":
        on_duty = _on_call_now(session, at=at, organisation_id=organisation_id)
        if on_duty is not None:
            return _unique(on_duty)
    stmt = select(Contact).where(
        Contact.organisation_id == organisation_id, Contact.active.is_(True), Contact.erased_at.is_(None)
    )
    return list(session.scalars(stmt.order_by(Contact.id)))


def group_contacts(session: Session, group: Group, *, pick: str, at: datetime) -> list[Contact]:
    members = [m.contact for m in group.members if m.contact.active and m.contact.erased_at is None]
    if pick == "round_robin":
        if not members:
            return []
        # The turn is taken by one UPDATE ... RETURNING, the group's row locked from there to the commit: only a
        # page in turn locks it (a lock taken when the group was read held every page to the group, in any pick,
        # for the whole playbook start: bench/telegram's PostgreSQL waits).
        table = Group.__table__
        turn = session.execute(
            update(table)
            .where(table.c.id == group.id)
            .values(next_turn=(table.c.next_turn + 1) % len(members))
            .returning(table.c.next_turn)
        ).scalar_one()
        set_committed_value(group, "next_turn", turn)
        return [members[(turn - 1) % len(members)]]
    if pick != "all":
        on_duty = _on_call_now(session, at=at, group_id=group.id)
        if on_duty is not None:
            return _unique(on_duty)
    return _unique(members)


def role_contacts(session: Session, role: str) -> list[Contact]:
    stmt = select(Contact).where(Contact.active.is_(True), Contact.erased_at.is_(None)).order_by(Contact.id)
    return [c for c in session.scalars(stmt) if role in (c.roles or [])]


def system_operator_id(incident: Incident) -> int | None:
    system = incident.affected_system
    if system is None:
        return None
    return system.operator_id or system.owner_id


def read_on_call(
    session: Session, actor: Actor, *, organisation: str | None = None, group: str | None = None
) -> list[dict[str, Any]]:
    """Who a page to the organisation or group reaches now, as `actor` may read them."""
    require(actor, Capability.READ_DIRECTORY)
    return [contact_view(c, actor) for c in who_is_on_call(session=session, organisation=organisation, group=group)]


def group_dict(group: Group) -> dict[str, Any]:
    return {
        "code": group.code,
        "name_vi": group.name_vi,
        "name_en": group.name_en,
        "organisation": group.organisation.code if group.organisation else None,
        "members": [m.contact_id for m in group.members],
    }


def read_groups(session: Session, actor: Actor) -> list[dict[str, Any]]:
    require(actor, Capability.READ_DIRECTORY)
    return [group_dict(g) for g in session.scalars(select(Group).order_by(Group.code))]


def schedule_dict(schedule: Schedule, actor: Actor) -> dict[str, Any]:
    """A rotation; why someone is away (an override's reason) is personal data."""
    now = on_call(schedule, utcnow())
    personal = allows(actor, Capability.READ_DIRECTORY_PERSONAL)
    return {
        "code": schedule.code,
        "name": schedule.name,
        "starts_at": schedule.starts_at.isoformat(),
        "shift_hours": schedule.shift_hours,
        "members": [m.contact_id for m in schedule.members],
        "overrides": [
            {
                "contact_id": o.contact_id,
                "starts_at": o.starts_at.isoformat(),
                "ends_at": o.ends_at.isoformat(),
                "reason": o.reason if personal else None,
            }
            for o in schedule.overrides
        ],
        "on_call_now": now.id if now else None,
    }


def read_schedules(session: Session, actor: Actor) -> list[dict[str, Any]]:
    require(actor, Capability.READ_DIRECTORY)
    return [schedule_dict(s, actor) for s in session.scalars(select(Schedule).order_by(Schedule.code))]
