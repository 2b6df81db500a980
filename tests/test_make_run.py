"""The README's first command on a clean clone: `make run` installs, migrates, says how to sign in, and serves."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.clean_clone import copy_clean_tree
from tests.conftest import incident_payload
from tests.live import free_port

# Creating .venv and installing from the package index dominates: about 30 s on this machine.
STARTUP_TIMEOUT = 480


def _stop(process: subprocess.Popen) -> None:
    """Stop make, gunicorn's arbiter and its worker: the whole process group make leads."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass


@pytest.mark.slow
@pytest.mark.xdist_group("make-run")
def test_make_run_on_a_clean_clone_serves_healthz_and_prints_how_to_sign_in(tmp_path: Path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme

    tree = copy_clean_tree(tmp_path / "clone")
    assert not (tree / ".venv").exists() and not (tree / "instance").exists()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "make-run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UCSC_", "VIRTUAL_ENV", "FLASK_", "PYTHONPATH"))}
    env["UCSC_BIND"] = f"127.0.0.1:{port}"

    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["make", "run"], cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        healthy = None
        while time.monotonic() - started < STARTUP_TIMEOUT:
            if process.poll() is not None:
                pytest.fail(
                    f"make run exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-6000:]}"
                )
            try:
                response = requests.get(base + "/healthz", timeout=2)
                if response.status_code == 200:
                    healthy = response
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or the arbiter listens while its worker still boots
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        output = log_path.read_text(errors="replace")
        assert healthy is not None, f"no 200 from /healthz after {elapsed:.0f}s:\n{output[-6000:]}"
        print(f"make run answered /healthz after {elapsed:.1f}s")

        assert healthy.headers["Content-Type"].startswith("application/json")
        assert healthy.json()["status"] == "ok"
        assert healthy.json()["database"] == "sqlite"
        assert (tree / ".venv" / "bin" / "python").exists()
        assert (tree / "instance" / "ucsc.db").exists()
        assert (tree / "instance" / "secret_key").read_text().strip()

        # The login instructions: where, who, the password file, and how to get an API token.
        assert f"http://127.0.0.1:{port}" in output
        match = re.search(r'user "admin", password in (\S+)', output)
        assert match, output[-3000:]
        password_file = Path(match.group(1))
        assert password_file.is_file() and len(password_file.read_text().strip()) >= 12
        assert oct(password_file.stat().st_mode & 0o777) == "0o600"
        token_command = re.search(r"(\.venv/bin/flask --app wsgi create-token \S+ --role intake)", output)
        assert token_command, output[-3000:]

        # Following those instructions gives a token the running server accepts.
        made = subprocess.run(
            token_command.group(1).split(), cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.splitlines()[-1]
        filed = requests.post(base + "/api/v1/incidents", json=incident_payload(),
                              headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
        assert filed.status_code == 201, filed.text
        assert requests.get(base + "/api/v1/docs", timeout=10).status_code == 200
    finally:
        _stop(process)
    assert process.returncode is not None
