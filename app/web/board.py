"""The committee board at /board: read-only, for a wall screen and a phone, updated in place from /live."""

import json
from datetime import timedelta
from typing import Any

from flask import current_app
from flask_babel import gettext as _

from app import db
from app.web import labels
from app.web.browser import bp, current_actor
from app.web.records import board_metrics
from app.web.response import board_context
from app.web.views import is_fragment, render, roles
from incidents import dashboard, jobs
from incidents.base import utcnow
from incidents.policy import Capability, allows, roles_with
from incidents.sources import mailbox, windows


def _worker_stale() -> bool:
    health = jobs.health(db.engine())
    age = health.get("worker_heartbeat_age")
    return age is None or age > float(current_app.config["WORKER_STALE_SECONDS"])


@bp.route("/board")
@roles(*roles_with(Capability.VIEW_BOARD))
def board() -> Any:
    session = db.session()
    actor = current_actor()
    now = utcnow()
    weeks = dashboard.counts_by_week(session, actor, now=now)
    this_week = weeks[max(weeks)] if weeks else {}
    chart = {
        "labels": list(weeks),
        "datasets": [
            {"label": str(labels.CATEGORY[c]), "data": [weeks[w].get(c, 0) for w in weeks]}
            for c in labels.CATEGORY
            if any(weeks[w].get(c, 0) for w in weeks)
        ],
    }
    open_incidents = dashboard.open_incidents(session, actor)
    ack = dashboard.ack_minutes_by_week(session, actor, now=now)
    ack_chart = {
        "labels": list(ack),
        "datasets": [{"label": str(_("Median minutes to acknowledge")), "data": list(ack.values())}],
    }
    context = {
        "ack_chart_json": json.dumps(ack_chart, ensure_ascii=False),
        "ack_minutes": ack,
        **board_context(actor, open_incidents),
        **board_metrics(actor, now),
        "failures": dashboard.final_page_failures(session, actor, since=now - timedelta(hours=24)),
        "open": open_incidents,
        "feed": dashboard.recent_events(session, actor),
        "this_week": sorted(this_week.items(), key=lambda kv: -kv[1]),
        "chart_json": json.dumps(chart, ensure_ascii=False),
        "worker_stale": _worker_stale(),
        "maintenance": windows.in_force(session, now),  # alerts held from paging right now
        # E-mail the [TBSC] mailbox could not file: the desk's to look at (docs/sources.md).
        "rejected_mail": mailbox.rejected_since(session, now - timedelta(hours=24))
        if allows(actor, Capability.MANAGE_SOURCES)
        else [],
        "report_hours": float(current_app.config["BOARD_REPORT_HOURS"]),
        "response_hours": float(current_app.config["BOARD_RESPONSE_HOURS"]),
        "timedelta": timedelta,
        "now": now,
    }
    if is_fragment():
        return render("_board_body.html", **context)
    return render("board.html", **context)
