"""The web UI through Flask's test client on SQLite and PostgreSQL: sign-in, forms, visibility, languages."""

import re
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import db
from incidents.access import Actor
from incidents.enums import Role
from incidents.filing import FilingSettings, file_incidents
from incidents.models import AuditEntry, BrowserSession, Incident
from incidents.schemas.incidents import IncidentCreate, ParticipantIn
from incidents.systems import list_organisations, list_systems
from tests.web import PASSWORD, csrf, make_user, sign_in, text_of, user_row

ROOT = Path(__file__).resolve().parent.parent
CATALOGUES = ROOT / "app" / "translations"


def incident_count(app: Flask) -> int:
    with app.app_context():
        return db.session().scalar(select(func.count()).select_from(Incident)) or 0


def file_as(app: Flask, username: str, **fields: object) -> str:
    """File an incident through the service as `username`; its reference."""
    with app.app_context():
        s = db.session()
        user = user_row(app, username)
        actor = Actor(
            user_id=user.id, username=user.username, role=Role(user.role), organisation_id=user.organisation_id
        )
        data = IncidentCreate.model_validate({"title": "Sự cố thử", "category": "malware", **fields})
        result = file_incidents(session=s, items=[data], actor=actor, settings=FilingSettings())
        return result.body["ref"]


