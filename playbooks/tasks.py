"""Tasks people keep beside the playbooks' own: add one for a phase, assign it, tick or reopen it, comment on it.

The same `Task` rows the playbooks create (playbooks.models), so one checklist shows both; each use case is one
transaction that writes a timeline event.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from incidents.access import Actor, can_see
from incidents.assignment import may_own
from incidents.base import MAX_ID, utcnow
from incidents.enums import Status
from incidents.errors import FieldError, Forbidden, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.models import Incident, User
from incidents.policy import Capability, allows, require
from incidents.queries import get_incident
from incidents.uow import in_transaction
from playbooks.models import Task, TaskComment

TITLE_MAX = 500
COMMENT_MAX = 5000
# Phases a task can belong to: the procedure's working statuses (a closed or rejected incident has no work left).
PHASES = (
    Status.NEW,
    Status.TRIAGE,
    Status.FIRST_RESPONSE,
    Status.CONTAINMENT,
    Status.ERADICATION,
    Status.RECOVERY,
    Status.ASSESSMENT,
    Status.REVIEW,
)


def _event(session: Session, kind: str, incident: Incident, actor: Actor, task: Task, **data: Any) -> None:
    record_event(
        session,
        kind=kind,
        actor=actor,
        incident=incident,
        data={"ref": incident.ref, "status": str(incident.status), "task_id": task.id, "title": task.title_vi, **data},
    )


def _owner(session: Session, username: str | None, incident_id: int) -> User | None:
    if not username or not username.strip():
        return None
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise ValidationFailed("unknown account", errors=[FieldError("assignee", "no such account")])
    why = may_own(session, user, incident_id)
    if why is not None:
        raise ValidationFailed(why, errors=[FieldError("assignee", why)])
    return user


def _locked_task(session: Session, actor: Actor, task_id: int, incident_id: int | None) -> Task:
    """The task, locked; one on an incident `actor` may not see (or on another incident) is as missing as none."""
    if task_id > MAX_ID:  # beyond BIGINT: PostgreSQL would refuse the parameter, and it names nothing
        raise NotFound(f"no task {task_id}")
    task = session.get(Task, task_id, with_for_update=True, populate_existing=True)
    if task is None or (incident_id is not None and task.incident_id != incident_id):
        raise NotFound(f"no task {task_id}")
    if not can_see(session, actor, task.incident_id):
        raise NotFound(f"no task {task_id}")
    return task


def add_task(
    *,
    session: Session,
    incident_id: int | str,
    title: str,
    actor: Actor,
    phase: str | None = None,
    assignee: str | None = None,
    due_at: datetime | None = None,
) -> Task:
    """Someone working the incident adds a task for a phase (default: the phase the incident is in)."""
    require(actor, Capability.EDIT_INCIDENT, f"the role {actor.role} may not change incidents")
    title = (title or "").strip()
    errors = []
    if not title:
        errors.append(FieldError("title", "required"))
    elif len(title) > TITLE_MAX:
        errors.append(FieldError("title", f"at most {TITLE_MAX} characters"))
    if phase and phase not in PHASES:
        errors.append(FieldError("phase", "not a phase of the procedure"))
    if errors:
        raise ValidationFailed("invalid task", errors=errors)

    def work() -> Task:
        incident = get_incident(session, actor, incident_id, for_update=True)
        owner = _owner(session, assignee, incident.id)
        task = Task(
            incident_id=incident.id,
            title_vi=title,
            phase=phase or (str(incident.status) if incident.status in PHASES else None),
            assignee_id=owner.id if owner else None,
            due_at=due_at,
            created_by=actor.label,
            created_at=utcnow(),
        )
        session.add(task)
        session.flush()
        _event(session, "task.created", incident, actor, task, phase=task.phase,
               assignee=owner.username if owner else None)  # fmt: skip
        return task

    return in_transaction(session, work)


def assign_task(
    *, session: Session, task_id: int, assignee: str | None, actor: Actor, incident_id: int | None = None
) -> Task:
    """Give a task (a playbook's or a person's) to an account, or to nobody."""
    require(actor, Capability.EDIT_INCIDENT, f"the role {actor.role} may not change incidents")

    def work() -> Task:
        task = _locked_task(session, actor, task_id, incident_id)
        owner = _owner(session, assignee, task.incident_id)
        if task.assignee_id == (owner.id if owner else None):
            return task
        task.assignee_id = owner.id if owner else None
        incident = session.get(Incident, task.incident_id)
        _event(session, "task.assigned", incident, actor, task, assignee=owner.username if owner else None)
        return task

    return in_transaction(session, work)


def may_tick(actor: Actor, task: Task) -> bool:
    """The desk, the task's assignee, or someone of its organisation (anyone working the incident if it has none)."""
    if allows(actor, Capability.ACT_ON_OTHERS_PAGES) or task.assignee_id == actor.user_id:
        return True
    if not allows(actor, Capability.EDIT_INCIDENT):
        return False
    return task.organisation_id is None or task.organisation_id == actor.organisation_id


def set_done(
    *,
    session: Session,
    task_id: int,
    done: bool,
    actor: Actor,
    note: str | None = None,
    incident_id: int | None = None,
) -> Task:
    """Tick a task done, or open it again; ticking twice changes nothing."""

    def work() -> Task:
        task = _locked_task(session, actor, task_id, incident_id)
        if not may_tick(actor, task):
            raise Forbidden("only the task's assignee, its organisation, an operator or an admin ticks it")
        if (task.state == "done") == done:
            return task
        incident = session.get(Incident, task.incident_id)
        if done:
            task.state, task.done_at, task.done_by, task.note = "done", utcnow(), actor.label, note
            _event(session, "task.completed", incident, actor, task, done_by=actor.label)
        else:
            task.state, task.done_at, task.done_by = "open", None, None
            _event(session, "task.reopened", incident, actor, task)
        return task

    return in_transaction(session, work)


def comment_task(
    *, session: Session, task_id: int, body: str, actor: Actor, incident_id: int | None = None
) -> TaskComment:
    """A remark on a task, by anyone who reads the response and may comment."""
    require(actor, Capability.COMMENT)
    body = (body or "").strip()
    if not body:
        raise ValidationFailed("empty comment", errors=[FieldError("body", "required")])
    if len(body) > COMMENT_MAX:
        raise ValidationFailed("comment too long", errors=[FieldError("body", f"at most {COMMENT_MAX} characters")])

    def work() -> TaskComment:
        task = _locked_task(session, actor, task_id, incident_id)
        comment = TaskComment(task_id=task.id, incident_id=task.incident_id, author_id=actor.user_id,
                              author=actor.label, body=body, created_at=utcnow())  # fmt: skip
        session.add(comment)
        session.flush()
        incident = session.get(Incident, task.incident_id)
        _event(session, "task.commented", incident, actor, task, comment_id=comment.id)
        return comment

    return in_transaction(session, work)


def list_for_incident(session: Session, actor: Actor, incident_id: int) -> list[Task]:
    """The incident's tasks, playbooks' and people's, with assignee and comments, in the order they were made."""
    require(actor, Capability.READ_RESPONSE)
    if not can_see(session, actor, incident_id):
        raise NotFound(f"no incident {incident_id}")
    stmt = (
        select(Task)
        .where(Task.incident_id == incident_id)
        .options(selectinload(Task.organisation), selectinload(Task.assignee), selectinload(Task.comments))
        .order_by(Task.id)
        .limit(500)
    )
    return list(session.scalars(stmt))
