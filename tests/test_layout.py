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


# The restructuring's rules (style.md 15-17): no cycle inside a package, no reaching into another module's
# `_private` names, no registration by import side effect outside app/wiring.py, no module over 600 lines.

MAX_LINES = 600
# Migrations are history and tests are read one case at a time: they may be long, and are not walked.
NOT_WALKED = ("migrations", "tests")
WIRING = Path("app/wiring.py")
SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__", "instance", "build", "dist"})


def source_files() -> list[Path]:
    """Every first-party .py file (hidden folders such as .venv left out)."""
    return [
        path
        for path in sorted(ROOT.rglob("*.py"))
        if not any(p.startswith(".") or p in SKIPPED_FOLDERS for p in path.relative_to(ROOT).parts[:-1])
    ]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tree_modules() -> frozenset[str]:
    return frozenset(module_name(path) for path in source_files())


def _folder(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).parent.parts)


def resolve(dotted: str, path: Path, modules: frozenset[str]) -> str | None:
    """The first-party module `dotted` names (a script's `import _common` finds its own folder's), or None."""
    folder = _folder(path)
    for candidate in (dotted, f"{folder}.{dotted}" if folder else dotted):
        if candidate in modules:
            return candidate
    return None


def _is_private(name: str) -> bool:
    """`_x` but not `__dunder__`, nor `_`: that is gettext's conventional name, public wherever it is defined."""
    return name.startswith("_") and name != "_" and not (name.startswith("__") and name.endswith("__"))


def private_part(dotted: str, path: Path, modules: frozenset[str]) -> str | None:
    """The first `_private` part of a first-party dotted name that the module at `path` may not take, or None.

    A private module (`bench/_common.py`) belongs to its folder: the folder's own modules, and those below it,
    may import it. Any other `_name` belongs to the module that defines it alone.
    """
    parts = dotted.split(".")
    if resolve(parts[0], path, modules) is None:
        return None  # not ours: the standard library's and other projects' names are theirs to keep
    for i, part in enumerate(parts):
        if not _is_private(part):
            continue
        module = resolve(".".join(parts[: i + 1]), path, modules)
        if module is not None:
            owner, folder = module.rpartition(".")[0], _folder(path)
            if folder == owner or folder.startswith(owner + ".") or not owner:
                continue
        return ".".join(parts[: i + 1])
    return None


def _dotted(node: ast.expr) -> list[str] | None:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return [node.id, *reversed(names)] if isinstance(node, ast.Name) else None


def _module_bindings(tree: ast.AST, path: Path, modules: frozenset[str]) -> dict[str, str]:
    """Local name -> the first-party module an import binds it to (`import a.b` binds `a`)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name if alias.asname else alias.name.split(".")[0]
                if resolve(name, path, modules):
                    bound[alias.asname or name] = name
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, path)
            for alias in node.names:
                full = f"{module}.{alias.name}" if module else alias.name
                if resolve(full, path, modules):
                    bound[alias.asname or alias.name] = full
    return bound


def private_uses(source: str, path: Path, modules: frozenset[str]) -> list[str]:
    """Imports of another module's `_private` name, and `module._private` through an imported module."""
    tree = ast.parse(source, filename=str(path))
    where = path.relative_to(ROOT)
    found = set()
    for line, module, name in imports_of(source, path):
        private = private_part(".".join(p for p in (module, name) if p), path, modules)
        if private:
            found.add((line, f"{where}:{line} imports {private}"))
    bound = _module_bindings(tree, path, modules)
    for node in ast.walk(tree):
        chain = None
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain = _dotted(node)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
            attr = node.args[1] if len(node.args) > 1 else None
            base = _dotted(node.args[0])
            if base and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                chain = [*base, attr.value]
        if chain and chain[0] in bound:
            private = private_part(".".join([bound[chain[0]], *chain[1:]]), path, modules)
            if private:
                found.add((node.lineno, f"{where}:{node.lineno} uses {private}"))
    return [text for _, text in sorted(found)]


# Calls that put something into a registry, whatever the registry's library.
REGISTERING = frozenset({"register", "listen", "listens_for", "connect", "subscribe", "add_listener", "add_hook",
                         "at_commit", "job_kind"})  # fmt: skip
