"""Deadline clocks: configurable rules (incidents/deadlines.yaml), calendar or working days, warn then breach.

Clocks start and are met by the incident's own events (`on_events`, a listener app/wiring.py registers, so
they commit with the change), and two durable jobs per clock look again at the warning and the due time. The
rules and the warning's hook ride on the session (`SETTINGS` in `session.info`, set by the app's session
factories), so each app's sessions follow its own configuration. Every function that judges time takes `now`,
so tests drive the clock instead of sleeping.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.access import Actor
from incidents.base import utcnow
from incidents.clock import LOCAL_TZ
from incidents.enums import IncidentClass, NotifiedParty, Status
from incidents.events import record_event
from incidents.models import Event, Incident
from incidents.queries import get_incident
from incidents.records import DeadlineClock
from incidents.uow import in_transaction

SHIPPED = Path(__file__).with_name("deadlines.yaml")
CHECK = "deadline.check"
STARTS = ("created", "detected", "response_ended", "escalated")
MET_BY = ("triage", "notified", "initial_report", "end_report", "contained")
UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
OPEN_STATES = ("running", "warned")


@dataclass(frozen=True)
class Rule:
    code: str
    title_vi: str
    title_en: str
    start: str
    met_by: tuple[str, ...]
    amount: float
    unit: str
    counting: str
    warn_minutes: float
    source: str = ""
    profile: str = ""
    # The parties that must all be ticked as notified before "notified" meets the rule; none: any ticked party.
    parties: tuple[str, ...] = ()

    def notified_enough(self, ticked: Iterable[str] | None) -> bool:
        ticked = set(ticked or ())
        return bool(ticked) and set(self.parties) <= ticked


@dataclass(frozen=True)
class Rules:
    """The rules of the enabled profiles and the holiday table."""

    rules: tuple[Rule, ...]
    holidays: frozenset[date]

    def get(self, code: str) -> Rule | None:
        return next((r for r in self.rules if r.code == code), None)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def due(self, rule: Rule, start: datetime) -> datetime:
        """The absolute due time of `rule` started at `start`."""
        if rule.counting == "calendar":
            return start + timedelta(seconds=rule.amount * UNITS[rule.unit])
        local = start.astimezone(LOCAL_TZ)
        if rule.unit == "days":
            # The same local clock time on the Nth working day after the starting day.
            day, counted = local.date(), 0
            while counted < int(rule.amount):
                day += timedelta(days=1)
                counted += self.is_working_day(day)
            return datetime.combine(day, local.timetz()).astimezone(start.tzinfo)
        # Hours or minutes on working days only: the time of non-working days does not count.
        remaining = timedelta(seconds=rule.amount * UNITS[rule.unit])
        cursor = local
        while remaining > timedelta(0):
            midnight = datetime.combine(cursor.date() + timedelta(days=1), time(0), LOCAL_TZ)
            if not self.is_working_day(cursor.date()):
                cursor = midnight
                continue
            step = min(remaining, midnight - cursor)
            cursor, remaining = cursor + step, remaining - step
        return cursor.astimezone(start.tzinfo)

    def warn(self, rule: Rule, start: datetime, due: datetime) -> datetime:
        return max(start, due - timedelta(minutes=rule.warn_minutes))


def parse_rules(source: dict[str, Any], profiles: Iterable[str]) -> Rules:
    """Rules of `profiles` from the YAML structure; ValueError names the first bad entry."""
    chosen: list[Rule] = []
    all_profiles = source.get("profiles") or {}
    for profile in profiles:
        if profile not in all_profiles:
            raise ValueError(f"no deadline profile {profile!r}; known: {', '.join(all_profiles)}")
        for i, item in enumerate(all_profiles[profile] or []):
            where = f"profiles.{profile}[{i}]"
            met_by = tuple(item.get("met_by") or [])
            rule = Rule(
                code=str(item["code"]),
                title_vi=str(item.get("title_vi") or item["code"]),
                title_en=str(item.get("title_en") or item["code"]),
                start=str(item["start"]),
                met_by=met_by,
                amount=float(item["amount"]),
                unit=str(item["unit"]),
                counting=str(item.get("counting", "calendar")),
                warn_minutes=float(item.get("warn_minutes", 0)),
                source=str(item.get("source") or ""),
                profile=profile,
                parties=tuple(str(p) for p in item.get("parties") or []),
            )
            if any(p not in {n.value for n in NotifiedParty} for p in rule.parties):
                raise ValueError(f"{where}.parties: a list of {', '.join(NotifiedParty)}")
            if rule.start not in STARTS:
                raise ValueError(f"{where}.start: one of {', '.join(STARTS)}")
            if not met_by or any(m not in MET_BY for m in met_by):
                raise ValueError(f"{where}.met_by: a list of {', '.join(MET_BY)}")
            if rule.unit not in UNITS or rule.counting not in ("calendar", "working") or rule.amount <= 0:
                raise ValueError(f"{where}: unit minutes|hours|days, counting calendar|working, amount > 0")
            if any(r.code == rule.code for r in chosen):
                raise ValueError(f"{where}.code: {rule.code!r} appears twice")
            chosen.append(rule)
    holidays = frozenset(date.fromisoformat(str(h["date"])) for h in source.get("holidays") or [])
    return Rules(tuple(chosen), holidays)


@cache
def _load(path: str, profiles: tuple[str, ...]) -> Rules:
    return parse_rules(yaml.safe_load(Path(path).read_text(encoding="utf-8")), profiles)


def rules_from_config(config: dict[str, Any]) -> Rules:
    path = str(config.get("DEADLINES_FILE") or SHIPPED)
    profiles = tuple(p.strip() for p in str(config.get("DEADLINE_PROFILES") or "circular20").split(",") if p.strip())
    return _load(path, profiles)


WarningHook = Callable[[Session, Incident, DeadlineClock, Rule], None]
# The session.info key of a session's `Settings`.
SETTINGS = "ucsc.deadlines"


@dataclass(frozen=True)
class Settings:
    """The rules new clocks follow, and what a warning does beyond its event: the app pages the standing body
    (incidents cannot import playbooks). The hook runs inside the warning's transaction, so its page commits
    with the warning."""

    rules: Rules
    on_warning: WarningHook | None = None


def settings_from_config(config: dict[str, Any], on_warning: WarningHook | None = None) -> Settings:
    return Settings(rules_from_config(config), on_warning)


def settings_of(session: Session) -> Settings:
    """The session's settings; a session no app configured follows the shipped rules and warns no one."""
    return session.info.get(SETTINGS) or Settings(_load(str(SHIPPED), ("circular20",)))


