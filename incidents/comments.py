"""Comments on an incident: added, edited with their earlier text kept, read under their own TLP."""

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from incidents.access import Actor, check_tlp_change, stricter, visible_comments, visible_revisions
from incidents.base import utcnow
from incidents.errors import Forbidden, NotFound
from incidents.events import record_event
from incidents.models import Comment, CommentRevision
from incidents.policy import Capability, allows, require
from incidents.queries import get_incident
from incidents.schemas.incidents import CommentCreate, CommentUpdate
from incidents.uow import in_transaction


def _readable_comments(actor: Actor, incident_id: int) -> Any:
    """Comments `actor` may read, each with only the earlier bodies `actor` may read (under their own TLP)."""
    return (
        select(Comment)
        .where(Comment.incident_id == incident_id, visible_comments(actor))
        .options(
            selectinload(Comment.revisions.and_(visible_revisions(actor, incident_id))), selectinload(Comment.author)
        )
        .execution_options(populate_existing=True)
    )


def list_comments(session: Session, actor: Actor, incident_id: int | str, *, after: int, limit: int) -> list[Comment]:
    require(actor, Capability.READ_RESPONSE)
    incident = get_incident(session, actor, incident_id)
    stmt = _readable_comments(actor, incident.id).where(Comment.id > after).order_by(Comment.id).limit(limit)
    return list(session.scalars(stmt))


def get_comment(session: Session, actor: Actor, incident_id: int | str, comment_id: int) -> Comment:
    """One comment as `actor` may read it; NotFound when it is not theirs to see."""
    incident = get_incident(session, actor, incident_id)
    comment = session.scalar(_readable_comments(actor, incident.id).where(Comment.id == comment_id))
    if comment is None:
        raise NotFound(f"no comment {comment_id}")
    return comment


def add_comment(
    *,
    session: Session,
    incident_id: int | str,
    data: CommentCreate,
    actor: Actor,
    then: Callable[[Comment], None] | None = None,
) -> Comment:
    """Add a comment; its TLP defaults to the incident's (`then` writes the caller's rows in the same transaction)."""
    require(actor, Capability.COMMENT)

    def work() -> Comment:
        incident = get_incident(session, actor, incident_id)
        check_tlp_change(actor, incident.tlp, data.tlp)
        now = utcnow()
        comment = Comment(
            incident_id=incident.id, author_id=actor.user_id, body=data.body, tlp=data.tlp or incident.tlp,
            created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(comment)
        incident.updated_at = now
        session.flush()
        record_event(
            session, kind="comment.created", actor=actor, incident=incident, at=now, tlp=comment.tlp,
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "comment_id": comment.id,
                "tlp": str(comment.tlp),
            },
        )  # fmt: skip
        if then is not None:
            then(comment)
        return comment

    return in_transaction(session, work)


def edit_comment(
    *, session: Session, incident_id: int | str, comment_id: int, data: CommentUpdate, actor: Actor
) -> Comment:
    """Edit a comment (its author or an admin); the earlier text is kept as a revision."""

    def work() -> Comment:
        incident = get_incident(session, actor, incident_id)
        comment = session.scalar(
            select(Comment).where(Comment.id == comment_id, Comment.incident_id == incident.id, visible_comments(actor))
        )
        if comment is None:
            raise NotFound(f"no comment {comment_id}")
        if comment.author_id != actor.user_id and not allows(actor, Capability.EDIT_ANY_COMMENT):
            raise Forbidden("only the author or an admin edits a comment")
        before = str(comment.tlp)
        check_tlp_change(actor, before, data.tlp)
        now = utcnow()
        session.add(
            CommentRevision(
                comment_id=comment.id, body=comment.body, tlp=comment.tlp, edited_at=now, edited_by_id=actor.user_id
            )
        )
        if data.body is not None:
            comment.body = data.body
        if data.tlp is not None:
            comment.tlp = data.tlp
        comment.updated_at = now
        record_event(
            session, kind="comment.edited", actor=actor, incident=incident, at=now, tlp=stricter(before, comment.tlp),
            data={
                "ref": incident.ref,
                "status": str(incident.status),
                "comment_id": comment.id,
                "tlp": str(comment.tlp),
            },
        )  # fmt: skip
        return comment

    return in_transaction(session, work)
