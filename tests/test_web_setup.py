"""A newcomer's setup: the server bound elsewhere than the default still serves /live to its own pages."""

from pathlib import Path

import pytest
import socketio
from flask import Flask

from app import config as defaults
from tests.conftest import TokenFactory
from tests.live import LiveServer, free_port
from tests.sockets import LiveClient

pytestmark = pytest.mark.slow


def server_without_base_url(database_url: str, tmp_path: Path, **env: str) -> LiveServer:
    """gunicorn started as `UCSC_BIND=127.0.0.1:PORT make run` starts it: no UCSC_BASE_URL unless `env` sets one."""
    server = LiveServer(database_url, tmp_path / "gunicorn.log")
    del server.env["UCSC_BASE_URL"]
    server.env["UCSC_BIND"] = f"127.0.0.1:{server.port}"
    server.env.update(env)
    return server.start()


def test_a_server_bound_to_another_port_accepts_its_own_pages_on_live(
    app: Flask, database_url: str, tmp_path: Path, make_token: TokenFactory
) -> None:
    operator = make_token()
    server = server_without_base_url(database_url, tmp_path)
    try:
        LiveClient(server.url).connect(operator, origin=server.url, timeout=5).wait_for("ready", 10)
    finally:
        server.stop()


def test_the_pages_own_origin_is_allowed_besides_base_url_and_a_refused_origin_is_logged_with_the_fix(
    app: Flask, database_url: str, tmp_path: Path, make_token: TokenFactory
) -> None:
    operator = make_token()
    server = server_without_base_url(database_url, tmp_path, UCSC_BASE_URL=f"http://127.0.0.1:{free_port()}")
    try:
        LiveClient(server.url).connect(operator, origin=server.url, timeout=5).wait_for("ready", 10)
        for _ in range(2):
            with pytest.raises(socketio.exceptions.ConnectionError):
                LiveClient(server.url).connect(operator, origin="https://evil.example", timeout=3)
        refusals = [
            line for line in server.log().splitlines() if "refused /live from origin https://evil.example" in line
        ]
        assert len(refusals) == 1, server.log()
        assert "UCSC_BASE_URL=https://evil.example" in refusals[0]
        assert "UCSC_SOCKETIO_EXTRA_ORIGINS" in refusals[0]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("8081", "http://127.0.0.1:8081"),
        ("[::1]:8082", "http://[::1]:8082"),
        ("unix:/run/ucsc.sock", "http://127.0.0.1:5000"),
    ],
)
def test_base_url_defaults_to_what_the_server_binds(bind: str, url: str) -> None:
    assert defaults.base_url_of(bind) == url
