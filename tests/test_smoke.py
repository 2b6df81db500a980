from tests.conftest import incident_payload


def test_filed_incident_reads_back_with_its_reference(client, operator):
    created = client.post("/api/v1/incidents", json=incident_payload(), headers=operator)
    assert created.status_code == 201, created.json
    assert created.headers["Location"] == f"/api/v1/incidents/{created.json['id']}"
    assert created.json["ref"].startswith("TH-")
    got = client.get(created.headers["Location"], headers=operator)
    assert got.status_code == 200
    assert got.json["affected_system"]["code"] == "cong-dvc"
    assert [o["type"] for o in got.json["observables"]] == ["ipv4-addr", "domain-name", "url"]
