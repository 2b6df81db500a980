"""Per-token intake rate limits: 429 problem+json with Retry-After, in memory or shared through Redis."""

import secrets

import pytest
import redis
from sqlalchemy import update

from app import create_app, db
from app.auth import digest
from incidents.models import ApiToken
from tests.conftest import incident_payload

URL = "/api/v1/incidents"
# A Redis database of this suite's own; keys are per token id, and each test's tokens get random ids
# so runs sharing this Redis (both backends, xdist workers, other checkouts) never count each other's hits.
REDIS_URL = "redis://127.0.0.1:6379/11"
LIMIT = "3/minute"
STORAGES = [
    pytest.param({"INTAKE_RATE_LIMIT": LIMIT}, id="memory"),
    pytest.param({"INTAKE_RATE_LIMIT": LIMIT, "REDIS_URL": REDIS_URL}, id="redis"),
]


@pytest.fixture
def token(app, make_token):
    """Authorization headers of a fresh operator token whose id is random (the limiter's key)."""

    def factory(role: str = "operator") -> dict[str, str]:
        headers = make_token(role)
        key = digest(headers["Authorization"].removeprefix("Bearer "))
        with app.app_context():
            session = db.session()
            with session.begin():
                session.execute(
                    update(ApiToken).where(ApiToken.digest == key).values(id=secrets.randbelow(2**40) + 10**6)
                )
        return headers

    return factory


def assert_429(r) -> None:
    assert r.status_code == 429, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    assert r.json["status"] == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("app_config", STORAGES)
def test_intake_over_the_limit_answers_429_with_retry_after_for_that_token_only(client, token, app_config):
    siem, other = token(), token()
    for _ in range(3):
        assert client.post(URL, json=incident_payload(), headers=siem).status_code == 201
    assert_429(client.post(URL, json=incident_payload(), headers=siem))
    assert_429(client.post(f"{URL}/bulk", json={"incidents": [incident_payload()]}, headers=siem))
    assert len(client.get(URL, headers=siem).json["items"]) == 3, (
        "a refused filing writes nothing; reads are not limited"
    )
    for _ in range(3):
        assert client.post(URL, json=incident_payload(), headers=other).status_code == 201
    assert_429(client.post(URL, json=incident_payload(), headers=other))


@pytest.mark.parametrize("app_config", [STORAGES[1]])
def test_redis_limits_are_shared_by_every_web_process(app, client, token, app_config):
    redis.Redis.from_url(REDIS_URL).ping()
    shared = ("DATABASE_URL", "SECRET_KEY", "TESTING", "INTAKE_RATE_LIMIT", "REDIS_URL")
    other_process = create_app({k: app.config[k] for k in shared}).test_client()
    siem = token()
    assert client.post(URL, json=incident_payload(), headers=siem).status_code == 201
    assert other_process.post(URL, json=incident_payload(), headers=siem).status_code == 201
    assert client.post(URL, json=incident_payload(), headers=siem).status_code == 201
    assert_429(other_process.post(URL, json=incident_payload(), headers=siem))
    with other_process.application.app_context():
        db.engine().dispose()
