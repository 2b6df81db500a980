"""The API's self-description: valid OpenAPI 3.1 covering every route, and a docs page with no outside URL."""

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from flask import Flask
from openapi_spec_validator import OpenAPIV31SpecValidator

from app import create_app

# Served by the blueprint but not API operations themselves.
SELF_DESCRIPTION = {"/api/v1/openapi.json", "/api/v1/docs"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """The description needs no database: the app is built on a file that is never opened."""
    path = tmp_path_factory.mktemp("openapi") / "unused.db"
    return create_app({"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "test", "TESTING": True})


@pytest.fixture(scope="module")
def spec(app: Flask) -> dict:
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def test_openapi_json_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1.")
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in OpenAPIV31SpecValidator(spec).iter_errors()
    ]
    assert errors == [], "\n".join(errors[:20])


def test_openapi_describes_every_api_route_and_nothing_else(app, spec):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and rule.rule not in SELF_DESCRIPTION:
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert documented == routes


def test_openapi_errors_are_problem_json_and_operations_need_a_bearer_token(spec):
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["security"] == [{"bearer": []}], (method, path)
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert list(answer["content"]) == ["application/problem+json"], (method, path, code)


class _References(HTMLParser):
    """Every URL a page makes the browser fetch or follow, and the text of its inline scripts and styles."""

    URL_ATTRIBUTES = frozenset({"src", "href", "action", "formaction", "poster", "data", "srcset", "manifest"})

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in self.URL_ATTRIBUTES and value:
                self.urls += [part.split()[0] for part in value.split(",")] if name == "srcset" else [value]
            elif name == "style" and value:
                self.inline.append(value)
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.inline.append(data)


_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")
_ABSOLUTE_IN_CODE = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}""", re.IGNORECASE)


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "") and not parts.netloc:
        return True
    return parts.scheme in ("http", "https") and parts.netloc == "localhost"


def test_api_docs_page_loads_nothing_from_outside(app):
    client = app.test_client()
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    refs = _References()
    refs.feed(page.get_data(as_text=True))

    outside = [u for u in refs.urls if not u.startswith("#") and not _is_local(u)]
    assert outside == []
    for code in refs.inline:
        assert _ABSOLUTE_IN_CODE.findall(code) == [], code[:300]

    # Every local asset the page loads is served, and stylesheets pull nothing from outside either.
    assets = [u for u in refs.urls if not u.startswith("#") and not u.startswith("data:")]
    assert any(Path(urlsplit(u).path).suffix == ".css" for u in assets), "the docs page has lost its stylesheet"
    for url in assets:
        target = urlsplit(urljoin("http://localhost/api/v1/docs", url)).path
        answer = client.get(target)
        assert answer.status_code == 200, url
        if target.endswith(".css"):
            css = answer.get_data(as_text=True)
            imported = [a or b for a, b in _CSS_URL.findall(css)]
            assert [u for u in imported if not _is_local(u)] == [], url
            assert _ABSOLUTE_IN_CODE.findall(css) == [], url
        answer.close()
