"""Webhook updates: stored once by the web process, processed by the leader in update_id order."""

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.telegram.settings import Settings
from incidents.base import utcnow
from incidents.uow import in_transaction
from playbooks.telegram_models import TelegramUpdate


def store_update(session: Session, settings: Settings, body: dict[str, Any]) -> bool:
    """Keep an update for the worker; False for a repeat of an update_id already stored (Telegram retries)."""
    update_id = body.get("update_id")
    if not isinstance(update_id, int):
        raise ValueError("update_id missing")

    def work() -> bool:
        exists = session.scalar(
            select(TelegramUpdate.id).where(TelegramUpdate.bot == settings.bot, TelegramUpdate.update_id == update_id)
        )
        if exists is not None:
            return False
        session.add(TelegramUpdate(bot=settings.bot, update_id=update_id, body=body))
        session.flush()
        return True

    try:
        return in_transaction(session, work)
    except IntegrityError:
        return False


def unprocessed(session: Session, bot: str) -> list[tuple[int, dict]]:
    """The next stored updates not yet processed, oldest update first: (row id, body)."""
    rows = session.execute(
        select(TelegramUpdate.id, TelegramUpdate.body)
        .where(TelegramUpdate.bot == bot, TelegramUpdate.processed_at.is_(None))
        .order_by(TelegramUpdate.update_id).limit(50)
    ).all()  # fmt: skip
    return [(r[0], r[1]) for r in rows]


def mark_processed(session: Session, row_id: int) -> None:
    done = update(TelegramUpdate).where(TelegramUpdate.id == row_id).values(processed_at=utcnow())
    in_transaction(session, lambda: session.execute(done))
