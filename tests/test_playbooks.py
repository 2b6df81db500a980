"""Shipped playbooks page whom the law and the roster say; definitions are validated with file, line and field."""

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from incidents.base import utcnow
from incidents.models import AuditEntry, Job
from playbooks import spec
from playbooks.models import PlaybookRun, Task
from playbooks.steps import WAIT
from tests import paging
from tests.conftest import TokenFactory, incident_payload

URL = "/api/v1/incidents"

# Written from domain.md (Decision 05 Art. 7.4: telecoms filter upstream and give source data; the Police
# receive evidence and investigate; the operator restores its system; the standing body coordinates) and
# roster.yaml (dic is the standing body; police, vnpt, viettel sit in the working group). Not read from YAML.
PAGED = {
    "dos": {"vnpt", "viettel", "dic"},
    "ransomware": {"police", "dic"},
    "malware": {"police", "dic"},
    "unauthorized_access": {"police", "dic"},
    "defacement": {"doh", "dic"},  # ytdt is operated by the Department of Health
    "data_theft": {"police"},
    "phishing": {"police", "dic"},
    "destruction": {"police", "dic"},
    "combined": {"police", "vnpt", "viettel", "dic"},
    "other": {"dic"},
}


@pytest.fixture
def shipped(app: Flask) -> Flask:
    paging.load_shipped(app)
    return app


def _first_pages(dbs: Session, incident_id: int) -> set[str]:
    return {p.target for p in paging.pages(dbs, incident_id) if not p.escalation and p.requires_ack}


def test_each_shipped_playbook_pages_the_organisations_domain_and_roster_name(
    shipped: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str]
) -> None:
    ids = {}
    for category in PAGED:
        r = client.post(URL, json=incident_payload(category=category, affected_system="ytdt"), headers=operator)
        assert r.status_code == 201, r.json
        ids[category] = r.json["id"]
    paging.run_jobs(shipped)
    seen = {category: _first_pages(dbs, ids[category]) for category in PAGED}
    assert seen == PAGED
    runs = dbs.scalars(select(PlaybookRun).order_by(PlaybookRun.id)).all()
    assert sorted(r.name for r in runs) == sorted(
        [
            "ddos",
            "ransomware",
            "malware",
            "unauthorized-access",
            "defacement",
            "data-theft",
            "phishing",
            "destruction",
            "combined",
            "other",
        ]
    )
    data_theft = [e for e in paging.events(dbs, "notify.sent") if e.incident_id == ids["data_theft"]]
    assert [e.data["target"] for e in data_theft] == ["dic"]  # notified, not paged


def test_a_serious_decision_pages_the_boards_leaders_and_opens_a_request_for_direction(
    shipped: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str], make_token: TokenFactory
) -> None:
    incident_id = client.post(URL, json=incident_payload(category="dos"), headers=operator).json["id"]
    paging.run_jobs(shipped)
    committee = make_token("committee", organisation="ppc")
    r = client.post(
        f"{URL}/{incident_id}/classification", json={"action": "decide", "class": "serious"}, headers=committee
    )
    assert r.status_code == 200, r.json
    paging.run_jobs(shipped)
    serious = [p for p in paging.pages(dbs, incident_id) if p.run_id and p.target_kind == "role"]
    assert {p.target for p in serious} == {"board.head", "board.deputy_head"}
    assert {r.contact.name for p in serious for r in p.recipients} == {
        "Chủ tịch UBND tỉnh",
        "Phó Chủ tịch UBND tỉnh",
        "Giám đốc Sở TT&TT",
    }
    [requested] = paging.events(dbs, "direction.requested", incident_id)
    r = client.get(f"/api/v1/direction-requests?incident={incident_id}", headers=committee)
    [open_request] = r.json["items"]
    assert open_request["id"] == requested.data["request_id"] and open_request["state"] == "open"
    # The running DDoS playbook went on; re-evaluating started only the newly matching one, once.
    assert sorted(r.name for r in dbs.scalars(select(PlaybookRun))) == ["ddos", "serious"]
    r = client.post(
        f"/api/v1/direction-requests/{open_request['id']}/directives",
        json={"text": "Triệu tập Đội ứng cứu ngay."},
        headers=committee,
    )
    assert r.status_code == 201, r.json
    [answered] = paging.events(dbs, "direction.answered", incident_id)
    assert answered.data["directive"] == "Triệu tập Đội ứng cứu ngay." and answered.data["ref"]
    assert (
        client.post(
            f"/api/v1/direction-requests/{open_request['id']}/directives", json={"text": "x"}, headers=operator
        ).status_code
        == 403
    )


