"""Use cases of paging: acknowledge, ask for support, complete a task, answer a request for direction, versions.

Each is one function and one transaction, keyword-only, session passed in; refusals raise domain errors
(`Forbidden` → 403, `NotFound` → 404, `ValidationFailed` → 422, `Conflict` → 409).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from incidents import audit
from incidents.access import Actor, can_see
from incidents.base import utcnow
from incidents.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.models import Incident, Organisation
from incidents.policy import Capability, allows, require
from incidents.queries import get_incident
from incidents.uow import in_transaction
from playbooks import oncall, paging, runs, spec, timeline
from playbooks.models import (
    PAGE_ACKED,
    PAGE_OPEN,
    Contact,
    DirectionRequest,
    Directive,
    Group,
    GroupMember,
    Page,
    PageRecipient,
    PlaybookRun,
    PlaybookVersion,
    Task,
)
from playbooks.settings import Settings

VIA = ("api", "web", "email", "telegram", "sms", "phone")


class AckRefused(Forbidden):
    """Not someone this page was sent to: refused, and written to the audit trail."""

    def __init__(self, detail: str) -> None:
        Forbidden.__init__(self, detail, errors=[FieldError("page", detail)])


def _locked_page(session: Session, page_id: int, actor: Actor | None) -> Page:
    """The page, locked; a page on an incident `actor` may not see is as missing as one that never was."""
    page = session.get(Page, page_id, with_for_update=True, populate_existing=True)
    if page is None or (actor is not None and not can_see(session, actor, page.incident_id)):
        raise NotFound(f"no page {page_id}")
    return page


def may_acknowledge(session: Session, page: Page, contact: Contact) -> bool:
    """A recipient; for a page to a group or organisation, any of its active members (the first wins)."""
    if not contact.active or contact.erased_at is not None:
        return False
    if any(r.contact_id == contact.id for r in page.recipients):
        return True
    if page.group_id is not None:
        linked = session.scalar(
            select(GroupMember.id).where(GroupMember.group_id == page.group_id, GroupMember.contact_id == contact.id)
        )
        return linked is not None
    if page.target_kind in ("organisation", "system_operator") and page.organisation_id is not None:
        return contact.organisation_id == page.organisation_id
    return False


def acknowledge_page(
    *,
    session: Session,
    page_id: int,
    by_contact_id: int | None = None,
    actor: Actor | None = None,
    via: str = "api",
    note: str | None = None,
    source_ip: str | None = None,
) -> Page:
    """Take up a page: by the person paged (`by_contact_id`, or the contact linked to `actor`), or by an operator
    or admin on someone's behalf with a note. A second ack changes nothing; a refusal is audited, then raised."""
    note = (note or "").strip() or None

    def work() -> Page | str:
        page = _locked_page(session, page_id, actor)
        incident = session.get(Incident, page.incident_id)
        contact = session.get(Contact, by_contact_id) if by_contact_id is not None else None
        if contact is None and actor is not None:
            contact = session.scalar(select(Contact).where(Contact.user_id == actor.user_id))
        on_behalf = False
        if contact is None or not may_acknowledge(session, page, contact):
            if allows(actor, Capability.ACT_ON_OTHERS_PAGES) and note:
                on_behalf = True
            else:
                who = contact.name if contact else (actor.label if actor else "unknown")
                why = "not paged" if (contact or actor is None) else "no linked contact"
                if allows(actor, Capability.ACT_ON_OTHERS_PAGES) and not note:
                    why = "acknowledging on someone's behalf needs a note"
                audit.append(
                    session,
                    action=audit.Action.ACK_REFUSED,
                    actor=actor or (f"contact:{contact.id}" if contact else None),
                    target=incident.ref,
                    source_ip=source_ip,
                    data={
                        "page_id": page.id,
                        "contact_id": contact.id if contact else None,
                        "via": via,
                        "reason": why,
                        "who": who,
                    },
                )
                return why
        if page.state == PAGE_ACKED:
            return page  # the first ack won; a second one is harmless
        if page.state != PAGE_OPEN:
            raise Conflict(f"the page is {page.state}")
        now = utcnow()
        page.state, page.acked_at, page.ack_via, page.ack_note = PAGE_ACKED, now, via, note
        page.ack_on_behalf = on_behalf
        page.acked_by_contact_id = None if on_behalf else contact.id
        page.acked_by_user_id = actor.user_id if actor else None
        page.acked_by = actor.label if on_behalf else contact.name  # ack_on_behalf says it was on their behalf
        timeline.record(
            session,
            "page.acknowledged",
            incident,
            actor,
            note=note,
            page_id=page.id,
            acked_by=page.acked_by,
            contact_id=page.acked_by_contact_id,
            via=via,
            on_behalf=on_behalf,
            target=page.target,
            target_label=page.target_label,
        )
        runs.after_ack(session, page)
        return page

    result = in_transaction(session, work)
    if isinstance(result, str):
        raise AckRefused(f"this person may not acknowledge page {page_id}: {result}")
    return result