def audit_actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session().scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_sign_in_sets_an_httponly_samesite_cookie_and_audits(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    response = sign_in(client, "op")
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/incidents").status_code == 200
    assert "login.succeeded" in audit_actions(app)


def test_wrong_password_is_refused_and_five_failures_make_that_address_wait(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    for _ in range(5):
        response = sign_in(client, "op", "wrong password!")
        assert response.status_code == 401
        assert "Sai tên đăng nhập hoặc mật khẩu." in response.text
    # This address now waits before even the right password is checked; nobody else is locked out.
    response = sign_in(client, "op")
    assert response.status_code == 429 and "Quá nhiều lần đăng nhập sai" in response.text
    assert client.get("/incidents").status_code == 302
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.200"
    assert sign_in(elsewhere, "op").status_code == 302
    actions = audit_actions(app)
    assert actions.count("login.failed") == 5 and "login.locked" not in actions


def test_a_form_without_its_csrf_token_is_refused(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    response = client.post("/login", data={"username": "op", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/incidents").status_code == 302


def test_admin_must_enrol_totp_and_then_signs_in_with_a_code_that_works_once(app: Flask, client: FlaskClient) -> None:
    make_user(app, "boss", role="admin")
    assert sign_in(client, "boss").status_code == 302
    response = client.get("/incidents")
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/totp")
    page = client.get("/account/totp")
    assert "data:image/svg+xml" in page.text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)
    bad = client.post("/account/totp", data={"code": "000000", "csrf_token": csrf(page.text)})
    assert bad.status_code == 422 and "field-error" in bad.text
    page = client.get("/account/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)
    ok = client.post("/account/totp", data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf(page.text)})
    assert ok.status_code == 302
    assert client.get("/admin").status_code == 200
    client.post("/logout", data={"csrf_token": csrf(client.get("/admin").text)})

    fresh = app.test_client()
    step = fresh.post(
        "/login", data={"username": "boss", "password": PASSWORD, "csrf_token": csrf(fresh.get("/login").text)}
    )
    assert step.headers["Location"].endswith("/login/totp")
    assert fresh.get("/admin").status_code == 302  # the password alone signs nobody in
    page = fresh.get("/login/totp")
    # The code accepted at enrolment is refused now: a TOTP code works once.
    code = pyotp.TOTP(secret).now()
    replay = fresh.post("/login/totp", data={"code": code, "csrf_token": csrf(page.text)})
    with app.app_context():
        assert user_row(app, "boss").totp_last_step is not None
    if replay.status_code == 302:  # the 30 s step rolled over since enrolment, so this is a new code
        assert fresh.get("/admin").status_code == 200
    else:
        assert replay.status_code == 401 and "Mã sai hoặc đã hết hạn." in replay.text


def test_revoked_session_is_signed_out_at_once(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    other = app.test_client()
    sign_in(other, "op")
    page = client.get("/account/sessions")
    with app.app_context():
        rows = list(db.session().scalars(select(BrowserSession).order_by(BrowserSession.id)))
    assert len(rows) == 2
    response = client.post(f"/account/sessions/{rows[1].id}/revocation", data={"csrf_token": csrf(page.text)})
    assert response.status_code == 302
    assert other.get("/incidents").status_code == 302
    assert client.get("/incidents").status_code == 200
    assert "session.revoked" in audit_actions(app)


def test_password_change_checks_the_current_one_and_signs_out_other_sessions(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    other = app.test_client()
    sign_in(other, "op")
    page = client.get("/account/password")
    bad = client.post(
        "/account/password",
        data={
            "current_password": "nope",
            "new_password": "short",
            "repeat_password": "other",
            "csrf_token": csrf(page.text),
        },
    )
    assert bad.status_code == 422
    for name in ("current_password", "new_password", "repeat_password"):
        assert f'id="err-{name}"' in bad.text
    ok = client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a much longer one",
            "repeat_password": "a much longer one",
            "csrf_token": csrf(page.text),
        },
    )
    assert ok.status_code == 302
    assert other.get("/incidents").status_code == 302
    assert client.get("/incidents").status_code == 200
    assert sign_in(app.test_client(), "op", "a much longer one").status_code == 302


def test_intake_form_with_bad_input_shows_every_field_error_and_saves_nothing(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    page = client.get("/incidents/new")
    before = incident_count(app)
    response = client.post(
        "/incidents/new",
        data={
            "csrf_token": csrf(page.text),
            "title": "",
            "category": "",
            "reporter.email": "not-an-address",
            "observables[0].type": "ipv4-addr",
            "observables[0].value": "999.1.1.1",
            "observables[2].type": "domain-name",
            "observables[2].value": "ok.example.vn",
            "observables[3].type": "url",
            "observables[3].value": "javascript:alert(1)",
            "detected_at": "2099-01-01T10:00",
            "affected_system": "no-such-system",
        },
    )
    assert response.status_code == 422
    for name in ("title", "category", "reporter.email", "observables[0].value", "observables[3].value", "detected_at"):
        ident = "err-" + name.replace("[", "-").replace("]", "").replace(".", "-")
        assert f'id="{ident}"' in response.text, name
        assert f'aria-describedby="{ident}"' in response.text, name
    assert "Báo cáo chưa được lưu" in response.text
    assert 'value="not-an-address"' in response.text  # what was typed is kept
    assert incident_count(app) == before


def test_intake_form_files_through_the_same_validation_as_the_api(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    page = client.get("/incidents/new")
    response = client.post(
        "/incidents/new",
        data={
            "csrf_token": csrf(page.text),
            "title": "Tấn công thay đổi giao diện Cổng thông tin",
            "category": "defacement",
            "priority": "P1",
            "tlp": "amber",
            "detected_at": "2026-11-20T08:30",
            "detection_method": "notified",
            "reporter.name": "Lê Thị B",
            "reporter.email": "b@example.vn",
            "handled_at_report": "no",
            "notified_parties": ["isp", "national_coordinator"],
            "beyond_capacity": "1",
            "observables[1].type": "domain-name",
            "observables[1].value": "Cong.ThanhHoa.gov.vn",
        },
    )
    assert response.status_code == 302
    ref = response.headers["Location"].rsplit("/", 1)[1]
    with app.app_context():
        incident = db.session().scalar(select(Incident).where(Incident.ref == ref))
        assert incident.priority == "P1" and incident.category == "defacement"
        assert incident.detected_at.isoformat() == "2026-11-20T01:30:00+00:00"  # 08:30 in Asia/Ho_Chi_Minh
        assert incident.notified_parties == ["isp", "national_coordinator"] and incident.beyond_capacity
        assert incident.handled_at_report is False and incident.reporter_name == "Lê Thị B"
        assert [o.value for o in incident.observables] == ["cong.thanhhoa.gov.vn"]
    page = client.get(f"/incidents/{ref}")
    assert page.status_code == 200 and ref in page.text
    assert "Bắt đầu xác minh" in page.text  # new → triage is offered
    assert "Chuyển sang gỡ bỏ" not in page.text  # only allowed transitions are shown


def test_a_refused_transition_says_why_and_names_the_allowed_steps(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    ref = file_as(app, "op")
    page = client.get(f"/incidents/{ref}")
    response = client.post(f"/incidents/{ref}/transitions", data={"to": "closed", "csrf_token": csrf(page.text)})
    assert response.status_code == 302
    page = client.get(f"/incidents/{ref}")
    assert "Bị từ chối: sự cố hiện ở bước «Tiếp nhận»" in page.text
    assert "Xác minh, phân loại" in page.text
    for step in ("triage", "first_response", "containment"):
        client.post(f"/incidents/{ref}/transitions", data={"to": step, "csrf_token": csrf(page.text)})
    assert "status-containment" in client.get(f"/incidents/{ref}").text


def test_committee_sees_no_red_incident_they_are_not_named_on(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    make_user(app, "member", role="committee")
    make_user(app, "named", role="committee")
    hidden = file_as(app, "op", title="Bí mật đỏ", tlp="red")
    shared = file_as(app, "op", title="Sự cố chung", tlp="amber")
    named = file_as(app, "op", title="Đỏ có tên", tlp="red", participants=[ParticipantIn(user="named").model_dump()])
    sign_in(client, "member")
    for url in ("/board", "/incidents", f"/incidents?q={hidden}"):
        text = text_of(client.get(url).text)
        assert hidden not in text and "Bí mật đỏ" not in text and named not in text
    assert shared in client.get("/board").text
    assert client.get(f"/incidents/{hidden}").status_code == 404
    other = app.test_client()
    sign_in(other, "named")
    assert named in other.get("/board").text and hidden not in other.get("/board").text


def test_console_search_ignores_diacritics_and_filters_combine(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    a = file_as(
        app,
        "op",
        title="Mã độc tống tiền ở Sở Y tế",
        priority="P1",
        observables=[{"type": "domain-name", "value": "syt.thanhhoa.gov.vn"}],
    )
    b = file_as(app, "op", title="Lừa đảo qua thư điện tử", priority="P3")
    text = client.get("/incidents?q=ma+doc+tong+tien").text
    assert a in text and b not in text
    text = client.get("/incidents?q=syt.thanhhoa").text
    assert a in text and b not in text
    text = client.get("/incidents?priority=P3").text
    assert b in text and a not in text
    bad = client.get("/incidents?priority=P9")
    assert bad.status_code == 200 and "field-error" not in bad.text and "priority" in bad.text


def test_every_page_has_a_strict_csp_and_no_inline_script(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    ref = file_as(app, "op")
    for url in (
        "/login",
        "/incidents",
        "/incidents/new",
        f"/incidents/{ref}",
        "/board",
        "/directory",
        "/account/sessions",
        "/playbooks",
    ):
        response = client.get(url)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.text), url
        assert not re.search(r"\son[a-z]+=\"", response.text), url  # no inline event handlers
        assert not re.search(r'\sstyle="', response.text), url


def _catalogue(lang: str) -> list:
    with (CATALOGUES / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return [m for m in read_po(f) if m.id]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_template_string_is_in_the_catalogue_and_translated_in_vi(tmp_path: Path, database_url: str) -> None:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "--no-location",
            "-o",
            str(pot),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    assert len(wanted) > 200
    vi = {m.id: m for m in _catalogue("vi")}
    missing = wanted - set(vi)
    assert not missing, f"not in the vi catalogue (run make translations): {sorted(missing)[:10]}"
    untranslated = [i for i in wanted if not vi[i].string or vi[i].fuzzy]
    assert not untranslated, f"untranslated or fuzzy in vi: {untranslated[:10]}"
    mo = CATALOGUES / "vi" / "LC_MESSAGES" / "messages.mo"
    assert mo.stat().st_mtime >= (CATALOGUES / "vi" / "LC_MESSAGES" / "messages.po").stat().st_mtime - 1


def _pairs() -> list[tuple[str, str]]:
    """(English, Vietnamese) of every entry whose two texts differ and are words, not symbols."""
    out = []
    for m in _catalogue("vi"):
        if m.string and m.string != m.id and "%(" not in m.id and len(m.id) >= 4:
            out.append((m.id, m.string))
    return out


def _words(text: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text) is not None


def test_an_english_page_shows_no_vietnamese_catalogue_string_and_the_reverse(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op", language="en")
    make_user(app, "viet", language="vi")
    ref = file_as(app, "op", title="Test incident", description="A test.")
    pairs = _pairs()
    with app.app_context():
        data = [s.name for s in list_systems(db.session())]
        data += [o.name_vi for o in list_organisations(db.session())]
    data.sort(key=len, reverse=True)

    def shown(html: str) -> str:
        """The page's text without the registry's own names, which are data in Vietnamese, not UI strings."""
        text = text_of(html)
        for name in data:
            text = text.replace(name, " ")
        return text

    pages = (
        "/incidents",
        "/incidents/new",
        f"/incidents/{ref}",
        "/board",
        "/directory",
        "/account/sessions",
        "/playbooks",
    )
    sign_in(client, "op")
    for url in pages:
        text = shown(client.get(url).text)
        leaked = [vi for _en, vi in pairs if _words(text, vi)]
        assert not leaked, f"{url} in en shows {leaked[:5]}"
        assert "Report an incident" in text
    viet = app.test_client()
    sign_in(viet, "viet")
    for url in pages:
        text = shown(viet.get(url).text)
        leaked = [en for en, _vi in pairs if _words(text, en)]
        assert not leaked, f"{url} in vi shows {leaked[:5]}"
        assert "Thông báo sự cố" in text


def test_language_switch_is_stored_on_the_user(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    page = client.get("/incidents")
    assert 'lang="vi"' in page.text
    client.post("/account/language", data={"language": "en", "next": "/incidents", "csrf_token": csrf(page.text)})
    assert 'lang="en"' in client.get("/incidents").text
    assert user_row(app, "op").language == "en"


def test_admin_creates_a_user_who_can_sign_in_and_an_organisation(app: Flask, client: FlaskClient) -> None:
    secret = make_user(app, "boss", role="admin", totp=True)
    sign_in(client, "boss", totp=secret)
    page = client.get("/admin")
    assert page.status_code == 200
    bad = client.post(
        "/admin/users",
        data={"username": "", "role": "nobody", "organisation": "dic", "password": "x", "csrf_token": csrf(page.text)},
    )
    assert bad.status_code == 422
    ok = client.post(
        "/admin/users",
        data={
            "username": "newop",
            "role": "operator",
            "organisation": "dic",
            "password": "long enough pw",
            "csrf_token": csrf(page.text),
        },
    )
    assert ok.status_code == 302
    assert sign_in(app.test_client(), "newop", "long enough pw").status_code == 302
    org = client.post(
        "/admin/organisations", data={"code": "sotttt-test", "name_vi": "Sở thử nghiệm", "csrf_token": csrf(page.text)}
    )
    assert org.status_code == 302
    assert "sotttt-test" in client.get("/directory").text
    operator = app.test_client()
    sign_in(operator, "newop", "long enough pw")
    assert operator.get("/admin").status_code == 403


def test_a_directive_from_the_board_answers_the_request_and_lands_on_the_timeline(
    app: Flask, client: FlaskClient
) -> None:
    make_user(app, "op")
    make_user(app, "member", role="committee")
    ref = file_as(app, "op", title="Tấn công mã hóa dữ liệu")
    sign_in(client, "op")
    page = client.get(f"/incidents/{ref}")
    asked = client.post(
        f"/incidents/{ref}/direction-requests",
        data={"question_vi": "Có cần cô lập toàn bộ mạng nội bộ?", "csrf_token": csrf(page.text)},
    )
    assert asked.status_code == 302
    member = app.test_client()
    sign_in(member, "member")
    board = member.get("/board").text
    assert "Có cần cô lập toàn bộ mạng nội bộ?" in board and ref in text_of(board)
    request_id = re.search(r'data-request="(\d+)"', board).group(1)
    given = member.post(
        f"/direction-requests/{request_id}/directives",
        data={"text": "Cô lập ngay phân vùng máy chủ.", "next": "/board", "csrf_token": csrf(board)},
    )
    assert given.status_code == 302 and given.headers["Location"].endswith("/board")
    after = member.get("/board").text
    assert "Không có đề nghị nào đang chờ." in after
    timeline = client.get(f"/incidents/{ref}").text
    assert "Đã có ý kiến chỉ đạo" in timeline and "Cô lập ngay phân vùng máy chủ." in timeline
    # An operator may not give directives; the committee may not ask for direction.
    refused = client.post(
        f"/direction-requests/{request_id}/directives", data={"text": "x", "csrf_token": csrf(page.text)}
    )
    assert refused.status_code == 403
    assert (
        member.post(
            f"/incidents/{ref}/direction-requests", data={"question_vi": "?", "csrf_token": csrf(board)}
        ).status_code
        == 403
    )


def add_contact(session, actor: Actor, **fields: object) -> None:
    from playbooks import directory

    # save_contact adds the row before it looks up the organisation; without this the lookup flushes it half-made.
    with session.no_autoflush:
        directory.save_contact(session=session, actor=actor, data=directory.ContactIn(**fields))


def test_pages_show_who_was_paged_delivery_and_acknowledgement(app: Flask, client: FlaskClient) -> None:
    from playbooks import service as playbooks
    from playbooks.settings import Settings

    make_user(app, "op")
    make_user(app, "member", role="committee")
    ref = file_as(app, "op", title="Tấn công từ chối dịch vụ")
    with app.app_context():
        s = db.session()
        op = user_row(app, "op")
        actor = Actor(user_id=op.id, username="op", role=Role.OPERATOR, organisation_id=op.organisation_id)
        add_contact(s, actor, organisation="vnpt", name="Phạm Trực Ban", email="truc@vnpt.example", channels=["email"])
        settings = Settings.from_config(app.config)
        page = playbooks.page_target(
            session=s,
            incident_id=ref,
            target={"organisation": "vnpt"},
            actor=actor,
            settings=settings,
            reason="Cần hỗ trợ chặn lưu lượng",
        )
        page_id = page.id
    sign_in(client, "op")
    text = text_of(client.get(f"/incidents/{ref}").text)
    assert "Phạm Trực Ban" in text and "Chờ xác nhận" in text and "chưa gửi được" in text
    member = app.test_client()
    sign_in(member, "member")
    assert "Chờ xác nhận" in text_of(member.get("/board").text)
    with app.app_context():
        playbooks.acknowledge_page(session=db.session(), page_id=page_id, actor=actor, note="Đã gọi điện xác nhận")
    text = text_of(client.get(f"/incidents/{ref}").text)
    assert "op đã nhận xử lý thay mặt người được báo động" in text and "Đã xác nhận" in text
    board = member.get("/board").text
    assert "op đã nhận xử lý thay mặt người được báo động" in text_of(board)
    # The acknowledgement counts towards this week's time to acknowledge (a median of one sample).
    assert "Chưa có tin báo động nào được xác nhận" not in board
    assert re.search(r'id="ack-minutes"><li>Tuần từ \d{4}-\d{2}-\d{2}: <strong>\d+\.\d</strong> phút', board)


def test_the_incident_page_offers_its_stix_bundle(app: Flask, client: FlaskClient) -> None:
    import json

    make_user(app, "op")
    ref = file_as(app, "op", observables=[{"type": "ipv4-addr", "value": "192.0.2.9"}])
    sign_in(client, "op")
    assert f"/incidents/{ref}/stix" in client.get(f"/incidents/{ref}").text
    response = client.get(f"/incidents/{ref}/stix")
    assert response.status_code == 200 and response.mimetype == "application/stix+json"
    assert f'filename="{ref}.stix.json"' in response.headers["Content-Disposition"]
    bundle = json.loads(response.data)
    assert bundle["type"] == "bundle" and any(o.get("value") == "192.0.2.9" for o in bundle["objects"])


def test_contacts_phones_in_the_directory_are_shown_to_the_desk_only(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    make_user(app, "member", role="committee")
    with app.app_context():
        op = user_row(app, "op")
        actor = Actor(user_id=op.id, username="op", role=Role.OPERATOR, organisation_id=op.organisation_id)
        add_contact(
            db.session(), actor, organisation="police", name="Đầu Mối Công An", phone="0237111222", channels=["sms"]
        )
    sign_in(client, "op")
    text = text_of(client.get("/directory").text)
    assert "Đầu Mối Công An" in text and "0237111222" in text
    member = app.test_client()
    sign_in(member, "member")
    text = text_of(member.get("/directory").text)
    assert "Đầu Mối Công An" in text and "0237111222" not in text  # names for the board; numbers for the desk


def test_the_playbook_editor_shows_validation_messages_and_saves_a_new_version(app: Flask, client: FlaskClient) -> None:
    from playbooks import service as playbooks

    with app.app_context():
        s = db.session()
        with s.begin():
            playbooks.seed_definitions(s)
    secret = make_user(app, "boss", role="admin", totp=True)
    sign_in(client, "boss", totp=secret)
    page = client.get("/playbooks")
    assert page.status_code == 200 and "/playbooks/other" in page.text
    edit = client.get("/playbooks/other")
    source = re.search(r'<textarea id="playbook-source"[^>]*>(.*?)</textarea>', edit.text, re.S).group(1)
    source = (
        source.replace("&#39;", "'")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", '"')
    )
    broken = source.replace("timeout: 15m", "timeout: soon")
    refused = client.post("/playbooks/other", data={"source": broken, "csrf_token": csrf(edit.text)})
    assert refused.status_code == 422
    assert "Kịch bản chưa được lưu" in refused.text and "line" in refused.text
    assert "timeout: soon" in refused.text  # the text stays in the editor to be corrected
    saved = client.post(
        "/playbooks/other", data={"source": source.replace("15m", "20m", 1), "csrf_token": csrf(edit.text)}
    )
    assert saved.status_code == 302
    assert "Phiên bản 2" in client.get("/playbooks/other").text
    operator = app.test_client()
    make_user(app, "op")
    sign_in(operator, "op")
    view = operator.get("/playbooks/other")
    assert view.status_code == 200 and 'name="source"' not in view.text  # read-only for operators
    assert operator.post("/playbooks/other", data={"source": source, "csrf_token": csrf(view.text)}).status_code == 403


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": "3/minute"}])
def test_sign_in_attempts_are_rate_limited_per_address(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    for _ in range(3):
        assert sign_in(client, "op", "wrong password!").status_code == 401
    limited = sign_in(client, "op")
    assert limited.status_code == 429
    assert "Đăng nhập quá nhiều lần" in limited.text
    assert client.get("/incidents").status_code == 302


def test_the_console_pages_through_the_list_with_the_api_cursor(app: Flask, client: FlaskClient) -> None:
    make_user(app, "op")
    refs = [file_as(app, "op", title=f"Sự cố số {n}") for n in range(3)]
    sign_in(client, "op")
    first = client.get("/incidents?limit=2&sort=created")
    assert refs[0] in first.text and refs[1] in first.text and refs[2] not in first.text
    link = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    assert "sort=created" in link and "limit=2" in link
    second = client.get(link)
    assert refs[2] in second.text and refs[0] not in second.text
    assert 'rel="next"' not in second.text
