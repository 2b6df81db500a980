import requests

from tests.conftest import incident_payload


def test_gunicorn_serves_the_intake_api(live_server, operator):
    r = requests.post(f"{live_server.url}/api/v1/incidents", json=incident_payload(), headers=operator, timeout=10)
    assert r.status_code == 201, r.text
    assert (
        requests.get(live_server.url + r.headers["Location"], headers=operator, timeout=10).json()["ref"]
        == r.json()["ref"]
    )
