"""Evidence: digests, the AES archive for samples, attachment-only downloads, clearance, custody and audit."""

import hashlib
import io
import zipfile

import pytest
import pyzipper
from sqlalchemy import select

from incidents.models import AuditEntry
from tests.conftest import incident_payload

URL = "/api/v1/incidents"
# Not a real sample: the EICAR test string, which every antivirus flags, is what the field uses to test handling.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@pytest.fixture
def app_config(tmp_path):
    return {"EVIDENCE_DIR": str(tmp_path / "evidence"), "EVIDENCE_MAX_BYTES": 64 * 1024}


def file(client, headers, **overrides) -> dict:
    r = client.post(URL, json=incident_payload(**overrides), headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def upload(client, headers, incident_id, data: bytes, name: str, kind: str, **form):
    body = {"file": (io.BytesIO(data), name), "kind": kind, **form}
    return client.post(f"{URL}/{incident_id}/evidence", data=body, headers=headers, content_type="multipart/form-data")


def test_a_sample_is_stored_and_served_only_inside_an_aes_zip_with_the_infected_password(client, operator, tmp_path,
                                                                                           session):  # fmt: skip
    incident = file(client, operator)
    r = upload(client, operator, incident["id"], EICAR, "dropper.exe", "malware", description="Mẫu từ máy chủ web")
    assert r.status_code == 201, r.json
    item = r.json
    assert item["sha256"] == hashlib.sha256(EICAR).hexdigest()
    assert item["size"] == len(EICAR)
    assert item["tlp"] == "amber"  # the incident's, when none is given
    # Nothing under the evidence directory holds the sample in the clear.
    for path in (tmp_path / "evidence").rglob("*"):
        if path.is_file():
            assert EICAR not in path.read_bytes()
    got = client.get(f"{URL}/{incident['id']}/evidence/{item['id']}/download", headers=operator)
    assert got.status_code == 200
    assert got.mimetype == "application/zip"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    assert "dropper.exe.zip" in got.headers["Content-Disposition"]
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert EICAR not in got.data
    with zipfile.ZipFile(io.BytesIO(got.data)) as plain, pytest.raises(RuntimeError):
        plain.read("dropper.exe")  # encrypted: no password, no content
    with pyzipper.AESZipFile(io.BytesIO(got.data)) as zf:
        info = zf.getinfo("dropper.exe")
        assert info.flag_bits & 0x1  # encrypted entry
        zf.setpassword(b"infected")
        content = zf.read("dropper.exe")
    assert hashlib.sha256(content).hexdigest() == item["sha256"]


def test_a_log_is_served_as_an_attachment_never_inline(client, operator):
    incident = file(client, operator)
    log = b"Nov 20 08:31:02 web nginx: 203.0.113.99 GET /login <script>alert(1)</script>\n"
    item = upload(client, operator, incident["id"], log, "access.html", "log").json
    got = client.get(f"{URL}/{incident['id']}/evidence/{item['id']}/download", headers=operator)
    assert got.status_code == 200 and got.data == log
    assert got.mimetype == "application/octet-stream"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in got.headers["Content-Security-Policy"]
    assert got.headers["X-Evidence-SHA256"] == hashlib.sha256(log).hexdigest()


def test_a_reader_without_clearance_gets_404_for_the_item_its_download_and_its_custody(client, operator, make_token):
    incident = file(client, operator)
    red = upload(client, operator, incident["id"], b"secret capture", "capture.pcap", "log", tlp="red").json
    amber = upload(client, operator, incident["id"], b"shared log", "shared.log", "log").json
    member = make_token("committee")
    listed = client.get(f"{URL}/{incident['id']}/evidence", headers=member).json["items"]
    assert [i["id"] for i in listed] == [amber["id"]]
    for suffix in ("", "/download", "/custody"):
        r = client.get(f"{URL}/{incident['id']}/evidence/{red['id']}{suffix}", headers=member)
        assert r.status_code == 404, suffix
    assert client.get(f"{URL}/{incident['id']}/evidence/{amber['id']}/download", headers=member).status_code == 200
    hidden = file(client, operator, tlp="red")
    item = upload(client, operator, hidden["id"], b"x", "x.log", "log").json
    assert client.get(f"{URL}/{hidden['id']}/evidence/{item['id']}/download", headers=member).status_code == 404


def test_every_download_is_in_the_audit_trail_and_the_custody_chain(client, operator, session):
    incident = file(client, operator)
    item = upload(client, operator, incident["id"], EICAR, "s.bin", "malware").json
    for _ in range(3):
        assert client.get(f"{URL}/{incident['id']}/evidence/{item['id']}/download", headers=operator).status_code == 200
    r = client.post(f"{URL}/{incident['id']}/evidence/{item['id']}/custody",
                    json={"action": "transferred", "holder": "PA05 Công an tỉnh", "note": "Bàn giao bản sao"},
                    headers=operator)  # fmt: skip
    assert r.status_code == 201
    chain = client.get(f"{URL}/{incident['id']}/evidence/{item['id']}/custody", headers=operator).json["items"]
    assert [c["action"] for c in chain] == ["collected", "downloaded", "downloaded", "downloaded", "transferred"]
    stored = {c["sha256_checked"] for c in chain}
    assert len(stored) == 2  # the sample's digest at collection, the archive's at every later check
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "evidence.downloaded")).all()
    assert len(rows) == 3
    assert {r.target for r in rows} == {incident["ref"]}
    assert all(r.data["evidence_id"] == item["id"] and r.data["sha256"] == item["sha256"] for r in rows)
    events = client.get(f"{URL}/{incident['id']}/events", headers=operator).json["items"]
    assert [e["data"]["evidence_id"] for e in events if e["kind"] == "evidence.added"] == [item["id"]]


