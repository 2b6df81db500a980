"""Deadline warnings page the standing body through paging (incidents cannot import playbooks)."""

from collections.abc import Mapping
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from incidents import deadlines
from incidents.models import Incident
from incidents.records import DeadlineClock
from incidents.reporting.reports import local
from playbooks import paging
from playbooks.settings import Settings


def page_standing_body(
    config: Mapping[str, Any], session: Session, incident: Incident, clock: DeadlineClock, rule: deadlines.Rule
) -> None:
    """Page the standing body (UCSC_STANDING_BODY) that a deadline is near; one page per clock."""
    code = config.get("STANDING_BODY")
    if not code:
        return
    due = local(clock.due_at)
    paging.create_page(
        session,
        incident=incident,
        body={
            "organisation": code,
            "reason_vi": f"Sắp đến hạn: {rule.title_vi} — hạn {due}",
            "reason_en": f"Deadline near: {rule.title_en}, due {due} (Asia/Ho_Chi_Minh)",
        },
        run=None,
        path=None,
        settings=Settings.from_config(config),
        key=f"deadline:{clock.id}",
    )


def settings(config: Mapping[str, Any]) -> deadlines.Settings:
    """The configured rules, with a warning that pages the standing body."""
    return deadlines.settings_from_config(dict(config), partial(page_standing_body, dict(config)))