# Calls that change a collection in place: a registration when the collection is another module's.
MUTATING = frozenset({"append", "extend", "insert", "add", "update", "setdefault", "remove", "discard", "pop"})
# A blueprint's deferred functions run when the blueprint is registered: wiring by side effect, out of sight.
DEFERRED = frozenset({"record", "record_once"})


def _import_time(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements importing a module runs: its body and class bodies, not functions or the `__main__` block."""
    for stmt in body:
        if isinstance(stmt, ast.If) and "__name__" in ast.unparse(stmt.test):
            yield from _import_time(stmt.orelse)
            continue
        yield stmt
        if isinstance(stmt, (ast.ClassDef, ast.If, ast.For, ast.While, ast.With, ast.Try)):
            for field in ("body", "orelse", "finalbody"):
                yield from _import_time(getattr(stmt, field, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _import_time(handler.body)


def registrations(source: str, path: Path, modules: frozenset[str]) -> list[str]:
    """Registrations that importing the module makes; app/wiring.py's install(app) is where they belong.

    Run at import (the module's body and class bodies, not functions or the `__main__` block) anywhere but
    app/wiring.py, each of these is one:
    - a call of `register`, `listen`, `listens_for`, `connect`, `subscribe`, `add_listener`, `add_hook`,
      `at_commit` or `job_kind` on an imported object or module, or of an imported function of that name, as a
      statement or a decorator (`event.listen(...)`, `@event.listens_for(...)`, `atexit.register(...)`,
      `@jobs.job_kind("x")`);
    - any call statement (its result dropped, so made for its effect) of a function reached through an import
      from this project (`events.at_commit(KEY, writer)`, `jobs.job_kind("x")(handler)`);
    - a call that changes a collection reached through an import from this project
      (`service.EVENT_LISTENERS.append(f)`; `KINDS.update(...)` after `from incidents.jobs import KINDS`);
    - an assignment, augmented assignment or `del` into such an object's attribute or item
      (`deadline_paging.CONFIG = ...`, `jobs.KINDS["x"] = f`);
    - a blueprint's `record`/`record_once` function, which wires things when the blueprint is registered.
    A module's own objects are its business: routes on a blueprint it creates, a dict it defines and fills.
    """
    if path.relative_to(ROOT) == WIRING:
        return []
    tree = ast.parse(source, filename=str(path))
    imported, ours = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                imported.add(name)
                source = (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
                if getattr(node, "level", 0) or resolve(source, path, modules):
                    ours.add(name)
    where = path.relative_to(ROOT)
    found = []

    def root(node: ast.expr) -> str | None:
        while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
            node = node.func if isinstance(node, ast.Call) else node.value
        return node.id if isinstance(node, ast.Name) else None

    def check(expr: ast.expr) -> None:
        func = expr.func if isinstance(expr, ast.Call) else expr
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in DEFERRED and isinstance(func, ast.Attribute):
            found.append(f"{where}:{expr.lineno} defers wiring to {ast.unparse(func)}")
        elif name in REGISTERING and root(func) in imported:
            found.append(f"{where}:{expr.lineno} registers with {ast.unparse(func)}")
        elif name in MUTATING and isinstance(func, ast.Attribute) and root(func.value) in ours:
            found.append(f"{where}:{expr.lineno} changes {ast.unparse(func.value)}")

    def check_target(target: ast.expr) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                check_target(element)
        elif isinstance(target, ast.Attribute | ast.Subscript) and root(target) in ours:
            found.append(f"{where}:{target.lineno} assigns {ast.unparse(target)}")

    for stmt in _import_time(tree.body):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in stmt.decorator_list:
                check(decorator)
            continue
        if isinstance(stmt, ast.Assign | ast.Delete):
            for target in stmt.targets:
                check_target(target)
        elif isinstance(stmt, ast.AugAssign | ast.AnnAssign):
            check_target(stmt.target)
        already = len(found)
        value = getattr(stmt, "value", None) if isinstance(stmt, ast.Expr | ast.Assign | ast.AnnAssign) else None
        for node in ast.walk(value) if value is not None else ():
            if isinstance(node, ast.Call):
                check(node)
        call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
        if call is not None and len(found) == already and root(call.func) in ours:
            found.append(f"{where}:{stmt.lineno} calls {ast.unparse(call.func)} for its effect at import")
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`: annotations only, never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def package_imports(source: str, path: Path, modules: frozenset[str]) -> Iterator[tuple[int, str]]:
    """(line, module) for each import of another module of the same top-level package, deferred ones too."""
    tree = ast.parse(source, filename=str(path))
    skipped = _type_checking_nodes(tree)
    own = module_name(path)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, path)
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.split(".")[0] == own.split(".")[0] and target != own:
                yield node.lineno, target


def import_cycles(sources: dict[Path, str], modules: frozenset[str]) -> list[str]:
    """Each import cycle among one package's modules, as `a -> b (line n); b -> a (line m)`.

    An import inside a function is counted: deferring an import hides a cycle, it does not remove it.
    Imports under `if TYPE_CHECKING:` are not (they never run).
    """
    graph: dict[str, dict[str, int]] = {}
    for path, source in sources.items():
        edges = graph.setdefault(module_name(path), {})
        for line, target in package_imports(source, path, modules):
            edges.setdefault(target, line)
    cycles, seen = [], set()
    for start in sorted(graph):
        cycle = _shortest_cycle(graph, start)
        if cycle and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            hops = zip(cycle, [*cycle[1:], cycle[0]], strict=True)
            cycles.append("; ".join(f"{a} -> {b} (line {graph[a][b]})" for a, b in hops))
    return cycles


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str) -> list[str] | None:
    parents: dict[str, str] = {}
    queue = [start]
    for node in queue:
        for target in sorted(graph.get(node, {})):
            if target == start:
                cycle = [node]
                while cycle[-1] != start:
                    cycle.append(parents[cycle[-1]])
                return cycle[::-1]
            if target not in parents:
                parents[target] = node
                queue.append(target)
    return None


def too_long(source: str, path: Path) -> str | None:
    where = path.relative_to(ROOT)
    lines = len(source.splitlines())
    if where.parts[0] in NOT_WALKED or lines <= MAX_LINES:
        return None
    return f"{where}: {lines} lines (over {MAX_LINES})"


def walked() -> dict[Path, str]:
    """The code the restructuring's rules hold for: everything but migrations/ and tests/."""
    return {
        path: path.read_text(encoding="utf-8")
        for path in source_files()
        if path.relative_to(ROOT).parts[0] not in NOT_WALKED
    }


def test_no_import_cycle_inside_a_package():
    modules, sources = tree_modules(), walked()
    by_package: dict[str, dict[Path, str]] = {}
    for path, source in sources.items():
        top = path.relative_to(ROOT).parts[0]
        if (ROOT / top / "__init__.py").is_file():
            by_package.setdefault(top, {})[path] = source
    assert {"app", "incidents", "playbooks", "notifiers"} <= set(by_package), sorted(by_package)
    cycles = [cycle for package in by_package.values() for cycle in import_cycles(package, modules)]
    assert cycles == [], "\n".join(cycles)


def test_no_module_takes_another_modules_private_names():
    modules, sources = tree_modules(), walked()
    assert "incidents.models" in modules and any(p.parts[-2] == "bench" for p in sources)
    found = [v for path, source in sources.items() for v in private_uses(source, path, modules)]
    assert found == [], "\n".join(found)


def test_nothing_registers_at_import_time_outside_the_wiring_module():
    modules, sources = tree_modules(), walked()
    found = [v for path, source in sources.items() for v in registrations(source, path, modules)]
    assert found == [], "\n".join(found)


def test_no_module_is_over_600_lines_outside_migrations_and_tests():
    sources = walked()
    assert any(p.parts[-2] == "bench" for p in sources)
    found = [v for path, source in sources.items() if (v := too_long(source, path))]
    assert found == [], "\n".join(found)


# A small tree for the rules' own tests: a package with a subpackage, a private module, and bench scripts.
FAKE_MODULES = frozenset({
    "incidents", "incidents.service", "incidents.jobs", "incidents.receipts", "incidents.enums",
    "incidents.stix", "incidents.stix.mapping", "incidents.stix.export", "incidents.stix._shared",
    "app", "app.wiring", "app.api", "app.api.reports", "bench.live", "bench._common",
})  # fmt: skip


def _at(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


@pytest.mark.parametrize(
    "sources",
    [
        {"incidents.jobs": "from incidents import service", "incidents.service": "from incidents.jobs import KINDS"},
        {"incidents.jobs": "from . import service", "incidents.service": "from . import receipts",
         "incidents.receipts": "from .jobs import enqueue"},
        {"incidents.jobs": "def f():\n    from incidents.service import x",
         "incidents.service": "import incidents.jobs"},
        {"incidents.stix.mapping": "from . import export", "incidents.stix.export": "from ..stix import mapping"},
        {"incidents.stix.mapping": "from incidents.stix.export import a",
         "incidents.stix.export": "from incidents.stix.mapping import b"},
    ],
)  # fmt: skip
def test_the_cycle_walk_catches_a_cycle_inside_a_package(sources):
    assert import_cycles({_at(m): s for m, s in sources.items()}, FAKE_MODULES)


@pytest.mark.parametrize(
    "sources",
    [
        {"incidents.jobs": "from incidents import service", "incidents.service": "from incidents import enums"},
        {"incidents.jobs": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from incidents import service",
         "incidents.service": "from incidents import jobs"},
        {"incidents.stix.mapping": "from incidents import service", "incidents.service": "from app import wiring"},
        {"incidents.service": "import incidents.service\nfrom . import enums", "incidents.enums": "import enum"},
    ],
)  # fmt: skip
def test_the_cycle_walk_allows_one_way_imports(sources):
    assert import_cycles({_at(m): s for m, s in sources.items()}, FAKE_MODULES) == []


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from incidents.service import _take_feed_lock", "incidents.stix.mapping"),
        ("from incidents.service import x, _file as file", "app.wiring"),
        ("from ..service import _file", "incidents.stix.mapping"),
        ("from . import _private_helper", "incidents.jobs"),
        ("from incidents import service\nservice._file(1)", "incidents.jobs"),
        ("import incidents.service\nincidents.service._take_feed_lock()", "app.wiring"),
        ("from incidents import service as s\nx = s._CONFIG", "app.wiring"),
        ("from incidents import service\nservice._CONFIG = {}", "app.wiring"),
        ("from incidents import service\ngetattr(service, '_file')()", "app.wiring"),
        ("from incidents.stix import _shared", "incidents.service"),
        ("from incidents.stix._shared import helper", "app.wiring"),
        ("from _common import _secret", "bench.live"),
        ("import importlib\nimportlib.import_module('incidents.stix._shared')", "app.api.reports"),
    ],
)
def test_the_private_walk_catches_another_modules_private_name(source, module):
    assert private_uses(source, _at(module), FAKE_MODULES)


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from incidents.service import take_feed_lock", "incidents.stix.mapping"),
        ("from incidents.stix import _shared", "incidents.stix.mapping"),
        ("from ._shared import helper", "incidents.stix.export"),
        ("from _common import percentile as _percentile", "bench.live"),
        ("import os\nos._exit(0)\nimport sys\nsys._getframe()", "app.wiring"),
        ("from incidents import service\nservice.__name__", "app.wiring"),
        ("class A:\n    def _x(self):\n        return self._y", "incidents.service"),
        ("from incidents.enums import Status\nStatus._member_map_", "app.wiring"),
        ("from sqlalchemy.orm import _private_thing", "incidents.service"),
    ],
)
def test_the_private_walk_allows_public_names_and_a_folders_own_private_module(source, module):
    assert private_uses(source, _at(module), FAKE_MODULES) == []