def test_an_altered_file_is_refused_and_the_custody_chain_says_so(client, operator, tmp_path):
    incident = file(client, operator)
    item = upload(client, operator, incident["id"], b"original log", "a.log", "log").json
    (stored,) = [p for p in (tmp_path / "evidence").rglob("*") if p.is_file()]
    stored.write_bytes(b"tampered log")
    r = client.get(f"{URL}/{incident['id']}/evidence/{item['id']}/download", headers=operator)
    assert r.status_code == 409
    chain = client.get(f"{URL}/{incident['id']}/evidence/{item['id']}/custody", headers=operator).json["items"]
    assert chain[-1]["action"] == "downloaded" and "altered" in chain[-1]["note"]


def test_uploads_over_the_limit_empty_or_malformed_are_refused_and_nothing_is_stored(client, operator, tmp_path):
    incident = file(client, operator)
    too_big = upload(client, operator, incident["id"], b"a" * (64 * 1024 + 1), "big.log", "log")
    assert too_big.status_code == 422 and too_big.json["errors"][0]["field"] == "file"
    assert upload(client, operator, incident["id"], b"", "e.log", "log").status_code == 422
    bad = upload(client, operator, incident["id"], b"x", "x.log", "firmware", tlp="purple")
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json["errors"]} == {"kind", "tlp"}
    no_file = client.post(f"{URL}/{incident['id']}/evidence", data={"kind": "log"}, headers=operator,
                          content_type="multipart/form-data")  # fmt: skip
    assert no_file.status_code == 422
    as_json = client.post(f"{URL}/{incident['id']}/evidence", json={"kind": "log"}, headers=operator)
    assert as_json.status_code == 415
    assert client.get(f"{URL}/{incident['id']}/evidence", headers=operator).json["items"] == []
    assert [p for p in (tmp_path / "evidence").rglob("*") if p.is_file()] == []
    reader = client.post(f"{URL}/{incident['id']}/evidence", data={"file": (io.BytesIO(b"x"), "x")},
                         headers={"Authorization": "Bearer nope"}, content_type="multipart/form-data")  # fmt: skip
    assert reader.status_code == 401
