"""Deadline clocks under a controlled clock: working days and Tết, warnings that page, breaches that are events."""

from datetime import UTC, date, datetime, timedelta

import pytest
import yaml
from sqlalchemy import select

from incidents import deadlines, followup, jobs
from incidents.models import Event, Job
from incidents.records import DeadlineClock
from playbooks.models import Page
from tests import paging
from tests.conftest import incident_payload

URL = "/api/v1/incidents"
SHIPPED = yaml.safe_load(deadlines.SHIPPED.read_text(encoding="utf-8"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def file(client, headers, **overrides) -> dict:
    return paging.file_followed_up(client, headers, **overrides)


def clocks(client, headers, incident_id) -> dict[str, dict]:
    r = client.get(f"{URL}/{incident_id}/deadlines", headers=headers)
    assert r.status_code == 200
    return {c["rule"]: c for c in r.json["items"]}


def kinds(session, incident_id: int) -> list[str]:
    session.rollback()
    return list(session.scalars(select(Event.kind).where(Event.incident_id == incident_id).order_by(Event.id)))


@pytest.fixture
def working_days(tmp_path):
    """The shipped holidays, with the notification rule counted in working days."""
    rules = {
        "profiles": {"test": [{
            "code": "notification", "title_vi": "Thông báo sự cố", "title_en": "Notify", "start": "detected",
            "met_by": ["initial_report"], "amount": 5, "unit": "days", "counting": "working", "warn_minutes": 1440,
        }]},
        "holidays": SHIPPED["holidays"],
    }  # fmt: skip
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def app_config(request):
    if "working_days" in request.fixturenames:
        return {"DEADLINES_FILE": str(request.getfixturevalue("working_days")), "DEADLINE_PROFILES": "test"}
    return {"DEADLINE_PROFILES": "circular20,press"}


def test_a_clock_still_ahead_is_checked_at_its_warning_and_due_times(client, operator, session, working_days):
    detected = datetime.now(UTC).replace(microsecond=0)
    incident = file(client, operator, detected_at=detected.isoformat())
    clock = clocks(client, operator, incident["id"])["notification"]
    session.rollback()
    queued = session.scalars(select(Job.run_at).where(Job.kind == deadlines.CHECK, Job.payload["clock_id"].as_integer()
                                                      == clock["id"]).order_by(Job.id)).all()  # fmt: skip
    assert queued == [at(clock["warn_at"]), at(clock["due_at"])]
    assert at(clock["warn_at"]) > detected


def test_five_working_days_skip_the_weekend_and_tet_then_warn_page_and_breach(client, operator, session, working_days):
    # Thursday 12 Feb 2026, 10:00 local: Fri 13 is day 1; the weekend and Tết (16-20 Feb) do not count;
    # Mon 23, Tue 24, Wed 25 and Thu 26 are days 2-5.
    incident = file(client, operator, detected_at="2026-02-12T10:00:00+07:00")
    clock = clocks(client, operator, incident["id"])["notification"]
    assert clock["due_at"] == "2026-02-26T03:00:00+00:00"
    assert clock["warn_at"] == "2026-02-25T03:00:00+00:00"
    assert clock["state"] == "running" and clock["counting"] == "working"
    cid = clock["id"]
    session.rollback()
    queued = session.execute(select(Job.run_at, Job.created_at).where(
        Job.kind == deadlines.CHECK, Job.payload["clock_id"].as_integer() == cid).order_by(Job.id)).all()  # fmt: skip
    # Both times are already past (filed months after detection): a late clock is checked at once, in filing
    # order, not queued at its past time ahead of every delivery due meanwhile; being past due, it gets no
    # warning check, which would only find it breached.
    assert len(queued) == 1, queued
    run, created = queued[0]
    assert at("2026-02-26T10:00:00+07:00") <= run <= created

    assert deadlines.check(session=session, clock_id=cid, now=at("2026-02-25T09:59:59+07:00")) is None
    assert "deadline.warning" not in kinds(session, incident["id"])
    assert deadlines.check(session=session, clock_id=cid, now=at("2026-02-25T10:00:00+07:00")) == "warned"
    assert deadlines.check(session=session, clock_id=cid, now=at("2026-02-25T11:00:00+07:00")) is None  # once
    assert kinds(session, incident["id"]).count("deadline.warning") == 1
    page = session.scalar(select(Page).where(Page.incident_id == incident["id"]))
    assert page is not None and page.target == "dic" and page.key == f"deadline:{cid}"
    assert "Thông báo sự cố" in page.reason_vi and "26/02/2026 10:00" in page.reason_vi

    assert deadlines.check(session=session, clock_id=cid, now=at("2026-02-26T09:59:59+07:00")) is None
    assert deadlines.check(session=session, clock_id=cid, now=at("2026-02-26T10:00:00+07:00")) == "breached"
    breach = session.scalar(select(Event).where(Event.incident_id == incident["id"], Event.kind == "deadline.breached"))
    assert breach.data["rule"] == "notification" and breach.data["alert"] is True
    assert breach.at == at("2026-02-26T10:00:00+07:00")
    after = clocks(client, operator, incident["id"])["notification"]
    assert after["state"] == "breached" and after["breached_at"] == "2026-02-26T03:00:00+00:00"
    # A report made after the breach does not unmake it.
    r = client.post(f"{URL}/{incident['id']}/reports/initial", json={}, headers=operator)
    assert r.status_code == 201
    assert clocks(client, operator, incident["id"])["notification"]["state"] == "breached"


def test_working_day_rules_starting_on_a_holiday_count_from_the_next_working_day(working_days):
    rules = deadlines._load(str(working_days), ("test",))
    rule = rules.get("notification")
    # Tuesday of Tết: the first working day after is Mon 23 Feb; five of them end on Fri 27 Feb.
    assert rules.due(rule, at("2026-02-17T15:30:00+07:00")) == at("2026-02-27T15:30:00+07:00")
    assert rules.is_working_day(date(2026, 2, 23)) and not rules.is_working_day(date(2026, 2, 16))
    assert not rules.is_working_day(date(2026, 9, 2)) and not rules.is_working_day(date(2026, 2, 21))
    hours = deadlines.Rule("h", "h", "h", "detected", ("contained",), 6, "hours", "working", 60)
    # Friday 22:00 + 6 working hours: 2 h on Friday, the weekend skipped, 4 h on Monday.
    assert rules.due(hours, at("2026-03-06T22:00:00+07:00")) == at("2026-03-09T04:00:00+07:00")


def test_clocks_are_met_by_their_events_and_a_met_clock_never_warns_or_breaches(client, operator, session):
    detected = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    incident = file(client, operator, detected_at=detected.isoformat())
    got = clocks(client, operator, incident["id"])
    assert set(got) == {"receipt_ack", "notification", "press_report_6h", "press_response_33h"}
    assert got["press_report_6h"]["due_at"] == (detected + timedelta(hours=6)).isoformat()
    assert got["press_response_33h"]["due_at"] == (detected + timedelta(hours=33)).isoformat()
    assert got["notification"]["due_at"] == (detected + timedelta(days=5)).isoformat()
    client.post(f"{URL}/{incident['id']}/transitions", json={"to": "triage"}, headers=operator)
    client.post(f"{URL}/{incident['id']}/reports/initial", json={}, headers=operator)
    got = clocks(client, operator, incident["id"])
    assert {r: c["state"] for r, c in got.items()} == {
        "receipt_ack": "met", "notification": "met", "press_report_6h": "met", "press_response_33h": "running",
    }  # fmt: skip
    later = detected + timedelta(days=30)
    for rule in ("receipt_ack", "notification", "press_report_6h"):
        assert deadlines.check(session=session, clock_id=got[rule]["id"], now=later) is None
    assert deadlines.check(session=session, clock_id=got["press_response_33h"]["id"], now=later) == "breached"
    assert kinds(session, incident["id"]).count("deadline.breached") == 1


def test_an_escalated_incident_starts_the_initial_report_clock_and_review_starts_the_end_report_clock(
    client, operator, session
):
    incident = file(client, operator, beyond_capacity=True)
    got = clocks(client, operator, incident["id"])
    urgent = got["initial_report_urgent"]
    started = datetime.fromisoformat(urgent["started_at"])
    assert datetime.fromisoformat(urgent["due_at"]) == started + timedelta(hours=2)
    assert "end_report" not in got
    for step in ("triage", "first_response", "containment", "eradication", "recovery", "assessment", "review"):
        assert (
            client.post(f"{URL}/{incident['id']}/transitions", json={"to": step}, headers=operator).status_code == 200
        )
    end = clocks(client, operator, incident["id"])["end_report"]
    assert datetime.fromisoformat(end["due_at"]) - datetime.fromisoformat(end["started_at"]) == timedelta(days=5)
    client.post(f"{URL}/{incident['id']}/reports/end", json={"handling_result": "Xong"}, headers=operator)
    assert clocks(client, operator, incident["id"])["end_report"]["state"] == "met"
    other = file(client, operator)
    client.post(f"{URL}/{other['id']}/transitions", json={"to": "rejected"}, headers=operator)
    states = {rule: c["state"] for rule, c in clocks(client, operator, other["id"]).items()}
    # Leaving `new`, even to reject, answers the reporter; the other clocks stop with the incident.
    assert states.pop("receipt_ack") == "met"
    assert set(states.values()) == {"stopped"}
    session.rollback()
    assert session.scalar(select(DeadlineClock).where(DeadlineClock.incident_id == other["id"])) is not None


def test_clocks_started_after_changes_made_before_the_worker_ran_reflect_those_changes(client, operator, session):
    """The worker starts a filing's clocks after its commit: what happened to the incident in between (an escalation,
    a triage, a rejection) is applied to them in order, at the times it happened, as if the clocks had existed."""
    post = lambda path, body: client.post(f"{URL}/{path}", json=body, headers=operator)  # noqa: E731
    ids = []
    for _ in range(2):
        r = client.post(URL, json=incident_payload(), headers=operator)
        assert r.status_code == 201
        ids.append(r.json["id"])
    worked, rejected = ids
    assert post(f"{worked}/transitions", {"to": "triage"}).status_code == 200
    assert client.patch(f"{URL}/{worked}", json={"beyond_capacity": True}, headers=operator).status_code == 200
    assert post(f"{rejected}/transitions", {"to": "rejected"}).status_code == 200
    # Before the worker: only the clock the escalation itself started.
    assert set(clocks(client, operator, worked)) == {"initial_report_urgent"}
    assert clocks(client, operator, rejected) == {}
    urgent = clocks(client, operator, worked)["initial_report_urgent"]
    assert paging.run_jobs(client.application, (followup.FILED,)) == 2
    session.rollback()  # requests share the fixture's session here: end its snapshot from before the worker ran

    got = clocks(client, operator, worked)
    triaged_at = session.scalar(
        select(Event.at).where(Event.incident_id == worked, Event.kind == "incident.status_changed")
    )
    assert got["receipt_ack"]["state"] == "met" and at(got["receipt_ack"]["met_at"]) == triaged_at.astimezone(UTC)
    assert got["initial_report_urgent"] == urgent  # the escalation started it; the job left it as it was
    assert set(got) == {"receipt_ack", "notification", "press_report_6h", "press_response_33h", "initial_report_urgent"}
    assert {rule: c["state"] for rule, c in clocks(client, operator, rejected).items()} == {
        "receipt_ack": "met", "notification": "stopped", "press_report_6h": "stopped", "press_response_33h": "stopped",
    }  # fmt: skip


def test_one_follow_up_job_starts_the_clocks_of_the_filings_queued_behind_it(client, operator, session):
    """A storm of single filings is followed up in batches: the first job claimed takes the queued ones along in its
    transaction (JOB_BATCH in all), and their jobs end with it."""
    ids = [client.post(URL, json=incident_payload(), headers=operator).json["id"] for _ in range(3)]
    app = client.application
    with app.app_context():
        session.rollback()
        [job] = jobs.claim(session, "test", 1, [followup.FILED])
        assert job.payload["incident_ids"] == [ids[0]]
        followup.run(jobs.JobContext(app.extensions["ucsc.sessionmaker"], dict(app.config)), job)
    session.rollback()
    states = session.scalars(select(Job.state).where(Job.kind == followup.FILED).order_by(Job.id)).all()
    assert states == [jobs.DONE] * 3
    for incident_id in ids:
        assert "notification" in clocks(client, operator, incident_id)
    assert paging.run_jobs(app, (followup.FILED,)) == 0


def test_deadlines_of_an_incident_the_reader_may_not_see_are_404(client, operator, make_token):
    incident = file(client, operator, tlp="red")
    assert client.get(f"{URL}/{incident['id']}/deadlines", headers=make_token("committee")).status_code == 404


def test_a_rules_file_with_an_unknown_start_is_refused_with_its_place(tmp_path):
    bad = {"profiles": {"p": [{"code": "x", "start": "whenever", "met_by": ["triage"], "amount": 1, "unit": "days"}]}}
    with pytest.raises(ValueError, match=r"profiles\.p\[0\]\.start"):
        deadlines.parse_rules(bad, ["p"])
    with pytest.raises(ValueError, match="no deadline profile"):
        deadlines.parse_rules(bad, ["missing"])
