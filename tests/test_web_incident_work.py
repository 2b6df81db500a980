"""Working an incident on the web, on SQLite and PostgreSQL: pages (acknowledge, page again, escalate) from the
incident page and the board, the owner, tasks per phase, field edits, a note with a status change and Markdown."""

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from incidents.models import AuditEntry, Event, Incident, User
from playbooks.models import Contact, Delivery, Page, Task, TaskComment
from tests import paging
from tests.conftest import TokenFactory, incident_payload
from tests.web import csrf, make_user, sign_in, text_of

URL = "/api/v1/incidents"


@pytest.fixture
def app_config(app_config: dict) -> dict:
    # E-mail is a configured channel (nothing listens: deliveries stay queued), so pages have deliveries to show.
    app_config.update(SMTP_URL="smtp://127.0.0.1:9", MAIL_FROM="ucsc@thanhhoa.gov.vn")
    return app_config


@pytest.fixture
def world(app: Flask, make_token: TokenFactory) -> dict[str, Any]:
    """The shipped playbooks, the standing body's focal point Lan (an account of her own), a working group
    leader, an operator, a responder of another organisation, and an incident of category other paging dic."""
    paging.load_shipped(app, demo=False)
    operator = make_token("operator", organisation="dic", username="op")
    make_user(app, "lan", "responder", "dic")
    make_user(app, "police", "responder", "police")
    make_user(app, "board", "committee", "ppc")
    lan = paging.add_contact(app, organisation="dic", name="Lê Thị Lan", email="lan@dic.example.vn",
                             channels=["email"])  # fmt: skip
    paging.add_contact(app, organisation="dost", name="Trưởng nhóm", email="lead@dost.example.vn", channels=["email"],
                       roles=["working_group.leader"])  # fmt: skip
    with app.app_context():
        s = db.session()
        with s.begin():
            s.get(Contact, lan).user_id = s.scalar(select(User.id).where(User.username == "lan"))
    client = app.test_client()
    body = client.post(URL, json=incident_payload(category="other", tlp="amber"), headers=operator).json
    paging.run_jobs(app)
    return {"operator": operator, "ref": body["ref"], "id": body["id"], "lan": lan}


def _signed_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, username).status_code == 302
    return client


def _form(client: FlaskClient, path: str, ref: str, **data: str) -> Any:
    token = csrf(client.get(f"/incidents/{ref}").text)
    return client.post(path, data={"csrf_token": token, **data})


def _flashes(client: FlaskClient) -> list[str]:
    with client.session_transaction() as s:
        return [str(m) for _, m in s.pop("_flashes", [])]


def _page(dbs: Session, incident_id: int) -> Page:
    dbs.rollback()
    return dbs.scalars(select(Page).where(Page.incident_id == incident_id).order_by(Page.id)).first()


