"""/api/v1/metrics: time to acknowledge, contain and resolve (median, p90), pages answered, breaches, by period."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from incidents import deadlines, metrics
from incidents.models import Incident, Organisation
from incidents.records import DeadlineClock
from playbooks.models import Page
from tests import paging

URL = "/api/v1/incidents"
BASE = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # Monday 08:00 local


def file(client, headers, **overrides) -> int:
    return paging.file_followed_up(client, headers, **overrides)["id"]


def test_metrics_median_and_p90_by_category_and_organisation_leave_drills_out(client, operator, session):
    # Seeded times: incident n is received at BASE + n days, contained after (n+1) h, resolved after (n+2)*3 h.
    seeded = []
    for n in range(10):
        category = "dos" if n % 2 else "malware"
        system = "cong-dvc" if n < 6 else "cong-ttdt"
        detected = "2026-03-02T07:00:00+07:00" if n == 0 else "2026-03-01T07:00:00+07:00"
        seeded.append((file(client, operator, category=category, affected_system=system, detected_at=detected), n,
                       category))  # fmt: skip
    drill = file(client, operator, exercise=True)
    dic = session.scalar(select(Organisation.id).where(Organisation.code == "dic"))
    session.commit()
    with session.begin():
        for iid, n, _ in [*seeded, (drill, 0, "dos")]:
            created = BASE + timedelta(days=n)
            session.execute(update(Incident).where(Incident.id == iid).values(
                created_at=created, contained_at=created + timedelta(hours=n + 1),
                resolved_at=None if n == 9 else created + timedelta(hours=(n + 2) * 3)))  # fmt: skip
            for k in range(2):  # two pages each; the first acknowledged after (n+1)*10 minutes
                session.add(Page(incident_id=iid, target_kind="organisation", target="dic", target_label="DIC",
                                 organisation_id=dic, state="acknowledged" if k == 0 else "open",
                                 acked_at=created + timedelta(minutes=(n + 1) * 10) if k == 0 else None,
                                 created_at=created))  # fmt: skip
    # The first incident's notification clock (detected 07:00 on 2 March, due five days later) breaches.
    clock = session.scalar(select(DeadlineClock).where(DeadlineClock.incident_id == seeded[0][0],
                                                       DeadlineClock.rule == "notification"))  # fmt: skip
    session.commit()
    assert deadlines.check(session=session, clock_id=clock.id, now=clock.due_at) == "breached"
    r = client.get("/api/v1/metrics?from=2026-03-01&to=2026-03-31", headers=operator)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["incidents"] == 10  # the drill is not counted
    contain = [(n + 1) * 3600.0 for _, n, _ in seeded]
    resolve = [(n + 2) * 3 * 3600.0 for _, n, _ in seeded if n != 9]
    ack = [(n + 1) * 600.0 for _, n, _ in seeded]
    assert body["contain"]["median_seconds"] == metrics.percentile(contain, 50) == 5 * 3600
    assert body["contain"]["p90_seconds"] == metrics.percentile(contain, 90) == 9 * 3600
    assert body["resolve"]["count"] == 9 and body["resolve"]["median_seconds"] == metrics.percentile(resolve, 50)
    assert body["acknowledge"]["p90_seconds"] == metrics.percentile(ack, 90)
    dos = [(n + 1) * 3600.0 for _, n, c in seeded if c == "dos"]
    assert body["contain"]["by_category"]["dos"] == {
        "count": 5, "median_seconds": metrics.percentile(dos, 50), "p90_seconds": metrics.percentile(dos, 90),
    }  # fmt: skip
    assert set(body["contain"]["by_organisation"]) == {"ppc_office"}
    assert body["pages"] == [{"organisation": "dic", "sent": 20, "acknowledged": 10}]
    assert body["breaches"] == {"total": 1, "by_rule": {"notification": 1}}
    weeks = {w["period"]: w for w in body["series"]["week"]}
    assert sum(w["incidents"] for w in weeks.values()) == 10
    # 2-8 March is ISO week 10 (seven incidents, the breach on Saturday 7th); 9-11 March week 11.
    assert (weeks["2026-W10"]["incidents"], weeks["2026-W10"]["breaches"]) == (7, 1)
    assert (weeks["2026-W11"]["incidents"], weeks["2026-W11"]["breaches"]) == (3, 0)
    (month,) = body["series"]["month"]
    assert month == {**month, "period": "2026-03", "incidents": 10, "breaches": 1}
    assert client.get("/api/v1/metrics?from=2026-03-01&to=2026-03-31", headers=operator).json == body


def test_metrics_count_only_what_the_reader_may_see_and_refuse_bad_ranges(client, operator, make_token):
    file(client, operator, tlp="red")
    file(client, operator)
    today = datetime.now(deadlines.LOCAL_TZ).date().isoformat()
    member = client.get(f"/api/v1/metrics?from={today}&to={today}", headers=make_token("committee")).json
    own = client.get(f"/api/v1/metrics?from={today}&to={today}", headers=operator).json
    assert (member["incidents"], own["incidents"]) == (1, 2)
    assert client.get("/api/v1/metrics?from=2026-13-01", headers=operator).status_code == 422
    assert client.get("/api/v1/metrics?from=2026-05-01&to=2026-04-01", headers=operator).status_code == 422
    assert client.get("/api/v1/metrics").status_code == 401
