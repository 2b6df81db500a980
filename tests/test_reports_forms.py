"""Forms as offices file them: A4 pages with Decree 30/2020 margins, the place from configuration, Form 03's
escalation boxes and recipients, Form 04's reporter and outcome, Form 05 on the web, the notification rule."""

import io
from datetime import UTC, datetime, timedelta

import docx
import pytest
from sqlalchemy import update

from app import db
from incidents.clock import LOCAL_TZ
from incidents.models import System
from tests import paging
from tests.test_reports import docx_cells, make_report
from tests.test_web import file_as
from tests.web import csrf, make_user, sign_in, text_of

URL = "/api/v1/incidents"


@pytest.fixture
def app_config():
    return {
        "REPORT_PLACE": "Sầm Sơn",
        "REPORT_BOARD_NAME": "BAN CHỈ ĐẠO ỨNG CỨU SỰ CỐ AN TOÀN THÔNG TIN MẠNG TỈNH NGHỆ AN",
        "REPORT_SPECIALISED_UNIT": "Trung tâm Giám sát điều hành an toàn thông tin tỉnh",
        "REPORT_NATIONAL_COORDINATOR": "Cơ quan điều phối quốc gia về ứng cứu sự cố",
    }


def file(client, headers, **overrides) -> dict:
    return paging.file_followed_up(client, headers, **overrides)


def paragraphs(data: bytes) -> list[str]:
    return [p.text for p in docx.Document(io.BytesIO(data)).paragraphs]


def assert_a4_with_decree_margins(data: bytes) -> None:
    for section in docx.Document(io.BytesIO(data)).sections:
        assert (round(section.page_width.mm), round(section.page_height.mm)) == (210, 297)
        margins = [section.top_margin, section.bottom_margin, section.left_margin, section.right_margin]
        assert [round(m.mm, 1) for m in margins] == [20, 20, 30, 15]


def test_docx_forms_are_a4_with_decree_margins_and_the_board_and_place_from_configuration(client, operator):
    incident = file(client, operator, affected_system="cong-dvc")
    make_report(client, operator, incident["id"], "initial")
    make_report(client, operator, incident["id"], "end", handling_result="Đã xử lý")
    for kind in ("initial", "end"):
        data = client.get(f"{URL}/{incident['id']}/reports/{kind}?format=docx", headers=operator).data
        assert_a4_with_decree_margins(data)
        texts = paragraphs(data)
        assert "BAN CHỈ ĐẠO ỨNG CỨU SỰ CỐ AN TOÀN THÔNG TIN MẠNG TỈNH NGHỆ AN" in texts
        assert any(t.startswith("Sầm Sơn, ngày ") for t in texts), texts
        assert not any("Thanh Hóa, ngày" in t for t in texts)
    periodic = client.get("/api/v1/reports/periodic?from=2026-01-01&to=2026-06-30&format=docx", headers=operator)
    assert periodic.status_code == 200
    assert_a4_with_decree_margins(periodic.data)
    assert any(t.startswith("Sầm Sơn, ngày ") for t in paragraphs(periodic.data))


def test_form03_prints_beyond_capacity_the_serious_proposal_and_decision_recipients_and_provider(
    app, client, make_token
):
    with app.app_context():
        s = db.session()
        s.execute(
            update(System).where(System.code == "qlvb").values(security_provider="Công ty An ninh mạng Thanh Hóa")
        )
        s.commit()
    operator = make_token("operator", "dic", username="soc-an")
    chair = make_token("committee", "ppc", username="chu-tich")
    incident = file(client, operator, affected_system="qlvb")
    url = f"{URL}/{incident['id']}/classification"
    proposal = {"action": "propose", "conditions": ["service_interruption"], "beyond_capacity": True,
                "note": "Gián đoạn toàn tỉnh"}  # fmt: skip
    proposed = client.post(url, json=proposal, headers=operator)
    assert proposed.status_code == 200, proposed.json
    decided = client.post(url, json={"action": "decide", "class": "serious", "note": "Đồng ý"}, headers=chair)
    assert decided.status_code == 200, decided.json
    make_report(client, operator, incident["id"], "initial")
    data = client.get(f"{URL}/{incident['id']}/reports/initial?format=docx", headers=operator).data
    cells = docx_cells(data)
    assert cells["Vượt quá khả năng xử lý của đơn vị"] == ["☒ Có"]
    proposal = cells["Đề xuất nâng lên sự cố nghiêm trọng"][0]
    assert "soc-an" in proposal and "Gián đoạn toàn tỉnh" in proposal and "(a) Gián đoạn dịch vụ" in proposal
    decision = cells["Quyết định phân loại"][0]
    assert "Nghiêm trọng" in decision and "chu-tich" in decision and "Đồng ý" in decision
    assert cells["Đơn vị cung cấp dịch vụ bảo đảm an toàn thông tin"] == ["Công ty An ninh mạng Thanh Hóa"]
    texts = paragraphs(data)
    # Decision 05 Art. 11.5: the operator reports to the owner and the specialised unit, copying the coordinator.
    owner = "Văn phòng UBND tỉnh"
    to = next(t for t in texts if t.startswith("Kính gửi: "))
    assert owner in to and "Trung tâm Giám sát điều hành an toàn thông tin tỉnh" in to
    assert "Đồng gửi: Cơ quan điều phối quốc gia về ứng cứu sự cố" in texts