def request_support(
    *,
    session: Session,
    page_id: int,
    by_contact_id: int | None = None,
    actor: Actor | None = None,
    note: str | None = None,
    settings: Settings,
) -> Page:
    """A paged responder asks for support: the next tier is paged (the working group leader, then the board)."""

    def work() -> Page:
        page = _locked_page(session, page_id, actor)
        if actor is not None:
            require(actor, Capability.REQUEST_SUPPORT)
        contact = session.get(Contact, by_contact_id) if by_contact_id else None
        if contact is None and actor is not None:
            contact = session.scalar(select(Contact).where(Contact.user_id == actor.user_id))
        desk = allows(actor, Capability.ACT_ON_OTHERS_PAGES)
        if (contact is None or not may_acknowledge(session, page, contact)) and not desk:
            raise Forbidden("only someone this page went to asks for support on it")
        incident = session.get(Incident, page.incident_id)
        tier = "board.deputy_head" if page.escalation else "working_group.leader"
        support = paging.create_page(
            session,
            incident=incident,
            settings=settings,
            run=None,
            path=None,
            escalation=True,
            actor=actor,
            body={
                "role": tier,
                "reason_vi": f"Đề nghị hỗ trợ, phối hợp: {note or page.target_label}",
                "reason_en": f"Request for support: {note or page.target_label}",
            },
        )
        timeline.record(
            session,
            "page.support_requested",
            incident,
            actor,
            note=note,
            page_id=page.id,
            support_page_id=support.id,
            by=contact.name if contact else None,
            tier=tier,
        )
        return support

    return in_transaction(session, work)


def page_target(
    *,
    session: Session,
    incident_id: int | str,
    target: dict[str, Any],
    actor: Actor,
    settings: Settings,
    reason: str | None = None,
    requires_ack: bool = True,
) -> Page:
    """An operator pages a contact, group, organisation or role by hand."""
    require(actor, Capability.PAGE_BY_HAND, "only admins and operators page by hand")
    keys = [k for k in spec.TARGET_KEYS if k in target]
    if len(keys) != 1:
        raise ValidationFailed(
            "one target", errors=[FieldError("target", f"exactly one of {', '.join(spec.TARGET_KEYS)}")]
        )

    def work() -> Page:
        incident = get_incident(session, actor, incident_id, for_update=True)
        body = {keys[0]: target[keys[0]], "reason_vi": reason, "reason_en": reason}
        if "pick" in target:
            body["pick"] = target["pick"]
        return paging.create_page(
            session,
            incident=incident,
            body=body,
            run=None,
            path=None,
            settings=settings,
            requires_ack=requires_ack,
            actor=actor,
        )

    return in_transaction(session, work)


def complete_task(
    *,
    session: Session,
    task_id: int,
    actor: Actor | None = None,
    by_contact_id: int | None = None,
    note: str | None = None,
) -> Task:
    """Mark a checklist item done: by a member of its organisation, an operator or an admin."""

    def work() -> Task:
        task = session.get(Task, task_id, with_for_update=True, populate_existing=True)
        if task is None:
            raise NotFound(f"no task {task_id}")
        if actor is not None and not can_see(session, actor, task.incident_id):
            raise NotFound(f"no task {task_id}")
        contact = session.get(Contact, by_contact_id) if by_contact_id else None
        desk = allows(actor, Capability.ACT_ON_OTHERS_PAGES)
        member = (contact is not None and contact.organisation_id == task.organisation_id) or (
            actor is not None and task.organisation_id == actor.organisation_id
        )
        if not (desk or member or (task.organisation_id is None and actor is not None)):
            raise Forbidden("only the task's organisation, an operator or an admin completes it")
        if task.state == "done":
            return task
        task.state, task.done_at, task.note = "done", utcnow(), note
        task.done_by = actor.label if actor else (contact.name if contact else "?")
        incident = session.get(Incident, task.incident_id)
        timeline.record(
            session,
            "task.completed",
            incident,
            actor,
            note=note,
            task_id=task.id,
            title=task.title_vi,
            done_by=task.done_by,
        )
        return task

    return in_transaction(session, work)


