"""The layout holds: the domain never imports the web edge, wsgi.py patches nothing, create_app stays offline."""

import ast
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import create_app

ROOT = Path(__file__).resolve().parent.parent
# Packages below the web edge (style.md: `app` → `playbooks` → `incidents`, `notifiers`).
DOMAIN_PACKAGES = ("incidents", "playbooks", "notifiers")
# What each of them may not import, besides the web edge itself.
LOWER_THAN = {"incidents": ("playbooks",), "notifiers": ("playbooks",), "playbooks": ()}
WEB_MODULES = ("app", "flask", "flask_*", "werkzeug.wrappers", "werkzeug.local", "werkzeug.routing",
               "werkzeug.serving", "werkzeug.test", "werkzeug.exceptions", "werkzeug.sansio")  # fmt: skip
# Request-bound names, whatever module they would come from.
WEB_NAMES = frozenset({"request", "current_user", "g", "current_app", "session_transaction"})
WERKZEUG_WEB_NAMES = frozenset({"Request", "Response", "LocalProxy", "Local"})


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith("_*"):
        return module.split(".")[0].startswith(pattern[:-1])
    return module == pattern or module.startswith(pattern + ".")


def _absolute(module: str | None, level: int, path: Path) -> str:
    """Resolve `from ..x import y` against the file's own package."""
    if level == 0:
        return module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = list(path.relative_to(ROOT).parts[:-1])
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, module] if module else base)


def imports_of(source: str, path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, imported name or None) for every import, including importlib/__import__ calls."""
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, path)
            for alias in node.names:
                yield node.lineno, module, alias.name
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value, None


def violations(source: str, path: Path, package: str) -> list[str]:
    found = []
    forbidden = (*WEB_MODULES, *LOWER_THAN.get(package, ()))
    where = path.relative_to(ROOT)
    for line, module, name in imports_of(source, path):
        full = ".".join(part for part in (module, name) if part)
        if any(_matches(module, p) or _matches(full, p) for p in forbidden):
            found.append(f"{where}:{line} imports {full}")
        elif name in WEB_NAMES:
            found.append(f"{where}:{line} imports the request-bound name {name!r} from {module}")
        elif module.split(".")[0] == "werkzeug" and name in WERKZEUG_WEB_NAMES:
            found.append(f"{where}:{line} imports werkzeug's {name}")
    return found


def domain_files() -> Iterator[tuple[str, Path]]:
    for package in DOMAIN_PACKAGES:
        folder = ROOT / package
        if folder.is_dir():
            for path in sorted(folder.rglob("*.py")):
                yield package, path


def test_domain_packages_never_import_the_web_edge():
    files = list(domain_files())
    assert any(package == "incidents" for package, _ in files), "the walk found no incidents/ modules"
    found = [v for package, path in files for v in violations(path.read_text(encoding="utf-8"), path, package)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import flask",
        "from flask import request",
        "from flask.globals import g",
        "import flask_socketio",
        "from app import db",
        "from app.db import session",
        "from .. import app",
        "from werkzeug.wrappers import Request",
        "from werkzeug import Response",
        "from werkzeug.local import LocalProxy",
        "from flask_login import current_user",
        "from somewhere import current_user",
        "import importlib\nimportlib.import_module('flask')",
        "__import__('app.auth')",
        "from playbooks import engine",
    ],
)
def test_the_import_walk_catches_each_forbidden_form(source):
    assert violations(source, ROOT / "incidents" / "example.py", "incidents")


@pytest.mark.parametrize(
    "source",
    ["from werkzeug.security import check_password_hash", "from sqlalchemy.orm import Session",
     "from incidents.base import Base", "from . import enums", "import applications"],
)  # fmt: skip
def test_the_import_walk_allows_what_the_domain_may_use(source):
    assert violations(source, ROOT / "incidents" / "example.py", "incidents") == []


def test_wsgi_py_patches_nothing():
    source = (ROOT / "wsgi.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    for line, module, name in imports_of(source, ROOT / "wsgi.py"):
        assert module.split(".")[0] not in ("gevent", "eventlet", "psycogreen"), f"wsgi.py:{line} imports {module}"
        assert name != "monkey", f"wsgi.py:{line} imports monkey"
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert not calls & {"patch_all", "monkey_patch", "patch_socket", "patch_psycopg"}, calls


class Listener:
    """A TCP port that accepts and never answers: a connection attempt is counted, not served."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def test_create_app_with_an_unreachable_database_still_returns_an_app(listener, tmp_path):
    pg_url = f"postgresql://nobody@127.0.0.1:{listener.port}/nowhere?connect_timeout=2"
    app = create_app({"DATABASE_URL": pg_url, "REDIS_URL": f"redis://127.0.0.1:{listener.port}/0",
                      "SECRET_KEY": "test", "TESTING": True})  # fmt: skip
    assert app.name == "app"
    assert listener.connections() == 0, "create_app opened a connection (migration or health check at build time?)"

    sqlite_file = tmp_path / "never.db"
    create_app({"DATABASE_URL": f"sqlite:///{sqlite_file}", "SECRET_KEY": "test", "TESTING": True})
    assert not sqlite_file.exists(), "create_app touched the SQLite database"


def test_importing_wsgi_builds_the_app_offline_and_unpatched(listener):
    probe = (
        "import sys, wsgi\n"
        "assert wsgi.app.name == 'app'\n"
        "import gevent.monkey\n"
        "print('patched' if gevent.monkey.is_anything_patched() else 'unpatched')\n"
    )
    env = {
        **os.environ,
        "UCSC_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{listener.port}/nowhere?connect_timeout=2",
        "UCSC_SECRET_KEY": "test",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unpatched"
    assert listener.connections() == 0
