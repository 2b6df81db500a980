"""Errors the incident domain raises; app/errors.py maps each to one HTTP answer."""

from dataclasses import dataclass


@dataclass
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    title = "Request refused"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = extra


class ValidationFailed(DomainError):
    title = "Invalid request"


class NotFound(DomainError):
    title = "Not found"


class Forbidden(DomainError):
    title = "Forbidden"


class Conflict(DomainError):
    title = "Conflict"


class TransitionNotAllowed(Conflict):
    title = "Transition not allowed"


class IdempotencyMismatch(DomainError):
    title = "Idempotency-Key reused with another request"