@pytest.mark.parametrize(
    "source",
    [
        "from incidents import service\nservice.EVENT_LISTENERS.append(on_events)",
        "from incidents import service\nif on_events not in service.EVENT_LISTENERS:\n"
        "    service.EVENT_LISTENERS.append(on_events)",
        "from incidents.jobs import KINDS\nKINDS.update({'receipt.webhook': send})",
        "from incidents import jobs\njobs.KINDS['receipt.webhook'] = send",
        "from incidents import jobs\njobs.KINDS |= {'x': send}",
        "from app.api import reports\nreports.CONFIG = {}",
        "from . import jobs\njobs.CONFIG.x = 1",
        "from sqlalchemy import event\nevent.listen(Engine, 'connect', on_connect)",
        "from sqlalchemy import event\n@event.listens_for(Engine, 'connect')\ndef on_connect(c, r):\n    pass",
        "from sqlalchemy.event import listens_for\n@listens_for(Engine, 'connect')\ndef f(c, r):\n    pass",
        "import atexit\natexit.register(close)",
        "from notifiers import registry\nregistry.register('sms', Sms)",
        "from blinker import signal\nsignal('x').connect(receive)",
        "from flask import Blueprint\nbp = Blueprint('r', __name__)\n@bp.record_once\ndef _c(state):\n    pass",
        "from app.api import bp\nbp.record(configure)",
        "from incidents import service\ntry:\n    service.HOOKS.append(f)\nexcept ImportError:\n    pass",
        "from incidents import service\nclass A:\n    service.HOOKS.append(1)",
        "from incidents import events\nevents.at_commit('ucsc.pending_audit', link_pending)",
        "from incidents import jobs\njobs.job_kind('audit.checkpoint', max_attempts=3)(checkpoint_job)",
        "from incidents import jobs\n@jobs.job_kind('audit.checkpoint')\ndef checkpoint_job(ctx, job):\n    pass",
        "from incidents.jobs import job_kind\n@job_kind('x')\ndef run(ctx, job):\n    pass",
        "from app.api import reports\nreports.install_hooks()",
    ],
)
def test_the_registration_walk_catches_wiring_by_import(source):
    assert registrations(source, _at("incidents.receipts"), FAKE_MODULES)


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from flask import Blueprint\nbp = Blueprint('r', __name__)\n@bp.route('/x')\ndef x():\n    pass",
         "app.api.reports"),
        ("from flask import Blueprint\nbp = Blueprint('r', __name__)\nbp.add_url_rule('/x', view_func=x)",
         "app.api.reports"),
        ("KINDS = {}\nKINDS['x'] = send\nLISTENERS = []\nLISTENERS.append(f)", "incidents.jobs"),
        ("from incidents import service\ndef install(app):\n    service.EVENT_LISTENERS.append(f)",
         "incidents.jobs"),
        ("from incidents import service\nservice.EVENT_LISTENERS.append(f)", "app.wiring"),
        ("import os\nos.environ.setdefault('X', '1')\nimport sys\nsys.path.insert(0, 'bench')", "bench.live"),
        ("from incidents import service\nif __name__ == '__main__':\n    service.HOOKS.append(main)", "bench.live"),
        ("from incidents.enums import Status\nLABELS = {s: s.value for s in Status}", "incidents.jobs"),
        ("from incidents import jobs\nKIND = jobs.kind_name('x')\nimport logging\nlogging.basicConfig()",
         "incidents.jobs"),
        ("from app.api.reports import roles\n@roles('admin')\ndef view():\n    pass", "app.api.reports"),
        ("from sqlalchemy import event\ndef install(engine):\n    event.listen(engine, 'connect', f)",
         "incidents.jobs"),
    ],
)  # fmt: skip
def test_the_registration_walk_allows_a_modules_own_objects_and_the_wiring_module(source, module):
    assert registrations(source, _at(module), FAKE_MODULES) == []


@pytest.mark.parametrize(
    ("lines", "where", "caught"),
    [
        (601, "incidents/service.py", True),
        (601, "bench/live.py", True),
        (601, "wsgi.py", True),
        (600, "incidents/service.py", False),
        (900, "migrations/versions/0001_initial.py", False),
        (900, "tests/test_web.py", False),
    ],
)
def test_the_size_walk_catches_a_module_over_600_lines_outside_migrations_and_tests(lines, where, caught):
    assert bool(too_long("x = 1\n" * lines, ROOT / where)) is caught