def _events(dbs: Session, kind: str) -> list[Event]:
    dbs.rollback()
    return list(dbs.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def test_the_incident_page_shows_who_was_paged_on_which_channel_and_the_escalations_to_come(
    app: Flask, world: dict, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    client = _signed_in(app, "op2")
    html = client.get(f"/incidents/{world['ref']}").text
    text = text_of(html)
    page = _page(dbs, world["id"])
    assert f'id="page-{page.id}"' in html
    assert "Lê Thị Lan · Thư điện tử · đang chờ gửi" in text  # queued: the channel has not accepted it yet
    plan = re.search(r'<ol class="plain" id="escalation-plan">(.*?)</ol>', html, re.S).group(1)
    # The wait of the playbook "other" ends 15 minutes after the page; then the page again and the leader.
    times = re.findall(r'<time datetime="([^"]+)"', plan)
    assert len(times) == 2 and times[0] == times[1]
    assert "gọi lại những người chưa xác nhận" in text_of(plan)
    assert "working_group.leader" not in plan and "gọi " in text_of(plan)  # the role by its label

    # The channel accepts the e-mail: the page says delivered, with the time.
    with app.app_context():
        s = db.session()
        with s.begin():
            delivery = s.scalars(select(Delivery).where(Delivery.page_id == page.id)).one()
            delivery.state, delivery.delivered_at = "delivered", page.created_at
    assert "Lê Thị Lan · Thư điện tử · đã gửi" in text_of(client.get(f"/incidents/{world['ref']}").text)


def test_an_operator_acknowledges_for_someone_else_only_with_a_note_and_a_refusal_is_audited(
    app: Flask, world: dict, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    client = _signed_in(app, "op2")
    page = _page(dbs, world["id"])
    path = f"/incidents/{world['ref']}/pages/{page.id}/acks"

    refused = _form(client, path, world["ref"])
    assert refused.status_code == 303 and refused.headers["Location"].endswith(f"/incidents/{world['ref']}#pages")
    [message] = _flashes(client)
    assert message.startswith("Bị từ chối") and "thay người khác, kèm ghi chú" in message
    assert _page(dbs, world["id"]).state == "open"
    dbs.rollback()
    entry = dbs.scalars(select(AuditEntry).where(AuditEntry.action == "ack.refused")).one()
    assert entry.actor == "op2" and entry.data["via"] == "web" and entry.data["page_id"] == page.id

    _form(client, path, world["ref"], note="Chị Lan báo qua điện thoại")
    assert _flashes(client) == ["Đã xác nhận báo động."]
    acked = _page(dbs, world["id"])
    assert (acked.state, acked.ack_via, acked.ack_on_behalf, acked.ack_note) == (
        "acknowledged",
        "web",
        True,
        "Chị Lan báo qua điện thoại",
    )
    [event] = _events(dbs, "page.acknowledged")
    assert event.actor == "op2" and event.data["via"] == "web"
    # Acknowledged: the page offers no buttons any more, and nothing is left to escalate.
    html = client.get(f"/incidents/{world['ref']}").text
    assert f"/pages/{page.id}/acks" not in html
    assert "Không có: không còn báo động nào chờ xác nhận." in text_of(html)


def test_the_person_paged_acknowledges_from_the_board_and_goes_back_to_it(
    app: Flask, world: dict, dbs: Session
) -> None:
    client = _signed_in(app, "lan")
    page = _page(dbs, world["id"])
    board = client.get("/board").text
    assert f"/incidents/{world['ref']}/pages/{page.id}/acks" in board
    assert f"/pages/{page.id}/waves" not in board  # paging again is the desk's
    response = client.post(f"/incidents/{world['ref']}/pages/{page.id}/acks",
                           data={"csrf_token": csrf(board), "next": "/board"})  # fmt: skip
    assert response.status_code == 303 and response.headers["Location"] == "/board"
    acked = _page(dbs, world["id"])
    assert (acked.state, acked.acked_by, acked.acked_by_contact_id, acked.ack_via) == (
        "acknowledged",
        "Lê Thị Lan",
        world["lan"],
        "web",
    )
    tile = re.search(
        rf'<li class="tile[^"]*"[^>]*data-ref="{world["ref"]}".*?</li>\s*</ul>', client.get("/board").text, re.S
    )
    assert "Lê Thị Lan" in text_of(tile.group(0)) and f"/pages/{page.id}/acks" not in tile.group(0)


def test_page_again_sends_a_new_wave_and_escalate_pages_the_next_tier_and_a_responder_may_not_page_again(
    app: Flask, world: dict, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    op = _signed_in(app, "op2")
    page = _page(dbs, world["id"])
    _form(op, f"/incidents/{world['ref']}/pages/{page.id}/waves", world["ref"], note="Gọi lại lần hai")
    assert _flashes(op) == ["Đã gọi lại."]
    dbs.rollback()
    waves = sorted(d.wave for d in dbs.scalars(select(Delivery).where(Delivery.page_id == page.id)))
    assert waves == [0, 1] and dbs.get(Page, page.id).waves == 2
    [again] = [e for e in _events(dbs, "page.sent") if e.data.get("repage")]
    assert again.actor == "op2" and again.note == "Gọi lại lần hai" and again.data["via"] == "web"

    _form(op, f"/incidents/{world['ref']}/pages/{page.id}/support-requests", world["ref"], note="Cần hỗ trợ")
    assert _flashes(op) == ["Đã chuyển cấp: đã gọi cấp tiếp theo."]
    dbs.rollback()
    support = dbs.scalars(select(Page).where(Page.incident_id == world["id"], Page.escalation.is_(True))).one()
    assert support.target == "working_group.leader"
    [asked] = _events(dbs, "page.support_requested")
    assert asked.actor == "op2" and asked.data["support_page_id"] == support.id

    lan = _signed_in(app, "lan")  # a responder: she acknowledges and escalates her page, never pages by hand
    response = _form(lan, f"/incidents/{world['ref']}/pages/{page.id}/waves", world["ref"])
    assert response.status_code == 403
    dbs.rollback()
    assert dbs.get(Page, page.id).waves == 2


def test_every_work_form_on_an_incident_the_user_may_not_see_answers_404_and_changes_nothing(
    app: Flask, world: dict, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    op = _signed_in(app, "op2")
    token = csrf(op.get("/incidents").text)
    police = _signed_in(app, "police")  # another organisation, not a participant: the incident is hidden from him
    police_token = csrf(police.get("/incidents").text)
    page = _page(dbs, world["id"])
    _form(op, f"/incidents/{world['ref']}/tasks", world["ref"], title="Thu thập nhật ký")
    dbs.rollback()
    task = dbs.scalars(select(Task).where(Task.incident_id == world["id"])).one()
    ref = world["ref"]
    forms = {
        f"/incidents/{ref}/pages/{page.id}/acks": {"note": "x"},
        f"/incidents/{ref}/pages/{page.id}/support-requests": {"note": "x"},
        f"/incidents/{ref}/tasks": {"title": "Lén thêm"},
        f"/incidents/{ref}/tasks/{task.id}/assignee": {"assignee": "police"},
        f"/incidents/{ref}/tasks/{task.id}/comments": {"body": "Lén bình luận"},
        f"/incidents/{ref}/fields": {"priority": "P1"},
    }
    before = _events(dbs, "page.acknowledged") + _events(dbs, "task.created")
    priority = dbs.get(Incident, world["id"]).priority
    for path, data in forms.items():
        response = police.post(path, data={"csrf_token": police_token, **data})
        assert response.status_code == 404, path
        assert ref not in response.text
    assert _events(dbs, "page.acknowledged") + _events(dbs, "task.created") == before
    dbs.rollback()
    assert dbs.get(Incident, world["id"]).priority == priority and dbs.scalars(select(TaskComment)).all() == []

    # A page or task of another incident named under a visible one is as missing as one that never was.
    assert op.post(f"/incidents/{ref}/pages/999999/acks", data={"csrf_token": token, "note": "x"}).status_code == 404
    assert op.post(f"/incidents/{ref}/tasks/999999/state", data={"csrf_token": token, "done": "1"}).status_code == 404
    beyond = 2**63  # no BIGINT holds it: a 404, not the database's refusal
    for path in (f"pages/{beyond}/acks", f"pages/{beyond}/waves", f"tasks/{beyond}/comments", f"tasks/{beyond}/state"):
        assert op.post(f"/incidents/{ref}/{path}", data={"csrf_token": token, "body": "x"}).status_code == 404, path
    # Without the form's CSRF token nothing happens at all.
    assert op.post(f"/incidents/{ref}/pages/{page.id}/acks", data={"note": "x"}).status_code == 400
    assert _page(dbs, world["id"]).state == "open"


def test_the_owner_is_set_on_the_page_and_by_patch_and_shown_in_the_list_and_on_the_board(
    app: Flask, world: dict, client: FlaskClient, make_token: TokenFactory, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    op = _signed_in(app, "op2")
    ref = world["ref"]
    path = f"/incidents/{ref}/assignee"
    refusals = (("nobody-here", "Không có tài khoản này"), ("board", "Vai trò của tài khoản này không xử lý sự cố"))
    for bad, said in refusals:
        _form(op, path, ref, assignee=bad)
        [message] = _flashes(op)
        assert message.startswith("Bị từ chối") and said in message and "Người phụ trách" in message, message
    dbs.rollback()
    assert dbs.get(Incident, world["id"]).assignee_id is None and _events(dbs, "incident.assigned") == []

    _form(op, path, ref, assignee="lan")
    assert _flashes(op) == ["Đã lưu người phụ trách."]
    assert "Người phụ trách: lan" in text_of(op.get(f"/incidents/{ref}").text)
    row = re.search(rf'<tr data-ref="{ref}">.*?</tr>', op.get("/incidents").text, re.S).group(0)
    assert '<td class="owner">lan</td>' in row
    assert "Người phụ trách: lan" in text_of(op.get("/board").text)
    [event] = _events(dbs, "incident.assigned")
    assert (event.actor, event.data["from"], event.data["to"]) == ("op2", None, "lan")

    lan = _signed_in(app, "lan")  # a responder works incidents but does not assign owners
    assert _form(lan, path, ref, assignee="lan").status_code == 403

    # The API: the same rule; a PATCH whose owner is refused changes none of its other fields either.
    responder = make_token("responder", organisation="dic", username="resp2")
    r = client.patch(f"{URL}/{world['id']}", json={"assignee": "op2"}, headers=responder)
    assert r.status_code == 403
    r = client.patch(f"{URL}/{world['id']}", json={"assignee": "board", "priority": "P1"}, headers=world["operator"])
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "assignee"
    r = client.patch(f"{URL}/{world['id']}", json={"assignee": "op2", "priority": "P2"}, headers=world["operator"])
    assert r.status_code == 200 and r.json["assignee"] == "op2" and r.json["priority"] == "P2"
    r = client.patch(f"{URL}/{world['id']}", json={"assignee": None}, headers=world["operator"])
    assert r.status_code == 200 and r.json["assignee"] is None


def test_tasks_are_added_per_phase_assigned_ticked_reopened_and_commented_in_markdown(
    app: Flask, world: dict, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    op = _signed_in(app, "op2")
    ref = world["ref"]
    _form(op, f"/incidents/{ref}/tasks", ref, title="   ")
    [message] = _flashes(op)
    assert message == "Bị từ chối: Tiêu đề: Bắt buộc"
    _form(op, f"/incidents/{ref}/tasks", ref, title="Cô lập máy chủ", phase="no-such-phase")
    assert "Không phải một giai đoạn của quy trình" in _flashes(op)[0]
    _form(op, f"/incidents/{ref}/tasks", ref, title="Cô lập máy chủ", assignee="police")
    assert "Tài khoản này không được xem sự cố" in _flashes(op)[0]
    dbs.rollback()
    assert dbs.scalars(select(Task)).all() == []

    _form(op, f"/incidents/{ref}/tasks", ref, title="Cô lập máy chủ", phase="containment", assignee="lan",
          due_at="2026-12-31T17:00")  # fmt: skip
    assert _flashes(op) == ["Đã thêm nhiệm vụ."]
    dbs.rollback()
    task = dbs.scalars(select(Task)).one()
    assert (task.phase, task.created_by, task.state) == ("containment", "op2", "open")
    assert task.due_at.isoformat().startswith("2026-12-31T10:00")  # 17:00 in Hà Nội
    html = op.get(f"/incidents/{ref}").text
    section = re.search(r'<section aria-labelledby="tasks-heading".*?</section>', html, re.S).group(0)
    assert "Ngăn chặn" in text_of(section) and "được giao cho lan" in text_of(section)

    lan = _signed_in(app, "lan")  # the assignee ticks it, then opens it again
    _form(lan, f"/incidents/{ref}/tasks/{task.id}/state", ref, done="1")
    assert _flashes(lan) == ["Đã hoàn thành nhiệm vụ."]
    dbs.rollback()
    assert (dbs.get(Task, task.id).state, dbs.get(Task, task.id).done_by) == ("done", "lan")
    _form(lan, f"/incidents/{ref}/tasks/{task.id}/state", ref, done="0")
    dbs.rollback()
    assert dbs.get(Task, task.id).state == "open"
    assert [e.kind for e in _events(dbs, "task.reopened")] == ["task.reopened"]

    board = _signed_in(app, "board")  # a committee member comments, but does not tick or assign
    assert _form(board, f"/incidents/{ref}/tasks/{task.id}/state", ref, done="1").status_code == 403
    body = "**Gấp**: xem _nhật ký_\ndòng hai <script>alert(1)</script> [x](javascript:alert(1))"
    _form(board, f"/incidents/{ref}/tasks/{task.id}/comments", ref, body=body)
    html = board.get(f"/incidents/{ref}").text
    item = re.search(rf'<li id="task-{task.id}".*?</li>\s*</ul>', html, re.S).group(0)
    assert "<strong>Gấp</strong>" in item and "<em>nhật ký</em>" in item and "<br>" in item
    # Raw HTML is shown as text, never run; a javascript: link stays text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in item and "<script>alert" not in item
    assert 'href="javascript' not in item
    _form(board, f"/incidents/{ref}/tasks/{task.id}/comments", ref, body=" ")
    assert _flashes(board)[-1] == "Bị từ chối: Ý kiến: Bắt buộc"
    dbs.rollback()
    assert len(dbs.scalars(select(TaskComment)).all()) == 1


def test_fields_are_edited_under_patch_rules_and_bad_input_is_a_vietnamese_message_that_saves_nothing(
    app: Flask, world: dict, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    lan = _signed_in(app, "lan")
    ref = world["ref"]
    path = f"/incidents/{ref}/fields"
    shown = lan.get(f"/incidents/{ref}").text
    title = re.search(r'id="edit-title" name="title" value="([^"]*)"', shown).group(1)
    # A responder may not lower the TLP (amber → green): refused, and the priority sent with it is not saved.
    response = _form(lan, path, ref, title=title, tlp="green", priority="P1")
    assert response.status_code == 303
    [message] = _flashes(lan)
    assert message.startswith("Bị từ chối") and "Mức bảo mật (TLP)" in message
    for bad, said in (({"title": ""}, "Tiêu đề"), ({"affected_system": "khong-co"}, "Hệ thống bị sự cố"),
                      ({"detected_at": "hôm qua"}, "Thời điểm phát hiện")):  # fmt: skip
        _form(lan, path, ref, **bad)
        [message] = _flashes(lan)
        assert message.startswith("Bị từ chối") and said in message, message
    dbs.rollback()
    incident = dbs.get(Incident, world["id"])
    assert (incident.tlp, incident.priority, incident.title) == ("amber", "P2", title)
    assert _events(dbs, "incident.updated") == []

    _form(lan, path, ref, priority="P1", description="Dòng một\nDòng **hai**")
    assert _flashes(lan) == ["Đã lưu thông tin sự cố."]
    [event] = _events(dbs, "incident.updated")
    assert set(event.data["changes"]) == {"priority", "description"} and event.actor == "lan"
    html = lan.get(f"/incidents/{ref}").text
    assert "Dòng một<br>\nDòng <strong>hai</strong>" in html
    op = _signed_in(app, "op2")
    _form(op, path, ref, tlp="green")
    dbs.rollback()
    assert dbs.get(Incident, world["id"]).tlp == "green"


def test_a_status_change_carries_its_note_and_comments_render_markdown_under_the_same_csp(
    app: Flask, world: dict, dbs: Session
) -> None:
    make_user(app, "op2", "operator", "dic")
    op = _signed_in(app, "op2")
    ref = world["ref"]
    before = op.get(f"/incidents/{ref}").headers["Content-Security-Policy"]
    _form(op, f"/incidents/{ref}/transitions", ref, to="triage", note="Đã gọi cho đơn vị, xác minh ban đầu")
    [event] = _events(dbs, "incident.status_changed")
    assert event.note == "Đã gọi cho đơn vị, xác minh ban đầu" and event.data["to"] == "triage"
    _form(op, f"/incidents/{ref}/comments", ref, body="- một\n- hai\n\n<img src=x onerror=alert(1)>\nhết")
    page = op.get(f"/incidents/{ref}")
    comments = re.search(r'<section aria-labelledby="comments-heading".*?</section>', page.text, re.S).group(0)
    assert "<li>một</li>" in comments and "<img" not in comments and "&lt;img src=x onerror=alert(1)&gt;" in comments
    assert "xác minh ban đầu" in text_of(page.text)
    assert page.headers["Content-Security-Policy"] == before
    assert "'unsafe-inline'" not in before
