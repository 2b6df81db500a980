"""What every schema shares: strict input models, size limits, and parsing into field errors."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from incidents import strict_json
from incidents.errors import FieldError, ValidationFailed

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Limits:
    """Configurable size limits (UCSC_LIMIT_*), passed to validation as its context."""

    title: int = 300
    description: int = 50_000
    observables: int = 1_000
    comment: int = 50_000
    bulk: int = 500


DEFAULT_LIMITS = Limits()


Text300 = Annotated[str, Field(max_length=300)]


Phone = Annotated[str, Field(max_length=64)]


Email = Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


def limits_of(info: ValidationInfo) -> Limits:
    return (info.context or {}).get("limits", DEFAULT_LIMITS)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text and JSONB cannot hold NUL and no field needs it: refused alike on every backend.
        if _has_nul(value):
            raise ValueError("must not contain the NUL character")
        return value


def utc_representable(value: datetime | None) -> datetime | None:
    """Refuse a timestamp that UTC cannot hold (0001-01-01T00:00+05:00 falls before year 1)."""
    if value is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("timestamp out of range") from None
    return value


def field_path(loc: tuple[Any, ...]) -> str:
    """Render a pydantic location as `observables[2].value`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def validation_failed(exc: ValidationError, prefix: str = "") -> ValidationFailed:
    """Turn every pydantic error into one FieldError list."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "union["))))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "timezone_aware":
            message = "timestamp must carry a zone offset (RFC 3339)"
        errors.append(FieldError(field=prefix + field_path(loc), message=message))
    return ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors)


def parse(schema: type[M], raw: bytes | str | dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> M:
    """Validate a request body (raw JSON or a decoded dict), raising ValidationFailed with every field error."""
    try:
        if isinstance(raw, dict):
            return schema.model_validate(raw, context={"limits": limits})
        strict_json.check(raw)
        return schema.model_validate_json(raw, context={"limits": limits})
    except ValidationError as exc:
        raise validation_failed(exc) from None


def parse_query(schema: type[M], args: dict[str, list[str]], list_fields: Iterable[str] = ()) -> M:
    """Validate query-string arguments; list fields take repeated or comma-separated values."""
    data: dict[str, Any] = {}
    for name, values in args.items():
        if name in list_fields:
            data[name] = [v for value in values for v in value.split(",") if v]
        else:
            data[name] = values[-1]
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc) from None
