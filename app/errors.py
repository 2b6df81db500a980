"""One place that turns errors into application/problem+json (RFC 9457) for the API."""

import logging
import math
from typing import Any

from flask import Flask, Response, g, json, request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from incidents.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    TransitionNotAllowed,
    ValidationFailed,
)

log = logging.getLogger("ucsc.errors")

STATUS_OF: list[tuple[type[DomainError], int]] = [
    (TransitionNotAllowed, 409),
    (Conflict, 409),
    (ValidationFailed, 422),
    (IdempotencyMismatch, 422),
    (NotFound, 404),
    (Forbidden, 403),
]


class ApiError(Exception):
    """An HTTP answer the edge decides (auth, rate limit, media type), with headers if needed."""

    def __init__(self, status: int, title: str, detail: str, *, errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.headers = headers or {}


def problem(status: int, title: str, detail: str, *, errors: list[FieldError] | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:  # fmt: skip
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [{"field": e.field, "message": e.message} for e in errors or []],
        **extra,
    }
    if getattr(g, "request_id", None):
        body["request_id"] = g.request_id
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _domain(exc: DomainError) -> Response:
    status = next(code for cls, code in STATUS_OF if isinstance(exc, cls))
    return problem(status, exc.title, exc.detail, errors=exc.errors, **exc.extra)


def _api(exc: ApiError) -> Response:
    return problem(exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers)


def _http(exc: HTTPException) -> Response:
    code = exc.code or 500
    errors = []
    if code == 413:
        limit = request.max_content_length
        errors = [FieldError("body", f"larger than the limit of {limit} bytes")]
    response = problem(code, exc.name, exc.description or exc.name, errors=errors)
    if code == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response


def _database_unavailable(exc: Exception) -> Response:
    # A locked SQLite file, a lost PostgreSQL connection or an exhausted pool: try again shortly.
    log.warning("database unavailable: %s", exc, extra={"request_id": getattr(g, "request_id", None)})
    return problem(503, "Service Unavailable", "the database is busy or unreachable; retry shortly",
                   headers={"Retry-After": "1"})  # fmt: skip


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http(exc)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return _database_unavailable(exc)
    log.exception("unhandled error", extra={"request_id": getattr(g, "request_id", None)})
    return problem(500, "Internal Server Error", "an unexpected error occurred; it has been logged")


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def init_app(app: Flask) -> None:
    app.register_error_handler(DomainError, _domain)
    app.register_error_handler(ApiError, _api)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