def test_form03_of_an_ordinary_incident_says_no_proposal_and_no_decision(client, operator):
    incident = file(client, operator, affected_system="cong-dvc")
    make_report(client, operator, incident["id"], "initial")
    cells = docx_cells(client.get(f"{URL}/{incident['id']}/reports/initial?format=docx", headers=operator).data)
    assert cells["Vượt quá khả năng xử lý của đơn vị"] == ["☐ Có"]
    assert cells["Đề xuất nâng lên sự cố nghiêm trọng"] == ["Không"]
    assert cells["Quyết định phân loại"] == ["Thông thường (chưa có quyết định nâng lên nghiêm trọng)"]


def test_form04_prints_the_reporter_the_end_of_the_response_the_class_and_the_boards_directive(client, make_token):
    operator = make_token("operator", "dic", username="soc-an")
    chair = make_token("committee", "ppc", username="chu-tich")
    reporter = {"name": "Nguyễn Văn A", "organisation": "Sở Y tế", "address": "101 Hải Thượng Lãn Ông, Thanh Hóa",
                "phone": "0237000111", "email": "soyte@example.vn"}  # fmt: skip
    incident = file(client, operator, affected_system="ytdt", reporter=reporter)
    asked = client.post(f"{URL}/{incident['id']}/direction-requests", json={"question_vi": "Có cô lập hệ thống?"},
                        headers=operator)  # fmt: skip
    assert asked.status_code == 201, asked.json
    answer = client.post(f"/api/v1/direction-requests/{asked.json['id']}/directives",
                         json={"text": "Cô lập ngay, báo cáo trước 17 giờ"}, headers=chair)  # fmt: skip
    assert answer.status_code == 201, answer.json
    for to in ("triage", "first_response", "containment", "eradication", "recovery", "assessment", "review"):
        r = client.post(f"{URL}/{incident['id']}/transitions", json={"to": to, "note": "x"}, headers=operator)
        assert r.status_code == 200, (to, r.json)
    make_report(client, operator, incident["id"], "end", handling_result="Đã khôi phục")
    cells = docx_cells(client.get(f"{URL}/{incident['id']}/reports/end?format=docx", headers=operator).data)
    assert cells["Tên tổ chức/cá nhân báo cáo (*)"] == ["Sở Y tế"]
    assert cells["Địa chỉ (*)"] == ["101 Hải Thượng Lãn Ông, Thanh Hóa"]
    assert cells["Điện thoại (*)"] == ["0237000111"]
    assert cells["Email (*)"] == ["soyte@example.vn"]
    ended = cells["Ngày kết thúc ứng phó (*)"][0]
    assert ended == datetime.now(LOCAL_TZ).strftime("%d/%m/%Y"), ended
    assert cells["Phân loại sự cố"] == ["Thông thường"]
    directive = cells["Ý kiến chỉ đạo của Ban Chỉ đạo"][0]
    assert "Cô lập ngay, báo cáo trước 17 giờ" in directive and "chu-tich" in directive


@pytest.mark.parametrize("missing", ["address", "phone", "email"])
def test_form04_without_the_reporters_mandatory_field_is_a_problem_naming_it_not_a_500(client, operator, missing):
    reporter = {"name": "Nguyễn Văn A", "organisation": "Sở TT&TT", "address": "Số 1 Lê Lợi",
                "phone": "0237000000", "email": "a@example.vn"}  # fmt: skip
    del reporter[missing]
    incident = file(client, operator, reporter=reporter)
    r = client.post(f"{URL}/{incident['id']}/reports/end", json={"handling_result": "Xong"}, headers=operator)
    assert r.status_code == 422, r.json
    assert r.mimetype == "application/problem+json"
    assert [e["field"] for e in r.json["errors"]] == [f"reporter.{missing}"]
    assert client.get(f"{URL}/{incident['id']}/reports", headers=operator).json["items"] == []


