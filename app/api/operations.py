"""The API blueprint and what its route modules share: `operation` adds a route with its OpenAPI description,
`body` and `limits` validate requests, and two checks run before every route."""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, current_app, request
from pydantic import BaseModel

from app.auth import current_actor
from app.errors import ApiError
from incidents.base import MAX_ID
from incidents.errors import FieldError, NotFound
from incidents.schemas.base import Limits, parse

M = TypeVar("M", bound=BaseModel)

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@dataclass
class Operation:
    """One documented operation: the schemas that validate it are the ones OpenAPI shows."""

    method: str
    rule: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", bp.url_prefix + self.rule)


OPERATIONS: list[Operation] = []


def operation(method: str, rule: str, summary: str, *, tag: str = "incidents", **kwargs: Any) -> Callable:
    """Register a view under `rule` and describe it for /api/v1/openapi.json."""

    def register(view: Callable) -> Callable:
        bp.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=[method])
        OPERATIONS.append(Operation(method.lower(), rule, summary, tag, **kwargs))
        return view

    return register


def limits() -> Limits:
    c = current_app.config
    return Limits(
        title=int(c["LIMIT_TITLE"]),
        description=int(c["LIMIT_DESCRIPTION"]),
        observables=int(c["LIMIT_OBSERVABLES"]),
        comment=int(c["LIMIT_COMMENT"]),
        bulk=int(c["LIMIT_BULK"]),
    )


def raw_json_body() -> bytes:
    """The request body, refused unless it is JSON."""
    if request.mimetype != "application/json":
        raise ApiError(415, "Unsupported Media Type", "send Content-Type: application/json",
                       errors=[FieldError("Content-Type", "must be application/json")])  # fmt: skip
    return request.get_data(cache=True)


def body(schema: type[M]) -> M:
    return parse(schema, raw_json_body(), limits())


@bp.before_request
def _caller_before_body() -> None:
    """Every write names a valid token before anything reads its body: an anonymous upload is never received."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        current_actor()


@bp.url_value_preprocessor
def _impossible_path_values(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """A NUL (PostgreSQL text cannot hold one) or an id beyond BIGINT names nothing: 404 before any query."""
    for value in (values or {}).values():
        if (isinstance(value, str) and "\x00" in value) or (isinstance(value, int) and value > MAX_ID):
            raise NotFound(f"nothing at {request.path!r}")
