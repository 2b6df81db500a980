"""The CLI contract (design.md): `flask --app wsgi init-db | create-user | create-token`, run as a real subprocess."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from app import create_app, db
from incidents.base import Base
from incidents.models import ApiToken, User
from tests.clean_clone import copy_clean_tree
from tests.conftest import PG_ADMIN_URL, _worker, incident_payload

# One worker runs this module, so each backend is initialised once.
pytestmark = pytest.mark.xdist_group("cli")
# The `flask` script of this interpreter's environment, as the design's contract spells the commands.
_SCRIPT = Path(sys.executable).with_name("flask")
FLASK = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "flask"]


@dataclass
class Cli:
    """`flask --app wsgi` in a clean copy of the tree (its own instance/), against one database."""

    tree: Path
    database_url: str

    def __call__(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "UCSC_DATABASE_URL": self.database_url, "UCSC_SECRET_KEY": "test"}
        env.pop("FLASK_APP", None)
        result = subprocess.run(
            [*FLASK, "--app", "wsgi", *args],
            cwd=self.tree, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    @contextmanager
    def app(self) -> Iterator[Flask]:
        """The app on the same database; its pool is closed once every session is back in it."""
        app = create_app({"DATABASE_URL": self.database_url, "SECRET_KEY": "test", "TESTING": True,
                          "INTAKE_RATE_LIMIT": "", "REDIS_URL": None})  # fmt: skip
        try:
            yield app
        finally:
            with app.app_context():
                db.engine().dispose()


@dataclass
class Initialised:
    cli: Cli
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    counts_after_first: dict[str, int]
    counts_after_second: dict[str, int]


# What init-db loads or could duplicate; logs (events, an audit trail) may legitimately record each run.
SEEDED = ("organisations", "positions", "systems", "system_addresses", "users", "api_tokens", "incidents")


def _counts(cli: Cli) -> dict[str, int]:
    with cli.app() as app, app.app_context():
        session = db.session()
        tables = Base.metadata.tables
        return {name: session.scalar(select(func.count()).select_from(tables[name])) for name in SEEDED}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_clean_tree(tmp_path_factory.mktemp("clone"))


def _initialise(cli: Cli) -> Initialised:
    first = cli("init-db")
    after_first = _counts(cli)
    second = cli("init-db")
    return Initialised(cli, first, second, after_first, _counts(cli))


# One module-scoped fixture per backend (not one parametrised fixture), so each is built once whatever
# order pytest-xdist runs the tests in.
@pytest.fixture(scope="module")
def sqlite_initialised(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Initialised:
    """init-db run twice on an empty SQLite file, with the row counts after each run."""
    return _initialise(Cli(tree, f"sqlite:///{tmp_path_factory.mktemp('cli') / 'ucsc.db'}"))


@pytest.fixture(scope="module")
def postgresql_initialised(tree: Path) -> Iterator[Initialised]:
    """init-db run twice on an empty PostgreSQL database of its own, with the row counts after each run."""
    name = f"ucsc_cli_{_worker()}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _initialise(Cli(tree, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"))
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def initialised(request: pytest.FixtureRequest) -> Initialised:
    return request.getfixturevalue(f"{request.param}_initialised")


def test_init_db_twice_is_safe_and_the_second_run_adds_nothing(initialised):
    assert "organisations" in initialised.first.stdout
    assert initialised.counts_after_first["organisations"] > 0
    assert initialised.counts_after_first["positions"] > 0
    assert initialised.counts_after_first["systems"] > 0
    assert initialised.counts_after_second == initialised.counts_after_first
    assert ": 0 organisations, 0 seats, 0 demo systems added" in initialised.second.stdout
    # UCSC_SECRET_KEY is set (as in production): no key file is written beside it (make run's test covers the file).
    assert not (initialised.cli.tree / "instance" / "secret_key").exists()


def test_create_user_reads_the_password_from_stdin_and_stores_an_scrypt_hash(initialised):
    cli = initialised.cli
    password = "đúng-mật-khẩu-2026"
    result = cli("create-user", "soc.lan", "--role", "operator", stdin=password + "\n")
    assert "soc.lan" in result.stdout
    assert password not in result.stdout + result.stderr

    with cli.app() as app, app.app_context():
        user = db.session().scalar(select(User).where(User.username == "soc.lan"))
    assert user is not None and user.role == "operator"
    assert user.password_hash.startswith("scrypt:")
    assert check_password_hash(user.password_hash, password)
    assert not check_password_hash(user.password_hash, password + "x")


def test_create_user_refuses_a_short_password_a_taken_name_and_an_unknown_role(initialised):
    cli = initialised.cli
    short = cli("create-user", "short.pw", "--role", "operator", stdin="abc\n", check=False)
    assert short.returncode != 0 and "password" in short.stderr
    cli("create-user", "taken", "--role", "responder", stdin="a-long-enough-password\n")
    again = cli("create-user", "taken", "--role", "responder", stdin="a-long-enough-password\n", check=False)
    assert again.returncode != 0 and "taken" in again.stderr
    role = cli("create-user", "nobody", "--role", "superuser", stdin="a-long-enough-password\n", check=False)
    assert role.returncode != 0


def test_create_token_prints_the_token_alone_on_its_last_line_and_it_authenticates(initialised):
    cli = initialised.cli
    result = cli("create-token", "siem-1", "--role", "intake")
    token = result.stdout.splitlines()[-1]
    assert token == token.strip() and " " not in token and len(token) >= 32

    headers = {"Authorization": f"Bearer {token}"}
    with cli.app() as app:
        with app.app_context():
            stored = db.session().scalar(select(ApiToken).where(ApiToken.name == "siem-1"))
        assert stored is not None and token not in (stored.digest, stored.prefix)
        client = app.test_client()
        created = client.post("/api/v1/incidents", json=incident_payload(), headers=headers)
        assert created.status_code == 201, created.json
        assert client.get(created.headers["Location"], headers=headers).status_code == 200
        assert client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {token}x"}).status_code == 401


def test_create_token_with_a_webhook_stores_the_url_and_a_secret_shown_once(initialised):
    cli = initialised.cli
    result = cli("create-token", "siem-hook", "--role", "intake", "--webhook", "https://siem.example.vn/ucsc")
    lines = result.stdout.splitlines()
    token = lines[-1]
    with cli.app() as app, app.app_context():
        stored = db.session().scalar(select(ApiToken).where(ApiToken.name == "siem-hook"))
    assert stored.webhook_url == "https://siem.example.vn/ucsc"
    assert len(stored.webhook_secret) >= 40 and stored.webhook_secret != token
    assert any(stored.webhook_secret in line for line in lines[:-1])  # printed once, before the token

    refused = cli("create-token", "siem-bad", "--role", "intake", "--webhook", "ftp://siem.example.vn", check=False)
    assert refused.returncode != 0 and "webhook" in refused.stderr + refused.stdout
    with cli.app() as app, app.app_context():
        assert db.session().scalar(select(ApiToken).where(ApiToken.name == "siem-bad")) is None
