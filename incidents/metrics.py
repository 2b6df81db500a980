"""Response metrics: time to acknowledge, contain and resolve (median, p90), pages answered, deadline breaches.

Times run from the incident's receipt (`created_at`): acknowledged at the first acknowledged page, contained at
the first entry into eradication, resolved at the first entry into review (design.md). Drills are left out.
Pages live in the playbooks package, which incidents may not import, so they are read through a bare table.
"""

import math
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import column, func, select, table
from sqlalchemy.orm import Session

from incidents.access import Actor, visible_incidents
from incidents.base import UTCDateTime
from incidents.clock import LOCAL_TZ
from incidents.models import Incident, Organisation, System
from incidents.policy import Capability, require
from incidents.records import DeadlineClock

_pages = table(
    "pages", column("incident_id"), column("organisation_id"), column("acked_at", UTCDateTime()), column("created_at")
)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0–100): a value that was observed, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _stats(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "median_seconds": percentile(values, 50), "p90_seconds": percentile(values, 90)}


def _week(at: datetime) -> str:
    year, week, _ = at.astimezone(LOCAL_TZ).isocalendar()
    return f"{year}-W{week:02d}"


def _month(at: datetime) -> str:
    return at.astimezone(LOCAL_TZ).strftime("%Y-%m")


def compute(*, session: Session, actor: Actor, start: date, end: date) -> dict[str, Any]:
    """Metrics of the incidents received from `start` to `end` inclusive (local dates) that `actor` may see."""
    require(actor, Capability.READ_RESPONSE)
    lo = datetime.combine(start, time(0), LOCAL_TZ)
    hi = datetime.combine(end + timedelta(days=1), time(0), LOCAL_TZ)
    first_ack = (
        select(_pages.c.incident_id, func.min(_pages.c.acked_at).label("acked_at"))
        .where(_pages.c.acked_at.is_not(None))
        .group_by(_pages.c.incident_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Incident.id,
            Incident.category,
            Incident.created_at,
            Incident.contained_at,
            Incident.resolved_at,
            Organisation.code.label("org"),
            first_ack.c.acked_at,
        )
        .outerjoin(System, System.id == Incident.affected_system_id)
        .outerjoin(Organisation, Organisation.id == System.owner_id)
        .outerjoin(first_ack, first_ack.c.incident_id == Incident.id)
        .where(Incident.created_at >= lo, Incident.created_at < hi, Incident.exercise.is_(False))
        .where(visible_incidents(actor))
    ).all()
    measures = {"acknowledge": "acked_at", "contain": "contained_at", "resolve": "resolved_at"}
    out: dict[str, Any] = {"from": start.isoformat(), "to": end.isoformat(), "incidents": len(rows)}
    series: dict[str, dict[str, dict[str, Any]]] = {"week": {}, "month": {}}
    for name, attr in measures.items():
        overall: list[float] = []
        by_cat: dict[str, list[float]] = defaultdict(list)
        by_org: dict[str, list[float]] = defaultdict(list)
        by_period: dict[str, dict[str, list[float]]] = {"week": defaultdict(list), "month": defaultdict(list)}
        for r in rows:
            at = getattr(r, attr)
            if at is None:
                continue
            created = r.created_at
            seconds = max(0.0, (at - created).total_seconds())
            overall.append(seconds)
            by_cat[str(r.category)].append(seconds)
            by_org[r.org or "unknown"].append(seconds)
            by_period["week"][_week(created)].append(seconds)
            by_period["month"][_month(created)].append(seconds)
        out[name] = {
            **_stats(overall),
            "by_category": {k: _stats(v) for k, v in sorted(by_cat.items())},
            "by_organisation": {k: _stats(v) for k, v in sorted(by_org.items())},
        }
        for period, groups in by_period.items():
            for key, values in groups.items():
                series[period].setdefault(key, {"period": key})[f"{name}_median_seconds"] = percentile(values, 50)
    for r in rows:
        for period, key in (("week", _week(r.created_at)), ("month", _month(r.created_at))):
            entry = series[period].setdefault(key, {"period": key})
            entry["incidents"] = entry.get("incidents", 0) + 1
    ids = [r.id for r in rows]
    page_rows = session.execute(
        select(
            Organisation.code,
            func.count().label("sent"),
            func.count(_pages.c.acked_at).label("acknowledged"),
        )
        .select_from(_pages)
        .outerjoin(Organisation, Organisation.id == _pages.c.organisation_id)
        .where(_pages.c.incident_id.in_(ids))
        .group_by(Organisation.code)
        .order_by(Organisation.code)
    ).all()
    out["pages"] = [{"organisation": p.code or "unknown", "sent": p.sent, "acknowledged": p.acknowledged}
                    for p in page_rows]  # fmt: skip
    breaches = session.execute(
        select(DeadlineClock.rule, DeadlineClock.breached_at).where(
            DeadlineClock.incident_id.in_(ids), DeadlineClock.state == "breached"
        )
    ).all()
    by_rule: dict[str, int] = defaultdict(int)
    for b in breaches:
        by_rule[b.rule] += 1
        for period, key in (("week", _week(b.breached_at)), ("month", _month(b.breached_at))):
            entry = series[period].setdefault(key, {"period": key})
            entry["breaches"] = entry.get("breaches", 0) + 1
    out["breaches"] = {"total": len(breaches), "by_rule": dict(sorted(by_rule.items()))}
    for period in series:
        for entry in series[period].values():
            entry.setdefault("incidents", 0)
            entry.setdefault("breaches", 0)
    out["series"] = {period: [series[period][k] for k in sorted(series[period])] for period in series}
    return out