def rules_of(session: Session) -> Rules:
    return settings_of(session).rules


def _escalated(incident: Incident) -> bool:
    return bool(
        incident.beyond_capacity
        or incident.incident_class == IncidentClass.SERIOUS
        or incident.class_proposed_at is not None
    )


def _start(session: Session, incident: Incident, rule: Rule, at: datetime, rules: Rules) -> DeadlineClock | None:
    exists = session.scalar(
        select(DeadlineClock.id).where(DeadlineClock.incident_id == incident.id, DeadlineClock.rule == rule.code)
    )
    if exists is not None:
        return None
    due = rules.due(rule, at)
    clock = DeadlineClock(
        incident_id=incident.id, rule=rule.code, started_at=at, warn_at=rules.warn(rule, at, due), due_at=due
    )
    session.add(clock)
    session.flush()
    jobs.enqueue_many(session, _check_jobs(clock.id, incident.id, clock.warn_at, clock.due_at, utcnow()))
    return clock


def _meet(session: Session, incident: Incident, what: str, at: datetime, rules: Rules) -> None:
    codes = [
        r.code
        for r in rules.rules
        if what in r.met_by and (what != "notified" or r.notified_enough(incident.notified_parties))
    ]
    if not codes:
        return
    clocks = session.scalars(
        select(DeadlineClock).where(
            DeadlineClock.incident_id == incident.id,
            DeadlineClock.rule.in_(codes),
            DeadlineClock.state.in_(OPEN_STATES),
        )
    ).all()
    for clock in clocks:
        clock.met_at = at
        if at > clock.due_at:
            _breach(session, incident, clock, at, late=True)
        else:
            # Met in time: the clock's state says so; only warnings and breaches go on the timeline.
            clock.state = "met"


def _breach(session: Session, incident: Incident, clock: DeadlineClock, at: datetime, *, late: bool = False) -> None:
    clock.state, clock.breached_at = "breached", at
    _event(session, incident, clock, rules_of(session), "deadline.breached", at, alert=True, met_late=late)


def _event(
    session: Session, incident: Incident, clock: DeadlineClock, rules: Rules, kind: str, at: datetime, **extra: Any
) -> None:
    rule = rules.get(clock.rule)
    record_event(
        session,
        kind=kind,
        actor=None,
        incident=incident,
        at=at,
        note=rule.title_vi if rule else clock.rule,
        data={
            "ref": incident.ref,
            "status": str(incident.status),
            "rule": clock.rule,
            "due_at": clock.due_at.isoformat(),
            "exercise": incident.exercise,
            **extra,
        },
    )