def request_direction(
    *, session: Session, incident_id: int | str, question_vi: str, question_en: str | None, actor: Actor
) -> DirectionRequest:
    """The standing body asks the board for direction (xin ý kiến chỉ đạo)."""
    require(
        actor, Capability.REQUEST_DIRECTION, "the standing body (operators) or an admin asks the board for direction"
    )
    if not question_vi.strip():
        raise ValidationFailed("empty question", errors=[FieldError("question_vi", "required")])

    def work() -> DirectionRequest:
        incident = get_incident(session, actor, incident_id, for_update=True)
        request = DirectionRequest(
            incident_id=incident.id, question_vi=question_vi, question_en=question_en, requested_by=actor.label
        )
        session.add(request)
        session.flush()
        timeline.record(session, "direction.requested", incident, actor, request_id=request.id, question=question_vi)
        return request

    return in_transaction(session, work)


def answer_direction_request(*, session: Session, request_id: int, text: str, actor: Actor) -> Directive:
    """A board member (committee) or an admin answers with a directive; it lands on the incident's timeline."""
    require(actor, Capability.GIVE_DIRECTIVES, "only the board (committee) or an admin gives directives")
    if not text.strip():
        raise ValidationFailed("empty directive", errors=[FieldError("text", "required")])

    def work() -> Directive:
        request = session.get(DirectionRequest, request_id, with_for_update=True, populate_existing=True)
        if request is None or not can_see(session, actor, request.incident_id):
            raise NotFound(f"no request for direction {request_id}")
        now = utcnow()
        directive = Directive(
            request_id=request.id,
            incident_id=request.incident_id,
            text=text,
            given_by_id=actor.user_id,
            given_by=actor.label,
            given_at=now,
        )
        session.add(directive)
        request.state, request.answered_at = "answered", request.answered_at or now
        session.flush()
        incident = session.get(Incident, request.incident_id)
        timeline.record(
            session,
            "direction.answered",
            incident,
            actor,
            note=text,
            request_id=request.id,
            directive_id=directive.id,
            directive=text,
        )
        return directive

    return in_transaction(session, work)


# --- reading ----------------------------------------------------------------------------------------------------


def list_pages(
    session: Session,
    actor: Actor,
    *,
    incident_id: int | None = None,
    state: str | None = None,
    after: int = 0,
    limit: int = 50,
    mine: bool = False,
) -> list[Page]:
    from incidents.access import visible_incidents

    require(actor, Capability.READ_RESPONSE)
    stmt = (
        select(Page)
        .join(Incident, Incident.id == Page.incident_id)
        .where(visible_incidents(actor), Page.id > after)
        .options(selectinload(Page.recipients).selectinload(PageRecipient.contact), selectinload(Page.incident))
        .order_by(Page.id)
        .limit(limit)
    )
    if incident_id is not None:
        stmt = stmt.where(Page.incident_id == incident_id)
    if state:
        stmt = stmt.where(Page.state == state)
    if mine:
        contact_id = session.scalar(select(Contact.id).where(Contact.user_id == actor.user_id))
        stmt = stmt.where(Page.recipients.any(PageRecipient.contact_id == (contact_id or 0)))
    return list(session.scalars(stmt))


def get_page(session: Session, actor: Actor | None, page_id: int) -> Page:
    if actor is not None:
        require(actor, Capability.READ_RESPONSE)
    page = session.get(Page, page_id)
    if page is None or (actor is not None and not can_see(session, actor, page.incident_id)):
        raise NotFound(f"no page {page_id}")
    return page


def list_tasks(
    session: Session,
    actor: Actor,
    *,
    incident_id: int | None = None,
    state: str | None = None,
    after: int = 0,
    limit: int = 50,
) -> list[Task]:
    return _visible_rows(session, actor, Task, Task.organisation, incident_id, state, after, limit)


def list_direction_requests(
    session: Session,
    actor: Actor,
    *,
    incident_id: int | None = None,
    state: str | None = None,
    after: int = 0,
    limit: int = 50,
) -> list[DirectionRequest]:
    load = DirectionRequest.directives
    return _visible_rows(session, actor, DirectionRequest, load, incident_id, state, after, limit)


def _visible_rows(
    session: Session,
    actor: Actor,
    model: Any,
    load: Any,
    incident_id: int | None,
    state: str | None,
    after: int,
    limit: int,
) -> list[Any]:
    """Rows of `model` (tasks, requests for direction) on incidents `actor` may see, in id order from `after`."""
    from incidents.access import visible_incidents

    require(actor, Capability.READ_RESPONSE)
    stmt = (
        select(model)
        .join(Incident, Incident.id == model.incident_id)
        .where(visible_incidents(actor), model.id > after)
        .options(selectinload(load))
        .order_by(model.id)
        .limit(limit)
    )
    if incident_id is not None:
        stmt = stmt.where(model.incident_id == incident_id)
    if state:
        stmt = stmt.where(model.state == state)
    return list(session.scalars(stmt))