def test_form04_refused_on_the_web_names_the_field_in_vietnamese(app):
    make_user(app, "op")
    ref = file_as(app, "op", title="Thiếu địa chỉ", category="malware", priority="P3", tlp="amber")
    web = app.test_client()
    sign_in(web, "op")
    page = web.get(f"/incidents/{ref}")
    r = web.post(f"/incidents/{ref}/reports/end", data={"csrf_token": csrf(page.text)}, follow_redirects=True)
    assert r.status_code == 200
    text = text_of(r.text)
    assert "Mẫu 04 cần địa chỉ của tổ chức/cá nhân báo cáo" in text, text[:3000]


@pytest.mark.parametrize("language", ["vi", "en"])
@pytest.mark.parametrize("role", ["operator", "committee"])
def test_form05_on_the_web_with_half_year_and_year_presets(app, language, role):
    make_user(app, f"u-{role}-{language}", role=role, language=language)
    web = app.test_client()
    sign_in(web, f"u-{role}-{language}")
    page = web.get("/reports/periodic?year=2026&preset=h1")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "01/01/2026" in text and "30/06/2026" in text
    assert ("Từ chối dịch vụ" if language == "vi" else "Denial of service") in text
    assert "?year=2026&amp;preset=h2" in page.text and "?year=2026&amp;preset=year" in page.text
    year = text_of(web.get("/reports/periodic?year=2026&preset=year").text)
    assert "01/01/2026" in year and "31/12/2026" in year
    h2 = text_of(web.get("/reports/periodic?year=2026&preset=h2").text)
    assert "01/07/2026" in h2 and "31/12/2026" in h2
    if language == "vi":
        assert "Báo cáo tổng hợp" in text and "Sáu tháng đầu năm" in text and "Cả năm" in text
        assert "Half-year" not in text and "Periodic summary" not in text
    else:
        assert "Periodic summary" in text and "First half-year" in text and "Whole year" in text
        assert "Sáu tháng đầu năm" not in text
    assert "periodic." not in text and "preset." not in text
    pdf = web.get("/reports/periodic.pdf?from=2026-01-01&to=2026-06-30")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    bad = web.get("/reports/periodic?from=2026-07-01&to=2026-01-01")
    assert bad.status_code == 200
    assert ("không được sau" if language == "vi" else "must not be after") in text_of(bad.text)


def test_form05_web_page_is_refused_to_a_responder(app):
    make_user(app, "resp", role="responder")
    web = app.test_client()
    sign_in(web, "resp")
    assert web.get("/reports/periodic").status_code == 403


def test_the_notification_deadline_is_met_only_when_owner_specialised_unit_and_coordinator_are_ticked(client, operator):
    detected = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    some = file(client, operator, detected_at=detected.isoformat(), notified_parties=["isp", "owner"])
    state = {c["rule"]: c["state"] for c in client.get(f"{URL}/{some['id']}/deadlines", headers=operator).json["items"]}
    assert state["notification"] == "running"
    all_three = ["owner", "specialised_unit", "national_coordinator"]
    r = client.patch(
        f"{URL}/{some['id']}", json={"notified_parties": ["owner", "national_coordinator"]}, headers=operator
    )
    assert r.status_code == 200, r.json
    state = {c["rule"]: c["state"] for c in client.get(f"{URL}/{some['id']}/deadlines", headers=operator).json["items"]}
    assert state["notification"] == "running"
    r = client.patch(f"{URL}/{some['id']}", json={"notified_parties": all_three}, headers=operator)
    assert r.status_code == 200, r.json
    state = {c["rule"]: c["state"] for c in client.get(f"{URL}/{some['id']}/deadlines", headers=operator).json["items"]}
    assert state["notification"] == "met"
    filed = file(client, operator, detected_at=detected.isoformat(), notified_parties=all_three)
    state = {
        c["rule"]: c["state"] for c in client.get(f"{URL}/{filed['id']}/deadlines", headers=operator).json["items"]
    }
    assert state["notification"] == "met"