def on_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Meet, stop or start later clocks as the incident's events are written (inside the writing transaction); a
    new incident's clocks are started by the worker (`start_filed`), not by its filing."""
    mine = [e for e in events if e.get("incident_id") is not None and e["kind"] in _CHANGES]
    if not mine:
        return
    rules = rules_of(session)
    for event in mine:
        incident = session.get(Incident, event["incident_id"])
        if incident is None:
            continue
        _apply(session, incident, event, rules)


def start_filed(session: Session, incident_ids: Sequence[int]) -> None:
    """Start the clocks of newly filed incidents (the worker, after the filing's commit; the caller holds their
    rows locked): one INSERT for a batch, then the changes recorded since the filing, applied in order, as they
    were when the clocks did not exist yet."""
    if not incident_ids:
        return
    rules = rules_of(session)
    _start_created(session, list(incident_ids), rules)
    later = session.execute(
        select(Event.incident_id, Event.kind, Event.at, Event.data)
        .where(Event.incident_id.in_(incident_ids), Event.kind.in_(_CHANGES))
        .order_by(Event.id)
    ).all()
    for event in later:
        incident = session.get(Incident, event.incident_id)
        if incident is not None:
            _apply(session, incident, {"kind": event.kind, "at": event.at, "data": event.data}, rules)


def _start_created(session: Session, incident_ids: list[int], rules: Rules) -> None:
    """Clocks of newly filed incidents, in one INSERT and one batch of jobs (a bulk filing brings 500); a clock a
    change started meanwhile (an escalation) is left as it is."""
    have = {
        (incident_id, rule)
        for incident_id, rule in session.execute(
            select(DeadlineClock.incident_id, DeadlineClock.rule).where(DeadlineClock.incident_id.in_(incident_ids))
        )
    }
    rows = session.execute(
        select(
            Incident.id, Incident.created_at, Incident.detected_at, Incident.beyond_capacity,
            Incident.incident_class, Incident.class_proposed_at, Incident.notified_parties,
        ).where(Incident.id.in_(incident_ids))
    ).all()  # fmt: skip
    values = []
    for row in rows:
        escalated = bool(row.beyond_capacity or row.incident_class == IncidentClass.SERIOUS or row.class_proposed_at)
        for rule in rules.rules:
            start = {"created": row.created_at, "detected": row.detected_at,
                     "escalated": row.created_at if escalated else None}.get(rule.start)  # fmt: skip
            if start is None or (row.id, rule.code) in have:
                continue
            due = rules.due(rule, start)
            met = "notified" in rule.met_by and rule.notified_enough(row.notified_parties)
            values.append({
                "incident_id": row.id, "rule": rule.code, "started_at": start, "warn_at": rules.warn(rule, start, due),
                "due_at": due, "state": "met" if met else "running", "met_at": row.created_at if met else None,
            })  # fmt: skip
    if not values:
        return
    returning = insert(DeadlineClock).returning(
        DeadlineClock.id, DeadlineClock.incident_id, sort_by_parameter_order=True
    )
    inserted = session.execute(returning, values).all()
    now = utcnow()
    jobs.enqueue_many(session, [
        job for r, v in zip(inserted, values, strict=True) if v["state"] == "running"
        for job in _check_jobs(r.id, r.incident_id, v["warn_at"], v["due_at"], now)
    ])  # fmt: skip


def _check_jobs(clock_id: int, incident_id: int, warn_at: datetime, due_at: datetime, now: datetime) -> list[Any]:
    """A running clock's checks, at its warning and due times. A clock that is already late (an incident filed
    days after its detection) checks now, in filing order: queued at its long-past due time it would jump ahead
    of every delivery due meanwhile and starve them; one already past due gets no warning check, which would find
    it breached."""
    times = [("due", due_at)] if due_at <= now else [("warn", warn_at), ("due", due_at)]
    return [
        jobs.job_values(CHECK, {"clock_id": clock_id}, run_at=max(when, now), key=f"{CHECK}:{clock_id}:{name}",
                        incident_id=incident_id)
        for name, when in times
    ]  # fmt: skip


# The changes that meet, stop or start clocks after the filing.
_CHANGES = frozenset({
    "incident.status_changed", "incident.updated", "incident.classification_proposed",
    "incident.classification_decided", "report.created",
})  # fmt: skip


