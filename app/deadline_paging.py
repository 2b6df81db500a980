"""Deadline warnings page the standing body through the paging engine (incidents cannot import playbooks)."""

from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from incidents import deadlines
from incidents.models import Incident
from incidents.records import DeadlineClock
from incidents.reporting import periodic
from incidents.reporting.reports import local
from playbooks import engine

_CONFIG: dict[str, Any] = {}


def page_standing_body(session: Session, incident: Incident, clock: DeadlineClock, rule: deadlines.Rule) -> None:
    """Page the standing body (UCSC_STANDING_BODY) that a deadline is near; one page per clock."""
    code = _CONFIG.get("STANDING_BODY")
    if not code:
        return
    due = local(clock.due_at)
    engine.create_page(
        session,
        incident=incident,
        body={
            "organisation": code,
            "reason_vi": f"Sắp đến hạn: {rule.title_vi} — hạn {due}",
            "reason_en": f"Deadline near: {rule.title_en}, due {due} (Asia/Ho_Chi_Minh)",
        },
        run=None,
        path=None,
        settings=engine.Settings.from_config(_CONFIG),
        key=f"deadline:{clock.id}",
    )


def init_app(app: Flask) -> None:
    """Wire the warning hook and the rules for this process (the web app and the worker)."""
    _CONFIG.clear()
    _CONFIG.update(app.config)
    deadlines.configure(app.config)
    if page_standing_body not in deadlines.WARNING_HOOKS:
        deadlines.WARNING_HOOKS.append(page_standing_body)


def schedule(session: Session, config: dict[str, Any]) -> None:
    periodic.schedule_reminders(session, days_before=int(config.get("PERIODIC_REMINDER_DAYS", 7)))