def test_a_changed_category_starts_the_newly_matching_playbook_and_the_first_one_continues(
    shipped: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str]
) -> None:
    incident_id = client.post(URL, json=incident_payload(category="other"), headers=operator).json["id"]
    paging.run_jobs(shipped)
    assert _first_pages(dbs, incident_id) == {"dic"}
    r = client.patch(f"{URL}/{incident_id}", json={"category": "ransomware"}, headers=operator)
    assert r.status_code == 200, r.json
    paging.run_jobs(shipped)
    paging.run_jobs(shipped)  # a repeated evaluation starts nothing again
    targets = [p.target for p in paging.pages(dbs, incident_id)]
    assert sorted(targets) == ["dic", "dic", "police"]  # other's dic page, ransomware's police and dic pages
    assert {r.name: r.state for r in dbs.scalars(select(PlaybookRun))} == {"other": "waiting", "ransomware": "waiting"}
    tasks = dbs.scalars(select(Task).where(Task.incident_id == incident_id)).all()
    assert [t.organisation.code for t in tasks] == ["police"] and tasks[0].due_at is not None


def test_a_run_keeps_the_version_it_started_with_after_an_upload(
    shipped: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    assert client.post(URL, json=incident_payload(category="other"), headers=operator).status_code == 201
    paging.run_jobs(shipped)
    admin = make_token("admin")
    source = (spec.DEFINITIONS / "other.yaml").read_text().replace("timeout: 15m", "timeout: 5m")
    r = client.post(
        "/api/v1/playbooks?name=other", data=source.encode(), headers={**admin, "Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.json
    assert r.json["version"] == 2
    [run] = dbs.scalars(select(PlaybookRun)).all()
    assert run.version.version == 1 and "15m" in run.version.source
    [entry] = dbs.scalars(select(AuditEntry).where(AuditEntry.action == "playbook.edited")).all()
    assert entry.target == "other" and entry.data["version"] == 2


def test_a_malformed_upload_is_refused_naming_the_version_line_and_field(
    shipped: Flask, client: FlaskClient, make_token: TokenFactory
) -> None:
    admin = {**make_token("admin"), "Content-Type": "application/yaml"}
    source = (spec.DEFINITIONS / "ddos.yaml").read_text().replace("organisation: viettel", "organisation: nowhere", 1)
    r = client.post("/api/v1/playbooks?name=ddos", data=source.encode(), headers=admin)
    assert r.status_code == 422
    line = next(n for n, text in enumerate(source.splitlines(), 1) if "nowhere" in text)
    assert r.json["source"] == "ddos version 2"
    assert r.json["issues"] == [
        {"line": line, "field": "steps[1].page.organisation", "message": "no organisation 'nowhere' in the directory"}
    ]
    assert r.json["errors"][0]["field"] == "steps[1].page.organisation"
    bad_timeout = (
        "name: x\ntitle_vi: X\nsteps:\n  - page: {organisation: dic}\n  - wait_for_ack:\n      timeout: soon\n"
    )
    r = client.post("/api/v1/playbooks", data=bad_timeout.encode(), headers=admin)
    assert r.status_code == 422
    assert r.json["issues"] == [
        {"line": 6, "field": "steps[1].wait_for_ack.timeout", "message": "a positive duration such as 3s, 15m or 1h"}
    ]
    assert client.post("/api/v1/playbooks", data=b"a: [", headers=admin).json["issues"][0]["field"] == "(yaml)"
    operator = {**make_token("operator"), "Content-Type": "application/yaml"}
    assert client.post("/api/v1/playbooks", data=bad_timeout.encode(), headers=operator).status_code == 403


def test_a_malformed_file_is_refused_with_file_line_and_field_while_the_others_load(
    tmp_path: Path, shipped: Flask, dbs: Session
) -> None:
    for path in spec.DEFINITIONS.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    broken = (tmp_path / "malware.yaml").read_text().replace("      due: 4h", "      due: tomorrow-ish")
    (tmp_path / "malware.yaml").write_text(broken)
    (tmp_path / "zz-typo.yaml").write_text("name: zz\ntitle_vi: Z\nsteps:\n  - pgae: {organisation: dic}\n")
    specs, errors = spec.load_directory(tmp_path)
    assert len(specs) == len(list(spec.DEFINITIONS.glob("*.yaml"))) - 1
    line = next(n for n, text in enumerate(broken.splitlines(), 1) if "tomorrow-ish" in text)
    assert [(e.source, [(i.line, i.field) for i in e.issues]) for e in errors] == [
        ("malware.yaml", [(line, "steps[2].task.due")]),
        ("zz-typo.yaml", [(4, "steps[0]")]),
    ]
    assert "malware.yaml, line" in str(errors[0]) and "steps[2].task.due" in str(errors[0])

    result = shipped.test_cli_runner().invoke(args=["playbooks", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"malware.yaml:{line}: steps[2].task.due: a duration such as 30m, 2h or 1d" in result.output
    assert "zz-typo.yaml:4: steps[0]:" in result.output
    shipped_files = len(list(spec.DEFINITIONS.glob("*.yaml")))
    assert f"{shipped_files - 1} of {shipped_files + 1} playbook(s) valid" in result.output
    ok = shipped.test_cli_runner().invoke(args=["playbooks", "validate"])
    assert ok.exit_code == 0 and f"{shipped_files} of {shipped_files} playbook(s) valid" in ok.output


def test_conditions_on_priority_security_level_tlp_and_exercise_choose_the_playbook(
    shipped: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    admin = {**make_token("admin"), "Content-Type": "application/yaml"}
    source = (
        "name: critical-systems\ntitle_vi: Hệ thống cấp độ 4-5, ưu tiên cao\nwhen:\n  priority: [P1]\n"
        "  security_level: {min: 4}\n  tlp: [amber, red]\n  exercise: false\n"
        "steps:\n  - page: {role: working_group.leader}\n"
    )
    assert client.post("/api/v1/playbooks", data=source.encode(), headers=admin).status_code == 201
    cases = {
        "match": {"priority": "P1", "affected_system": "cong-ttdt"},  # level 4
        "low_level": {"priority": "P1", "affected_system": "cong-dvc"},  # level 3
        "low_priority": {"priority": "P3", "affected_system": "cong-ttdt"},
        "green": {"priority": "P1", "affected_system": "cong-ttdt", "tlp": "green"},
        "drill": {"priority": "P1", "affected_system": "cong-ttdt", "exercise": True},
        "no_system": {"priority": "P1", "observables": []},
    }
    ids = {}
    for name, fields in cases.items():
        r = client.post(URL, json=incident_payload(category="other", **fields), headers=operator)
        assert r.status_code == 201, r.json
        ids[name] = r.json["id"]
    paging.run_jobs(shipped)
    runs = {(r.incident_id, r.name) for r in dbs.scalars(select(PlaybookRun))}
    started = {name for name, i in ids.items() if (i, "critical-systems") in runs}
    assert started == {"match"}


def test_a_stopped_run_pages_no_more_and_a_person_may_start_it_again(
    shipped: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str], make_token: TokenFactory
) -> None:
    incident_id = client.post(URL, json=incident_payload(category="ransomware"), headers=operator).json["id"]
    paging.run_jobs(shipped)
    [run] = client.get(f"{URL}/{incident_id}/runs", headers=operator).json["items"]
    assert (run["playbook"], run["state"], run["trigger"]) == ("ransomware", "waiting", "auto")
    responder = make_token("responder")
    assert client.delete(f"/api/v1/runs/{run['id']}", headers=responder).status_code == 403
    stopped = client.delete(f"/api/v1/runs/{run['id']}", headers=operator)
    assert stopped.status_code == 200 and stopped.json["state"] == "stopped" and stopped.json["stopped_by"] == "op1"
    assert {p.state for p in paging.pages(dbs, incident_id)} == {"cancelled"}
    # Its timer fires later and finds the run stopped: no escalation.
    dbs.execute(update(Job).where(Job.kind == WAIT).values(run_at=utcnow()))
    dbs.commit()
    paging.run_jobs(shipped, (WAIT,))
    assert paging.events(dbs, "page.escalated") == []
    again = client.post(f"{URL}/{incident_id}/runs", json={"playbook": "ransomware"}, headers=operator)
    assert again.status_code == 201 and again.json["trigger"] == "manual" and again.json["version"] == 1
    assert (
        client.post(f"{URL}/{incident_id}/runs", json={"playbook": "ransomware"}, headers=operator).status_code == 409
    )
    assert len([p for p in paging.pages(dbs, incident_id) if p.state == "open"]) == 2


def test_any_member_of_a_paged_organisation_may_acknowledge_and_everyone_sees_who_did(
    shipped: Flask, client: FlaskClient, dbs: Session, operator: dict[str, str]
) -> None:
    from app import db
    from incidents.models import User
    from playbooks.models import Contact, Page

    incident_id = client.post(URL, json=incident_payload(category="dos"), headers=operator).json["id"]
    paging.run_jobs(shipped)
    [vnpt] = [p for p in paging.pages(dbs, incident_id) if p.target == "vnpt"]
    on_call = vnpt.recipients[0].contact.name
    off_duty = next(c for c in dbs.scalars(select(Contact)) if c.organisation.code == "vnpt" and c.name != on_call)
    headers = {}
    with shipped.app_context():
        from app.auth import new_token
        from incidents import accounts
        from incidents.enums import Role

        for contact_id, name in ((off_duty.id, "vnpt-b"), (vnpt.recipients[0].contact_id, "vnpt-a")):
            token, digest = new_token()
            s = db.session()
            with s.begin():
                accounts.create_user(
                    session=s, username=name, role=Role.RESPONDER, organisation="vnpt", password_hash=None
                )
                accounts.create_token(session=s, name=name, role=Role.RESPONDER, digest=digest, user=name)
                s.get(Contact, contact_id).user_id = s.scalar(select(User.id).where(User.username == name))
            headers[name] = {"Authorization": f"Bearer {token}"}
    assert client.post(f"{URL}/{incident_id}/participants", json={"organisation": "vnpt", "role": "member"},
                       headers=operator).status_code == 201  # fmt: skip
    r = client.post(f"/api/v1/pages/{vnpt.id}/acks", json={}, headers=headers["vnpt-b"])
    assert r.status_code == 200 and r.json["acked_by"] == off_duty.name
    late = client.post(f"/api/v1/pages/{vnpt.id}/acks", json={}, headers=headers["vnpt-a"])
    assert late.status_code == 200 and late.json["acked_by"] == off_duty.name  # the first wins
    seen = client.get(f"/api/v1/pages/{vnpt.id}", headers=headers["vnpt-a"]).json
    assert seen["acked_by"] == off_duty.name and seen["state"] == "acknowledged"
    dbs.rollback()
    assert dbs.get(Page, vnpt.id).acked_by_contact_id == off_duty.id


@pytest.mark.parametrize("version", [2**31, 2**63 - 2])
def test_a_run_asking_for_a_version_beyond_any_stored_one_is_refused_not_a_500(
    shipped: Flask, client: FlaskClient, operator: dict[str, str], version: int
) -> None:
    incident_id = client.post(URL, json=incident_payload(category="ransomware"), headers=operator).json["id"]
    r = client.post(f"{URL}/{incident_id}/runs", json={"playbook": "ransomware", "version": version}, headers=operator)
    assert r.status_code == 422, r.json
    assert [e["field"] for e in r.json["errors"]] == ["version"]


def test_a_group_paged_in_turn_reaches_its_members_one_after_another_and_starts_again(
    shipped: Flask, client: FlaskClient, dbs: Session, make_token: TokenFactory, operator: dict[str, str]
) -> None:
    admin = make_token("admin")
    members = []
    for name in ("turn-a", "turn-b", "turn-c"):
        r = client.post("/api/v1/contacts", json={"organisation": "vnpt", "name": name, "email": f"{name}@x.vn",
                                                 "channels": ["email"]}, headers=admin)  # fmt: skip
        assert r.status_code == 201, r.json
        members.append(r.json["id"])
    r = client.post("/api/v1/groups", json={"code": "turn-desk", "name_vi": "Trực lần lượt", "members": members},
                    headers=admin)  # fmt: skip
    assert r.status_code == 201, r.json
    source = (
        "name: in-turn\ntitle_vi: Gọi lần lượt\nwhen: {category: phishing}\n"
        "steps:\n  - page: {group: turn-desk, pick: round_robin, reason_vi: Đề nghị kiểm tra}\n"
    )
    yaml = {**admin, "Content-Type": "application/yaml"}
    assert client.post("/api/v1/playbooks", data=source.encode(), headers=yaml).status_code == 201
    reached = []
    for n in range(5):  # one at a time: each filing's playbook starts before the next is filed
        r = client.post(URL, json=incident_payload(category="phishing", title=f"Lừa đảo {n}"), headers=operator)
        assert r.status_code == 201, r.json
        paging.run_jobs(shipped)
        [page] = [p for p in paging.pages(dbs, r.json["id"]) if p.target == "turn-desk"]
        reached.append([recipient.contact_id for recipient in page.recipients])
    a, b, c = members
    assert reached == [[a], [b], [c], [a], [b]]