def _apply(session: Session, incident: Incident, event: dict[str, Any], rules: Rules) -> None:
    kind, at, data = event["kind"], event["at"], event.get("data") or {}
    if kind == "incident.status_changed":
        to, origin = data.get("to"), data.get("from")
        if origin == Status.NEW and to != Status.NEW:
            _meet(session, incident, "triage", at, rules)
        if to == Status.ERADICATION:
            _meet(session, incident, "contained", at, rules)
        if to == Status.REVIEW:
            for rule in rules.rules:
                if rule.start == "response_ended":
                    _start(session, incident, rule, at, rules)
        if to in (Status.REJECTED, Status.MERGED):
            _stop(session, incident, at)
    elif kind in ("incident.updated", "incident.classification_proposed", "incident.classification_decided"):
        changes = data.get("changes") or {}
        if _escalated(incident):
            _start_escalated(session, incident, at, rules)
        if "notified_parties" in changes and incident.notified_parties:
            _meet(session, incident, "notified", at, rules)
    elif kind == "report.created":
        _meet(session, incident, "initial_report" if data.get("report") == "initial" else "end_report", at, rules)


def _start_escalated(session: Session, incident: Incident, at: datetime, rules: Rules) -> None:
    for rule in rules.rules:
        if rule.start == "escalated":
            clock = _start(session, incident, rule, at, rules)
            # An initial report made before the escalation already answers it.
            if clock is not None and "initial_report" in rule.met_by and _has_report(session, incident.id, "initial"):
                clock.state, clock.met_at = "met", at


def _has_report(session: Session, incident_id: int, kind: str) -> bool:
    from incidents.records import Report

    return session.scalar(select(Report.id).where(Report.incident_id == incident_id, Report.kind == kind)) is not None


def _stop(session: Session, incident: Incident, at: datetime) -> None:
    for clock in session.scalars(
        select(DeadlineClock).where(DeadlineClock.incident_id == incident.id, DeadlineClock.state.in_(OPEN_STATES))
    ):
        clock.state = "stopped"


def check(*, session: Session, clock_id: int, now: datetime) -> str | None:
    """Warn or breach one clock if `now` has reached its time; returns what happened (one transaction)."""
    return in_transaction(session, lambda: _check(session, clock_id, now))


def _check(session: Session, clock_id: int, now: datetime) -> str | None:
    clock = session.scalar(
        select(DeadlineClock)
        .where(DeadlineClock.id == clock_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if clock is None or clock.state not in OPEN_STATES:
        return None
    incident = session.get(Incident, clock.incident_id)
    if incident is None:
        return None
    if now >= clock.due_at:
        _breach(session, incident, clock, now)
        return "breached"
    if now >= clock.warn_at and clock.state == "running":
        clock.state, clock.warned_at = "warned", now
        settings = settings_of(session)
        _event(session, incident, clock, settings.rules, "deadline.warning", now, alert=True)
        rule = settings.rules.get(clock.rule)
        if rule is not None and settings.on_warning is not None:
            settings.on_warning(session, incident, clock, rule)
        return "warned"
    return None


def run_check(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """The `deadline.check` job: look at one clock again at its warning or due time, with the checks due behind it
    (up to JOB_BATCH in all: a backlog of late filings brings one each); the jobs end in the same transaction."""
    more = int(ctx.config.get("JOB_BATCH", 1)) - 1

    def work() -> None:
        now = utcnow()
        for payload in [job.payload, *jobs.absorb(session, job, more)]:
            _check(session, int(payload["clock_id"]), now)
        jobs.finish(session, job)

    with ctx.sessions() as session:
        in_transaction(session, work)


def clocks_of(session: Session, actor: Actor, incident_id: int | str) -> list[DeadlineClock]:
    """The incident's clocks, oldest first, if `actor` may see the incident."""
    incident = get_incident(session, actor, incident_id)
    return list(
        session.scalars(
            select(DeadlineClock).where(DeadlineClock.incident_id == incident.id).order_by(DeadlineClock.id)
        )
    )


def as_dict(clock: DeadlineClock, rules: Rules) -> dict[str, Any]:
    rule = rules.get(clock.rule)

    def ts(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": clock.id,
        "rule": clock.rule,
        "title_vi": rule.title_vi if rule else clock.rule,
        "title_en": rule.title_en if rule else clock.rule,
        "counting": rule.counting if rule else None,
        "source": rule.source if rule else None,
        "state": clock.state,
        "started_at": ts(clock.started_at),
        "warn_at": ts(clock.warn_at),
        "due_at": ts(clock.due_at),
        "warned_at": ts(clock.warned_at),
        "met_at": ts(clock.met_at),
        "breached_at": ts(clock.breached_at),
    }
