"""Forms 03 and 04 as DOCX and PDF: read back, each value beside its label, fonts cover the text; close needs 04."""

import io
import re
from pathlib import Path

import docx
import pytest
from fontTools.ttLib import TTFont
from pypdf import PdfReader

from tests.conftest import incident_payload

URL = "/api/v1/incidents"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
RESOLUTION = "Đã chặn nguồn tấn công và khôi phục dịch vụ."


def file(client, headers, **overrides) -> dict:
    r = client.post(URL, json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def make_report(client, headers, incident_id, kind, **body) -> dict:
    r = client.post(f"{URL}/{incident_id}/reports/{kind}", json=body, headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def docx_cells(data: bytes) -> dict[str, list[str]]:
    """Every two-column row of the document's tables: label -> values in the cell beside it (in order)."""
    document = docx.Document(io.BytesIO(data))
    pairs: dict[str, list[str]] = {}
    for table in document.tables:
        for row in table.rows:
            cells = row.cells
            if len(cells) == 2:
                pairs.setdefault(cells[0].text, []).append(cells[1].text)
    return pairs


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)


def embedded_fonts(data: bytes) -> list[TTFont]:
    fonts = []
    for page in PdfReader(io.BytesIO(data)).pages:
        resources = page["/Resources"]
        for font in resources.get("/Font", {}).values():
            font = font.get_object()
            for descendant in font.get("/DescendantFonts", [font]):
                descriptor = descendant.get_object().get("/FontDescriptor")
                if descriptor is None:
                    continue
                stream = descriptor.get_object().get("/FontFile2")
                assert stream is not None, f"font {font.get('/BaseFont')} is not embedded as TrueType"
                fonts.append(TTFont(io.BytesIO(stream.get_object().get_data())))
    return fonts


def assert_fonts_cover(data: bytes) -> str:
    text = pdf_text(data)
    fonts = embedded_fonts(data)
    assert fonts, "no embedded font"
    covered = set()
    for font in fonts:
        covered |= set(font.getBestCmap() or {})
    missing = {ch for ch in text if not ch.isspace() and ord(ch) not in covered}
    assert not missing, f"characters without a glyph in the embedded fonts: {sorted(missing)}"
    return text


def test_form03_docx_puts_each_value_beside_its_label(client, operator):
    incident = file(
        client,
        operator,
        affected_system="cong-dvc",
        detected_at="2026-11-20T08:30:00+07:00",
        contact={"name": "Trần Thị Bình", "position": "Trưởng phòng", "phone": "0912000000", "email": "b@example.vn"},
        notified_parties=["isp"],
    )
    report = make_report(client, operator, incident["id"], "initial")
    assert report["reference"] == f"{incident['ref']}/BC03-1"
    r = client.get(f"{URL}/{incident['id']}/reports/initial?format=docx", headers=operator)
    assert r.status_code == 200
    assert r.headers["Content-Disposition"].startswith("attachment;")
    cells = docx_cells(r.data)
    assert cells["Ngày, giờ phát hiện (*)"] == ["20/11/2026 08:30"]
    assert cells["Họ và tên (*)"] == ["Trần Thị Bình"]
    assert cells["Tên tổ chức/cá nhân báo cáo sự cố (*)"] == ["Sở TT&TT"]
    assert cells["Tên hệ thống bị sự cố"] == ["Cổng dịch vụ công tỉnh Thanh Hóa"]
    assert cells["Tên miền"] == ["dichvucong.thanhhoa.gov.vn"]
    assert cells["Địa chỉ IP công khai"] == ["203.0.113.10"]
    assert cells["Phân loại cấp độ"] == ["Cấp độ 3"]
    assert cells["Loại sự cố"] == ["Từ chối dịch vụ"]
    assert "domain-name: dichvucong.thanhhoa.gov.vn" in cells["Dấu hiệu nhận biết (observables)"][0]
    assert "☒ Doanh nghiệp cung cấp dịch vụ viễn thông, Internet trực tiếp" in cells["Đã thông báo"][0]
    assert "☐ Cơ quan điều phối quốc gia" in cells["Đã thông báo"][0]
    assert "☒ Qua hệ thống phát hiện xâm nhập (IDS)" in cells["Cách thức phát hiện"][0]
    document = docx.Document(io.BytesIO(r.data))
    texts = [p.text for p in document.paragraphs]
    assert "BÁO CÁO BAN ĐẦU SỰ CỐ MẠNG" in texts
    assert f"Số: {report['reference']}" in texts
    numbered = [t for t in texts if re.match(r"^\d+\. ", t)]
    assert [t.split(".")[0] for t in numbered] == [str(n) for n in range(1, 13)]
    assert document.styles["Normal"].font.name == "Times New Roman"
    assert document.styles["Normal"].font.size.pt == 13


def test_form03_pdf_reads_back_with_values_and_an_embedded_font_that_covers_it(client, operator):
    incident = file(client, operator, affected_system="cong-dvc", detected_at="2026-11-20T08:30:00+07:00")
    make_report(client, operator, incident["id"], "initial")
    r = client.get(f"{URL}/{incident['id']}/reports/initial?format=pdf", headers=operator)
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    text = assert_fonts_cover(r.data)
    flat = " ".join(text.split())
    assert "Ngày, giờ phát hiện (*) 20/11/2026 08:30" in flat
    assert "Tên miền dichvucong.thanhhoa.gov.vn" in flat
    assert "Địa chỉ IP công khai 203.0.113.10" in flat
    assert "BÁO CÁO BAN ĐẦU SỰ CỐ MẠNG" in flat
    import pypdfium2

    ARTIFACTS.mkdir(exist_ok=True)
    pdf = pypdfium2.PdfDocument(r.data)
    image = pdf[0].render(scale=1.5).to_pil()
    target = ARTIFACTS / "form03_page1.png"
    image.save(target)
    pdf.close()
    assert target.stat().st_size > 10_000 and image.size[0] > 800


def test_long_fields_missing_optional_data_and_vietnamese_text_never_break_rendering(client, operator):
    long_text = ("Mã độc mã hóa dữ liệu ở nhiều máy chủ; kẻ tấn công đòi tiền chuộc bằng tiền ảo. " * 80).strip()
    unbroken = "https://example.vn/" + "a" * 3000
    bare = {
        "title": "Ặ Ẵ Ẳ ự ữ ỹ Đđ " + "Tiêu đề rất dài " * 15,
        "description": long_text + " " + unbroken,
        "category": "ransomware",
        "priority": "P1",
        "detected_at": "2026-10-01T23:59:00+07:00",
        # Form 04 cannot go out without the reporter's address, phone and e-mail; nothing else is given.
        "reporter": {"organisation": "Sở Y tế", "address": "Thanh Hóa", "phone": "0237", "email": "a@example.vn"},
    }
    r = client.post(URL, json=bare, headers=operator)
    assert r.status_code == 201, r.json
    iid = r.json["id"]
    make_report(client, operator, iid, "initial")
    make_report(client, operator, iid, "end", handling_result=long_text, recommendations="Sao lưu ngoại tuyến.")
    for kind in ("initial", "end"):
        docx_data = client.get(f"{URL}/{iid}/reports/{kind}?format=docx", headers=operator)
        assert docx_data.status_code == 200
        cells = docx_cells(docx_data.data)
        assert cells["Mô tả"] == [long_text + " " + unbroken]
        assert cells["Tên hệ thống bị sự cố"] == ["—"]
        pdf = client.get(f"{URL}/{iid}/reports/{kind}?format=pdf", headers=operator)
        assert pdf.status_code == 200
        assert len(PdfReader(io.BytesIO(pdf.data)).pages) > 2
        text = assert_fonts_cover(pdf.data)
        assert "Ặ Ẵ Ẳ ự ữ ỹ Đđ" in text


def test_form04_carries_the_initial_reports_reference_and_date_and_the_outcome(client, operator):
    incident = file(client, operator, affected_system="cong-ttdt")
    make_report(client, operator, incident["id"], "initial")
    second = make_report(client, operator, incident["id"], "initial")
    assert second["version"] == 2
    end = make_report(
        client, operator, incident["id"], "end",
        handling_result="Chặn IP nguồn tại tường lửa.", handled_by="domestic",
        helpers=[{"name": "VNPT Thanh Hóa"}], estimated_damage=12_500_000, national_support_requested=True,
    )  # fmt: skip
    r = client.get(f"{URL}/{incident['id']}/reports/end?format=docx", headers=operator)
    cells = docx_cells(r.data)
    assert cells["Số ký hiệu báo cáo ban đầu"] == [second["reference"]]
    day = second["reported_at"]
    assert re.fullmatch(r"\d\d/\d\d/\d{4}", cells["Ngày báo cáo ban đầu"][0])
    assert cells["Ngày báo cáo ban đầu"][0][6:] == day[:4]
    assert cells["Kết quả xử lý"] == ["Chặn IP nguồn tại tường lửa."]
    assert cells["Tổ chức hỗ trợ"] == ["VNPT Thanh Hóa (trong nước)"]
    assert cells["Thiệt hại ước tính (đồng)"] == ["12.500.000"]
    assert cells["Tên miền"] == ["thanhhoa.gov.vn"]
    assert end["reference"] == f"{incident['ref']}/BC04-1"
    # Older versions stay downloadable; the timeline lists every version.
    assert (
        client.get(f"{URL}/{incident['id']}/reports/initial?format=docx&version=1", headers=operator).status_code == 200
    )
    assert client.get(f"{URL}/{incident['id']}/reports/initial?version=9", headers=operator).status_code == 404
    events = client.get(f"{URL}/{incident['id']}/events?limit=500", headers=operator).json["items"]
    made = [(e["data"]["report"], e["data"]["version"]) for e in events if e["kind"] == "report.created"]
    assert made == [("initial", 1), ("initial", 2), ("end", 1)]
    listed = client.get(f"{URL}/{incident['id']}/reports", headers=operator).json["items"]
    assert [(x["kind"], x["version"]) for x in listed] == [("end", 1), ("initial", 1), ("initial", 2)]


def test_a_drills_reports_say_so_on_their_face(client, operator):
    incident = file(client, operator, exercise=True)
    make_report(client, operator, incident["id"], "initial")
    got = client.get(f"{URL}/{incident['id']}/reports/initial?format=docx", headers=operator)
    texts = [p.text for p in docx.Document(io.BytesIO(got.data)).paragraphs]
    assert "DIỄN TẬP - KHÔNG PHẢI SỰ CỐ THẬT (DRILL)" in texts
    real = file(client, operator)
    make_report(client, operator, real["id"], "initial")
    got = client.get(f"{URL}/{real['id']}/reports/initial?format=docx", headers=operator)
    assert not any("DIỄN TẬP" in p.text for p in docx.Document(io.BytesIO(got.data)).paragraphs)


def _to_review(client, headers, iid):
    for step in ("triage", "first_response", "containment", "eradication", "recovery", "assessment", "review"):
        r = client.post(f"{URL}/{iid}/transitions", json={"to": step}, headers=headers)
        assert r.status_code == 200, r.json


def test_closing_requires_the_end_report(client, operator):
    incident = file(client, operator)
    _to_review(client, operator, incident["id"])
    r = client.post(f"{URL}/{incident['id']}/transitions", json={"to": "closed", "resolution": RESOLUTION},
                    headers=operator)  # fmt: skip
    assert r.status_code == 422
    assert r.json["errors"] == [{"field": "end_report", "message": "create the end report (Form 04) before closing"}]
    assert client.get(f"{URL}/{incident['id']}", headers=operator).json["status"] == "review"
    make_report(client, operator, incident["id"], "end", handling_result=RESOLUTION)
    r = client.post(f"{URL}/{incident['id']}/transitions", json={"to": "closed", "resolution": RESOLUTION},
                    headers=operator)  # fmt: skip
    assert r.status_code == 200 and r.json["status"] == "closed"


@pytest.mark.parametrize("body", [{"handled_by": "alone"}, {"estimated_damage": -1}, {"colour": "đỏ"}])
def test_bad_report_bodies_are_refused_with_field_errors_and_nothing_stored(client, operator, body):
    incident = file(client, operator)
    r = client.post(f"{URL}/{incident['id']}/reports/end", json=body, headers=operator)
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert r.json["errors"]
    assert client.get(f"{URL}/{incident['id']}/reports", headers=operator).json["items"] == []


def test_hidden_incidents_reports_are_404_and_committee_members_may_not_make_reports(client, operator, make_token):
    incident = file(client, operator, tlp="red")
    make_report(client, operator, incident["id"], "initial")
    outsider = make_token("committee")
    assert client.get(f"{URL}/{incident['id']}/reports/initial", headers=outsider).status_code == 404
    visible = file(client, operator)
    r = client.post(f"{URL}/{visible['id']}/reports/initial", json={}, headers=outsider)
    assert r.status_code == 403
    assert client.get(f"{URL}/{visible['id']}/reports/pdf", headers=operator).status_code == 404


def test_control_characters_in_stored_text_never_break_a_docx_or_pdf_report(client, operator):
    """XML 1.0 cannot hold most C0 controls: a SIEM's raw log line with one still renders, without it."""
    incident = file(client, operator, title="Cảnh báo\x07 IDS", description="dòng 1\x01\x1b[31mđỏ\x1b[0m\tcột\ndòng 2")
    make_report(client, operator, incident["id"], "initial")
    docx_data = client.get(f"{URL}/{incident['id']}/reports/initial?format=docx", headers=operator)
    assert docx_data.status_code == 200, docx_data.data[:300]
    assert docx_cells(docx_data.data)["Mô tả"] == ["dòng 1[31mđỏ[0m\tcột\ndòng 2"]
    pdf = client.get(f"{URL}/{incident['id']}/reports/initial?format=pdf", headers=operator)
    assert pdf.status_code == 200
