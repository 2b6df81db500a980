"""The incident page's evidence, reports and deadlines, and the board's metrics, through the web UI."""

import hashlib
import io

import docx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import db
from incidents import followup
from incidents.models import AuditEntry
from tests import paging
from tests.web import csrf, make_user, sign_in, text_of


@pytest.fixture
def app_config(tmp_path):
    return {"EVIDENCE_DIR": str(tmp_path / "evidence")}


def file_incident(client: FlaskClient) -> str:
    page = client.get("/incidents/new")
    form = {"csrf_token": csrf(page.text), "title": "Mã độc trên máy chủ", "category": "malware", "priority": "P2",
            "tlp": "amber", "detected_at": "2026-11-20T08:30"}  # fmt: skip
    response = client.post("/incidents/new", data=form)
    assert response.status_code == 302, response.text
    assert paging.run_jobs(client.application, (followup.FILED,)) == 1  # the worker starts its clocks
    return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def test_operator_attaches_a_sample_makes_reports_and_sees_the_deadlines_on_the_incident_page(
    app: Flask, client: FlaskClient
) -> None:
    make_user(app, "op")
    sign_in(client, "op")
    ref = file_incident(client)
    page = client.get(f"/incidents/{ref}")
    text = text_of(page.text)
    assert "Các thời hạn" in text and "Thông báo sự cố cho chủ quản" in text and "Chưa có chứng cứ đính kèm." in text
    sample = b"MZ\x90\x00 not really a sample"
    response = client.post(f"/incidents/{ref}/evidence", content_type="multipart/form-data", data={
        "csrf_token": csrf(page.text), "file": (io.BytesIO(sample), "mau.exe"), "kind": "malware"})  # fmt: skip
    assert response.status_code == 302
    page = client.get(f"/incidents/{ref}")
    digest = hashlib.sha256(sample).hexdigest()
    assert digest in page.text and "mật khẩu: infected" in page.text
    assert f'href="/incidents/{ref}/evidence/1/download"' in page.text
    download = client.get(f"/incidents/{ref}/evidence/1/download")
    assert download.status_code == 200 and download.mimetype == "application/zip"
    assert download.headers["Content-Disposition"].startswith("attachment;") and sample not in download.data
    with app.app_context():
        actions = list(db.session().scalars(select(AuditEntry.action)))
    assert actions.count("evidence.downloaded") == 1
    response = client.post(f"/incidents/{ref}/reports/initial", data={"csrf_token": csrf(page.text)})
    assert response.status_code == 302
    page = client.get(f"/incidents/{ref}")
    assert f"Đã lập báo cáo {ref}/BC03-1." in text_of(page.text)
    got = client.get(f"/incidents/{ref}/reports/initial/1.docx")
    assert got.status_code == 200
    cells = {r.cells[0].text: r.cells[1].text for t in docx.Document(io.BytesIO(got.data)).tables for r in t.rows}
    assert cells["Ngày, giờ phát hiện (*)"] == "20/11/2026 08:30"
    assert "mau.exe" in cells["Tài liệu đính kèm (nhật ký, mẫu mã độc, khác)"]


def test_the_committee_board_shows_response_times_and_breaches_and_no_upload_form(app: Flask, client: FlaskClient):
    make_user(app, "op")
    make_user(app, "member", role="committee")
    sign_in(client, "op")
    ref = file_incident(client)
    client = app.test_client()
    sign_in(client, "member")
    board = client.get("/board")
    assert board.status_code == 200
    text = text_of(board.text)
    assert "Thời gian ứng cứu (26 tuần)" in text and "Trễ hạn" in text
    assert 'id="chart-metrics"' in board.text and 'id="chart-breaches"' in board.text
    page = client.get(f"/incidents/{ref}")
    assert 'name="file"' not in page.text
    assert client.post(f"/incidents/{ref}/reports/end", data={"csrf_token": csrf(page.text)}).status_code == 403
