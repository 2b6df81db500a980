"""The committee board at /board: read-only, for a wall screen and a phone, updated in place from /live."""

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import select

from app import db
from app.web import labels
from app.web.browser import bp, current_actor
from app.web.records import board_metrics
from app.web.response import board_context
from app.web.views import is_fragment, render, roles
from incidents import dashboard, deadlines, jobs
from incidents.access import Actor, visible_incidents
from incidents.base import utcnow
from incidents.clock import LOCAL_TZ
from incidents.models import Incident
from incidents.policy import Capability, allows, roles_with
from incidents.records import DeadlineClock
from incidents.sources import mailbox, windows

DAYS = 14  # the daily chart's span
CATEGORY_DAYS = 30  # the per-category chart's span
_LIVE_CLOCKS = ("running", "warned", "breached")


def _worker_stale() -> bool:
    health = jobs.health(db.engine())
    age = health.get("worker_heartbeat_age")
    return age is None or age > float(current_app.config["WORKER_STALE_SECONDS"])


def _clocks(open_incidents: list[Incident]) -> dict[int, list[tuple[DeadlineClock, Any]]]:
    """The deadline clocks still counting (or breached) per open incident: the rules the incident page shows."""
    session = db.session()
    rules = deadlines.rules_of(session)
    ids = [i.id for i in open_incidents]
    out: dict[int, list[tuple[DeadlineClock, Any]]] = {}
    if not ids:
        return out
    stmt = (
        select(DeadlineClock)
        .where(DeadlineClock.incident_id.in_(ids), DeadlineClock.state.in_(_LIVE_CLOCKS))
        .order_by(DeadlineClock.due_at, DeadlineClock.id)
    )
    for clock in session.scalars(stmt):
        out.setdefault(clock.incident_id, []).append((clock, rules.get(clock.rule)))
    return out


def _overdue(clocks: list[tuple[DeadlineClock, Any]], now: datetime) -> bool:
    return any(c.state == "breached" or (c.due_at is not None and c.due_at <= now) for c, _rule in clocks)


def _awaiting_ack(pages: list[Any]) -> bool:
    return any(p.state == "open" and p.requires_ack and not p.acked_at for p in pages)


def _urgency(incident: Incident, clocks: list[tuple[DeadlineClock, Any]], pages: list[Any], now: datetime) -> tuple:
    """Overdue first, then serious, then priority, then awaiting acknowledgement, then the nearest deadline."""
    nearest = min((c.due_at for c, _rule in clocks if c.due_at is not None), default=None)
    return (
        0 if _overdue(clocks, now) else 1,
        0 if incident.incident_class == "serious" else 1,
        str(incident.priority or "P9"),
        0 if _awaiting_ack(pages) else 1,
        nearest.timestamp() if nearest else float("inf"),
        incident.detected_at.timestamp(),
    )


def _daily(actor: Actor, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """Incidents detected per local day over DAYS days, and per category over CATEGORY_DAYS days."""
    session = db.session()
    today = now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=DAYS - 1)
    since = today - timedelta(days=CATEGORY_DAYS - 1)
    stmt = select(Incident.detected_at, Incident.category).where(
        visible_incidents(actor), Incident.detected_at >= since
    )
    days: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for detected_at, category in session.execute(stmt):
        categories[str(category)] += 1
        local = detected_at.astimezone(LOCAL_TZ)
        if local >= first_day:
            days[local.date().isoformat()] += 1
    span = [(first_day + timedelta(days=n)).date() for n in range(DAYS)]
    daily = {
        "labels": [d.strftime("%d/%m") for d in span],
        "datasets": [{"label": str(_("Incidents")), "data": [days.get(d.isoformat(), 0) for d in span]}],
    }
    ordered = categories.most_common()
    per_category = {
        "labels": [str(labels.label(labels.CATEGORY, c)) for c, _n in ordered],
        "datasets": [{"label": str(_("Incidents")), "data": [n for _c, n in ordered]}],
    }
    return daily, per_category


@bp.route("/board")
@roles(*roles_with(Capability.VIEW_BOARD))
def board() -> Any:
    session = db.session()
    actor = current_actor()
    now = utcnow()
    open_incidents = dashboard.open_incidents(session, actor)
    response = board_context(actor, open_incidents)
    clocks = _clocks(open_incidents)
    pages = response["pages_by_incident"]
    open_incidents.sort(key=lambda i: _urgency(i, clocks.get(i.id, []), pages.get(i.id, []), now))
    counters = {
        "open": len(open_incidents),
        "serious": sum(1 for i in open_incidents if i.incident_class == "serious"),
        "p1": sum(1 for i in open_incidents if i.priority == "P1"),
        "overdue": sum(1 for i in open_incidents if _overdue(clocks.get(i.id, []), now)),
        "awaiting_ack": sum(1 for i in open_incidents if _awaiting_ack(pages.get(i.id, []))),
        "awaiting_direction": len(response["inbox"]),
    }
    daily, per_category = _daily(actor, now)
    ack = dashboard.ack_minutes_by_week(session, actor, now=now)
    ack_chart = {
        "labels": [datetime.fromisoformat(w).strftime("%d/%m") for w in ack],
        "datasets": [{"label": str(_("Median minutes to acknowledge")), "data": list(ack.values())}],
    }
    context = {
        "ack_chart_json": json.dumps(ack_chart, ensure_ascii=False),
        "ack_minutes": ack,
        **response,
        **board_metrics(actor, now),
        "counters": counters,
        "clocks": clocks,
        "overdue_ids": {i.id for i in open_incidents if _overdue(clocks.get(i.id, []), now)},
        "failures": dashboard.final_page_failures(session, actor, since=now - timedelta(hours=24)),
        "open": open_incidents,
        "feed": dashboard.recent_events(session, actor),
        "category_counts": list(zip(per_category["labels"], per_category["datasets"][0]["data"], strict=True)),
        "daily_json": json.dumps(daily, ensure_ascii=False),
        "category_json": json.dumps(per_category, ensure_ascii=False),
        "category_days": CATEGORY_DAYS,
        "days": DAYS,
        "worker_stale": _worker_stale(),
        "maintenance": windows.in_force(session, now),  # alerts held from paging right now
        # E-mail the [TBSC] mailbox could not file: the desk's to look at (docs/sources.md).
        "rejected_mail": mailbox.rejected_since(session, now - timedelta(hours=24))
        if allows(actor, Capability.MANAGE_SOURCES)
        else [],
        "now": now,
    }
    if is_fragment():
        return render("_board_body.html", **context)
    return render("board.html", **context)
