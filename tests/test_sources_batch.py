"""Alerts posted together share a write transaction (group commit): each still gets the answer it would alone."""

import pytest
from sqlalchemy import func, select

from app import db
from app.api.sources import GROUP_COMMIT
from app.auth import check_token
from incidents.errors import Forbidden, IdempotencyMismatch, ValidationFailed
from incidents.filing import FilingSettings
from incidents.models import Event, IdempotencyKey, Incident, Occurrence
from incidents.sources import ingest
from incidents.sources.models import Source
from incidents.stix.techniques import TECHNIQUES_ADDED
from incidents.uow import RunAlone, in_transaction
from tests.test_filing_together import assert_nothing_lost_or_doubled, storm
from tests.test_sources_intake import wazuh

URL = "/api/v1/sources/wazuh"


@pytest.fixture
def intake(make_token):
    return make_token("intake", username="siem")


def _agent(body: dict, name: str) -> dict:
    body["agent"] = {"id": name[-3:], "name": name}
    return body


def test_posts_filed_in_one_transaction_each_answer_as_alone_and_a_refused_one_costs_the_others_nothing(app, intake):
    with app.test_request_context():
        actor, _ = check_token(intake["Authorization"].removeprefix("Bearer "))
        settings = FilingSettings()
        bad = wazuh("b.9")
        bad["rule"]["level"] = "high"
        posts = [
            ingest.AlertPost("wazuh", body, actor, settings)
            for body in (
                wazuh("b.1"),  # opens an incident
                wazuh("b.2"),  # a repeat of it, in the same transaction
                bad,  # refused: its level is not a number
                wazuh("b.1"),  # another post with b.1's alert id: waits for b.1's commit
                _agent(wazuh("b.3"), "mail-001"),  # another agent: an incident of its own
            )
        ]
        session = db.session()
        opened, grouped, refused, deferred, other = in_transaction(session, lambda: ingest.file_posts(session, posts))
        assert (opened.status_code, opened.body["occurrence_count"]) == (201, 1)
        assert grouped.status_code == 200
        assert (grouped.body["id"], grouped.body["occurrence_count"]) == (opened.body["id"], 2)
        assert isinstance(refused, ValidationFailed) and refused.errors[0].field.startswith("rule.level")
        assert isinstance(deferred, RunAlone)
        assert other.status_code == 201 and other.body["id"] != opened.body["id"]
        # Run alone afterwards, the deferred post finds b.1's answer.
        replay = ingest.ingest_alone(session, posts[3])
        assert replay.replayed and replay.body == opened.body
        per_incident = select(Occurrence.incident_id, func.count()).group_by(Occurrence.incident_id)
        counted = dict(session.execute(per_incident).all())
        assert counted == {opened.body["id"]: 2, other.body["id"]: 1}
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 3
        # The repeat filed in the same transaction as its incident added no technique twice.
        added = session.scalars(
            select(Event.data).where(Event.incident_id == opened.body["id"], Event.kind == TECHNIQUES_ADDED)
        ).all()
        assert [t for data in added for t in data["techniques"]] == ["T1190", "T1059.004"]


def test_a_post_whose_role_may_not_file_is_refused_before_its_source_registers(app, intake, make_token):
    """file_posts is the boundary, whoever calls it: a committee token's first alert neither registers a source nor
    files anything, and the other post of the transaction files as alone."""
    with app.test_request_context():
        committee, _ = check_token(make_token("committee")["Authorization"].removeprefix("Bearer "))
        siem, _ = check_token(intake["Authorization"].removeprefix("Bearer "))
        posts = [ingest.AlertPost("wazuh", wazuh("c.1"), committee, FilingSettings()),
                 ingest.AlertPost("wazuh", wazuh("c.2"), siem, FilingSettings())]  # fmt: skip
        session = db.session()
        refused, filed = in_transaction(session, lambda: ingest.file_posts(session, posts))
        assert isinstance(refused, Forbidden) and filed.status_code == 201
        assert session.scalars(select(Source.token_id)).all() == [siem.token_id]
        assert session.scalar(select(func.count()).select_from(Incident)) == 1


def test_a_storm_from_sixteen_senders_shares_transactions_and_loses_or_doubles_nothing(app, intake):
    senders, per_sender, keys = 16, 6, 8

    def post(client, n: int) -> list:
        bodies = [_agent(wazuh(f"s.{n}.{k}"), f"agent-{(n * per_sender + k) % keys:03d}") for k in range(per_sender)]
        return [client.post(URL, json=body, headers=intake) for body in [*bodies, bodies[-1]]]

    assert_nothing_lost_or_doubled(app, storm(app, senders, post), keys, app.extensions[GROUP_COMMIT])
    with app.app_context():
        counts = db.session().scalars(select(Incident.occurrence_count)).all()
        assert counts == [senders * per_sender // keys] * keys


def test_an_alert_id_sent_again_with_another_body_is_refused_alone_and_files_nothing(app, client, intake):
    first = client.post(URL, json=wazuh("m.1"), headers=intake)
    assert first.status_code == 201
    changed = wazuh("m.1", level=3)
    again = client.post(URL, json=changed, headers=intake)
    assert again.status_code == 422 and again.mimetype == "application/problem+json"
    assert again.get_json()["errors"][0]["field"] == "Idempotency-Key"
    with app.test_request_context():
        actor, _ = check_token(intake["Authorization"].removeprefix("Bearer "))
        posts = [ingest.AlertPost("wazuh", body, actor, FilingSettings()) for body in (changed, wazuh("m.2"))]
        session = db.session()
        # Shared, the refusal fails the transaction (the others then run alone): nothing of it is kept.
        with pytest.raises(IdempotencyMismatch):
            in_transaction(session, lambda: ingest.file_posts(session, posts))
        assert session.scalar(select(func.count()).select_from(Occurrence)) == 1
        alone = ingest.ingest_alone(session, posts[1])
        assert (alone.status_code, alone.body["id"], alone.body["occurrence_count"]) == (200, first.get_json()["id"], 2)