def list_runs(session: Session, actor: Actor, *, incident_id: int) -> list[PlaybookRun]:
    require(actor, Capability.READ_RESPONSE)
    if not can_see(session, actor, incident_id):
        raise NotFound(f"no incident {incident_id}")
    stmt = select(PlaybookRun).where(PlaybookRun.incident_id == incident_id).options(selectinload(PlaybookRun.version))
    return list(session.scalars(stmt.order_by(PlaybookRun.id)))


# --- playbook versions --------------------------------------------------------------------------------------


def known(session: Session) -> spec.Known:
    return spec.Known(
        organisations=frozenset(session.scalars(select(Organisation.code))),
        groups=frozenset(session.scalars(select(Group.code))),
    )


def _add_version(session: Session, parsed: spec.Spec, origin: str, by: str) -> PlaybookVersion | None:
    latest = session.scalar(
        select(PlaybookVersion).where(PlaybookVersion.name == parsed.name).order_by(PlaybookVersion.version.desc())
    )
    if latest is not None and latest.digest == parsed.digest:
        return None  # unchanged: no new version
    version = PlaybookVersion(
        name=parsed.name,
        version=(latest.version + 1) if latest else 1,
        title_vi=parsed.title_vi,
        title_en=parsed.title_en,
        source=parsed.source,
        definition=parsed.definition,
        digest=parsed.digest,
        origin=origin,
        enabled=True,
        created_by=by,
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    return version


def seed_definitions(session: Session, directory: Path = spec.DEFINITIONS) -> tuple[list[str], list[spec.SpecError]]:
    """Load the shipped YAML into the versioned table (a changed file becomes a new version); in the caller's
    transaction. Malformed files are reported and skipped; the others still load."""
    specs, errors = spec.load_directory(directory, known(session))
    added = []
    for parsed in specs:
        if _add_version(session, parsed, f"definitions/{parsed.name}", "init-db") is not None:
            added.append(parsed.name)
    return added, errors


def upload_playbook(*, session: Session, source: str, actor: Actor, name: str | None = None) -> PlaybookVersion:
    """An admin uploads a new version (YAML); validated as the files are, the error naming version, line, field."""
    require(actor, Capability.EDIT_PLAYBOOKS, "only admins edit playbooks")

    def work() -> PlaybookVersion:
        next_no = None
        if name:
            next_no = (
                session.scalar(select(func.max(PlaybookVersion.version)).where(PlaybookVersion.name == name)) or 0
            ) + 1
        label = f"{name} version {next_no}" if name else "the uploaded version"
        try:
            parsed = spec.load(source, label, known(session))
        except spec.SpecError as exc:
            raise ValidationFailed(
                str(exc),
                errors=[FieldError(i.field, f"{exc.source}, line {i.line}: {i.message}") for i in exc.issues],
                source=exc.source,
                issues=[{"line": i.line, "field": i.field, "message": i.message} for i in exc.issues],
            ) from None
        if name and parsed.name != name:
            raise ValidationFailed("name mismatch", errors=[FieldError("name", f"the YAML names {parsed.name!r}")])
        version = _add_version(session, parsed, "api", actor.label)
        if version is None:
            raise Conflict("this version is identical to the newest one")
        audit.append(
            session,
            action=audit.Action.PLAYBOOK_EDITED,
            actor=actor,
            target=parsed.name,
            data={"version": version.version, "digest": version.digest},
        )
        record_event(
            session,
            kind="playbook.version_added",
            actor=actor,
            data={"ref": None, "status": None, "playbook": parsed.name, "version": version.version},
        )
        return version

    return in_transaction(session, work)


def set_enabled(*, session: Session, name: str, enabled: bool, actor: Actor) -> PlaybookVersion:
    require(actor, Capability.EDIT_PLAYBOOKS, "only admins edit playbooks")

    def work() -> PlaybookVersion:
        version = session.scalar(
            select(PlaybookVersion).where(PlaybookVersion.name == name).order_by(PlaybookVersion.version.desc())
        )
        if version is None:
            raise NotFound(f"no playbook {name!r}")
        version.enabled = enabled
        audit.append(
            session,
            action=audit.Action.PLAYBOOK_EDITED,
            actor=actor,
            target=name,
            data={"version": version.version, "enabled": enabled},
        )
        return version

    return in_transaction(session, work)


def list_versions(session: Session, *, actor: Actor, name: str | None = None) -> Sequence[PlaybookVersion]:
    require(actor, Capability.READ_PLAYBOOKS, "only admins and operators read playbooks")
    if name:
        stmt = select(PlaybookVersion).where(PlaybookVersion.name == name).order_by(PlaybookVersion.version)
        return list(session.scalars(stmt))
    return runs.latest_versions(session)


def who_is_on_call(*, session: Session, organisation: str | None = None, group: str | None = None) -> list[Contact]:
    """Who a page to this organisation or group reaches now."""
    return oncall.who_is_on_call(session=session, organisation=organisation, group=group)
