"""Request and response schemas, named by direction; they validate at the edge and generate OpenAPI."""

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from incidents import strict_json
from incidents.base import MAX_ID
from incidents.enums import (
    TLP,
    Category,
    DetectionMethod,
    IncidentClass,
    NotifiedParty,
    ObservableType,
    ParticipantRole,
    Priority,
    Role,
    SeriousCondition,
    Status,
)
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
# A detection time this far ahead of the server's clock is a client error, not clock skew.
MAX_CLOCK_SKEW = timedelta(minutes=5)

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?$")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_HASH_LENGTHS = {"MD5": 32, "SHA-1": 40, "SHA-256": 64, "SHA-512": 128}

Text300 = Annotated[str, Field(max_length=300)]
Phone = Annotated[str, Field(max_length=64)]
Email = Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


def _limits(info: ValidationInfo) -> Limits:
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


class ObservableIn(Strict):
    """An observable: its STIX cyber-observable type and value (`file` carries hashes)."""

    type: ObservableType
    value: str = Field(min_length=1, max_length=2048)
    hashes: dict[str, str] | None = Field(default=None, description="For `file`: MD5, SHA-1, SHA-256, SHA-512.")

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        return normalise_value(kind, value) if kind else value

    @field_validator("hashes")
    @classmethod
    def _check_hashes(cls, hashes: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        return normalise_hashes(info.data.get("type"), hashes)

    @model_validator(mode="after")
    def _file_has_hash(self) -> "ObservableIn":
        if self.type is ObservableType.FILE and not self.hashes:
            raise ValueError("a file observable needs at least one hash")
        return self


def normalise_value(kind: ObservableType, value: str) -> str:
    """Check an observable's value for its type and return it in canonical form."""
    match kind:
        case ObservableType.IPV4 | ObservableType.IPV6:
            try:
                net = ipaddress.ip_network(value, strict=False) if "/" in value else ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"not an IP address: {value!r}") from None
            if net.version != (4 if kind is ObservableType.IPV4 else 6):
                raise ValueError(f"{value!r} is not an {kind.value} value")
            return str(net)
        case ObservableType.DOMAIN:
            domain = value.lower().rstrip(".")
            try:
                domain = domain.encode("idna").decode("ascii")
            except UnicodeError:
                raise ValueError(f"not a domain name: {value!r}") from None
            if not _DOMAIN_RE.match(domain) or "." not in domain:
                raise ValueError(f"not a domain name: {value!r}")
            return domain
        case ObservableType.URL:
            try:
                parts = urlsplit(value)
                host = parts.hostname
            except ValueError:
                raise ValueError(f"not a URL: {value!r}") from None
            if parts.scheme.lower() not in {"http", "https", "ftp", "ftps", "ws", "wss"} or not host:
                raise ValueError("a URL needs a scheme (http, https, ftp, ws) and a host")
            return value
        case ObservableType.EMAIL:
            if not _EMAIL_RE.match(value):
                raise ValueError(f"not an e-mail address: {value!r}")
            local, _, host = value.rpartition("@")
            return f"{local}@{host.lower()}"
    return value


def normalise_hashes(kind: ObservableType | None, hashes: dict[str, str] | None) -> dict[str, str] | None:
    """Check a file's hashes and spell their algorithms as STIX does (SHA-256)."""
    if not hashes:
        return None
    if kind is not ObservableType.FILE:
        raise ValueError("hashes are only allowed on file observables")
    clean: dict[str, str] = {}
    for algo, digest in hashes.items():
        name = algo.upper().replace("_", "-")
        name = {"SHA1": "SHA-1", "SHA256": "SHA-256", "SHA512": "SHA-512"}.get(name, name)
        if name not in _HASH_LENGTHS:
            raise ValueError(f"unknown hash algorithm {algo!r}; use MD5, SHA-1, SHA-256 or SHA-512")
        if len(digest) != _HASH_LENGTHS[name] or not re.fullmatch(r"[0-9a-fA-F]+", digest):
            raise ValueError(f"{name} must be {_HASH_LENGTHS[name]} hexadecimal characters")
        clean[name] = digest.lower()
    return clean


class ReporterIn(Strict):
    """Form 03 box 1: the reporting person or organisation."""

    name: Text300 | None = None
    organisation: Text300 | None = None
    address: Annotated[str, Field(max_length=500)] | None = None
    phone: Phone | None = None
    email: Email | None = None


class ContactIn(Strict):
    """Form 03 box 2: the person to contact about the incident."""

    name: Text300 | None = None
    position: Text300 | None = None
    phone: Phone | None = None
    email: Email | None = None


class ParticipantIn(Strict):
    """Name exactly one of `user` (a username) or `organisation` (an organisation code)."""

    user: Annotated[str, Field(min_length=1, max_length=150)] | None = None
    organisation: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    role: ParticipantRole = ParticipantRole.MEMBER

    @model_validator(mode="after")
    def _one_of(self) -> "ParticipantIn":
        if (self.user is None) == (self.organisation is None):
            raise ValueError("give exactly one of user or organisation")
        return self


def _utc_representable(value: datetime | None) -> datetime | None:
    """Refuse a timestamp that UTC cannot hold (0001-01-01T00:00+05:00 falls before year 1)."""
    if value is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("timestamp out of range") from None
    return value


# Before networked computers there was nothing to detect, and STIX timestamps (stix2 writes them with
# strftime, which drops the zeros of a year before 1000) could not carry it.
DETECTED_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)


def _check_detected_at(value: datetime | None) -> datetime | None:
    if _utc_representable(value) is not None and value - datetime.now(UTC) > MAX_CLOCK_SKEW:
        raise ValueError("detected_at lies in the future")
    if value is not None and value < DETECTED_FLOOR:
        raise ValueError("detected_at lies before 1970")
    return value


class _IncidentFields(Strict):
    description: str | None = Field(default=None, json_schema_extra={"maxLength": DEFAULT_LIMITS.description})
    category: Category | None = None
    priority: Priority | None = None
    tlp: TLP | None = None
    detected_at: AwareDatetime | None = None
    detection_method: DetectionMethod | None = None
    detection_detail: Annotated[str, Field(max_length=1000)] | None = None
    affected_system: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="A system code from the registry."
    )
    reporter: ReporterIn | None = None
    contact: ContactIn | None = None
    handled_at_report: bool | None = Field(default=None, description="Form 03: already handled when reported.")
    notified_parties: list[NotifiedParty] | None = None
    system_os: Text300 | None = None
    system_services: Annotated[str, Field(max_length=5000)] | None = None
    security_measures: Annotated[str, Field(max_length=5000)] | None = None
    support_requested: Annotated[str, Field(max_length=5000)] | None = None
    beyond_capacity: bool | None = Field(default=None, description="The owner cannot handle it alone.")
    exercise: bool | None = Field(default=None, description="A drill, not a real incident.")

    @field_validator("description")
    @classmethod
    def _description_limit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and len(value) > _limits(info).description:
            raise ValueError(f"at most {_limits(info).description} characters")
        return value

    @field_validator("detected_at")
    @classmethod
    def _not_future(cls, value: datetime | None) -> datetime | None:
        return _check_detected_at(value)


class IncidentCreate(_IncidentFields):
    """A new incident as a SOC operator or a SIEM files it."""

    title: str = Field(min_length=1, json_schema_extra={"maxLength": DEFAULT_LIMITS.title})
    category: Category
    priority: Priority = Priority.P3
    tlp: TLP = TLP.AMBER
    exercise: bool = False
    observables: list[ObservableIn] = Field(
        default_factory=list, json_schema_extra={"maxItems": DEFAULT_LIMITS.observables}
    )
    participants: list[ParticipantIn] = Field(default_factory=list, max_length=100)
    dedup_key: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Repeats with the key of an open incident become occurrences of it."
    )

    @field_validator("title")
    @classmethod
    def _title_limit(cls, value: str, info: ValidationInfo) -> str:
        if len(value) > _limits(info).title:
            raise ValueError(f"at most {_limits(info).title} characters")
        return value

    @field_validator("observables")
    @classmethod
    def _observable_limit(cls, value: list[ObservableIn], info: ValidationInfo) -> list[ObservableIn]:
        if len(value) > _limits(info).observables:
            raise ValueError(f"at most {_limits(info).observables} observables")
        return value


class IncidentBatchCreate(Strict):
    """Up to 500 incidents filed together: all are accepted or none."""

    incidents: list[IncidentCreate] = Field(min_length=1, json_schema_extra={"maxItems": DEFAULT_LIMITS.bulk})

    @field_validator("incidents")
    @classmethod
    def _bulk_limit(cls, value: list[IncidentCreate], info: ValidationInfo) -> list[IncidentCreate]:
        if len(value) > _limits(info).bulk:
            raise ValueError(f"at most {_limits(info).bulk} incidents per request")
        return value


class IncidentUpdate(_IncidentFields):
    """Fields an operator may change; status and class move only through their own endpoints."""

    title: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, json_schema_extra={"maxLength": DEFAULT_LIMITS.title}
    )

    @field_validator("title")
    @classmethod
    def _title_limit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and len(value) > _limits(info).title:
            raise ValueError(f"at most {_limits(info).title} characters")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "IncidentUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        required = {"title", "category", "priority", "tlp", "detected_at", "exercise"}
        for name in required & self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class TransitionIn(Strict):
    """Move an incident to another status of the procedure."""

    to: Status
    note: Annotated[str, Field(max_length=5000)] | None = None
    resolution: Annotated[str, Field(min_length=1, max_length=50_000)] | None = Field(
        default=None, description="The resolution summary; required to close."
    )
    merged_into: Annotated[str, Field(min_length=1, max_length=32)] | None = Field(
        default=None, description="Reference or id of the incident this one duplicates; required to merge."
    )


class ClassificationIn(Strict):
    """Propose the serious class (operators) or decide the class (committee, admin)."""

    action: Literal["propose", "decide"]
    incident_class: IncidentClass = Field(default=IncidentClass.SERIOUS, alias="class")
    conditions: list[SeriousCondition] | None = Field(
        default=None, description="Decision 05 Art. 9 (a)–(đ) impacts that hold."
    )
    beyond_capacity: bool | None = None
    note: Annotated[str, Field(max_length=5000)] | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


class CommentCreate(Strict):
    body: str = Field(min_length=1, json_schema_extra={"maxLength": DEFAULT_LIMITS.comment})
    tlp: TLP | None = Field(default=None, description="Defaults to the incident's TLP.")

    @field_validator("body")
    @classmethod
    def _body_limit(cls, value: str, info: ValidationInfo) -> str:
        if len(value) > _limits(info).comment:
            raise ValueError(f"at most {_limits(info).comment} characters")
        return value


class CommentUpdate(Strict):
    body: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, json_schema_extra={"maxLength": DEFAULT_LIMITS.comment}
    )
    tlp: TLP | None = None

    @model_validator(mode="after")
    def _something(self) -> "CommentUpdate":
        if self.body is None and self.tlp is None:
            raise ValueError("give body or tlp")
        return self

    @field_validator("body")
    @classmethod
    def _body_limit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and len(value) > _limits(info).comment:
            raise ValueError(f"at most {_limits(info).comment} characters")
        return value


class ObservablesAdd(Strict):
    observables: list[ObservableIn] = Field(min_length=1, json_schema_extra={"maxItems": DEFAULT_LIMITS.observables})


class SystemCreate(Strict):
    """An information system for the asset registry."""

    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=300)
    owner: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="Organisation code.")
    operator: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="Organisation code.")
    security_level: int = Field(ge=1, le=5)
    national_important: bool = False
    domains: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(default_factory=list, max_length=200)
    public_ips: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=500)
    security_provider: Text300 | None = None
    connectivity_provider: Text300 | None = None
    os: Text300 | None = None
    services: Annotated[str, Field(max_length=5000)] | None = None

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [normalise_value(ObservableType.DOMAIN, v) for v in value]

    @field_validator("public_ips")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        out = []
        for v in value:
            try:
                out.append(str(ipaddress.ip_address(v)))
            except ValueError:
                raise ValueError(f"not an IP address: {v!r}") from None
        return out


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=150)
    role: Role


# Response schemas: documentation of what serialisers in app/api write (a test keeps them in step).


class ObservableRead(BaseModel):
    id: int
    type: ObservableType
    value: str
    hashes: dict[str, str] | None


class SystemRead(BaseModel):
    code: str
    name: str
    owner: str | None
    operator: str | None
    security_level: int
    national_important: bool
    domains: list[str]
    public_ips: list[str]
    security_provider: str | None
    connectivity_provider: str | None
    os: str | None
    services: str | None


class ParticipantRead(BaseModel):
    id: int
    user: str | None
    organisation: str | None
    role: ParticipantRole
    added_at: datetime


class ClassificationRead(BaseModel):
    """The class, the Art. 9 checklist as the system sees it, and who proposed and decided."""

    incident_class: IncidentClass = Field(alias="class")
    level_condition: bool = Field(description="Affected system at level 4–5 or on the national important list.")
    conditions: list[SeriousCondition]
    impact_condition: bool
    beyond_capacity: bool
    all_conditions_hold: bool
    proposed_by: str | None
    proposed_at: datetime | None
    proposal_note: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None


class IncidentRead(BaseModel):
    id: int
    ref: str
    title: str
    description: str
    category: Category
    priority: Priority
    status: Status
    incident_class: IncidentClass = Field(alias="class")
    tlp: TLP
    exercise: bool
    detected_at: datetime
    detection_method: DetectionMethod | None
    detection_detail: str | None
    affected_system: SystemRead | None
    reporter: ReporterIn
    contact: ContactIn
    handled_at_report: bool | None
    notified_parties: list[NotifiedParty]
    system_os: str | None
    system_services: str | None
    security_measures: str | None
    support_requested: str | None
    beyond_capacity: bool
    classification: ClassificationRead
    resolution: str | None
    merged_into: str | None
    dedup_key: str | None
    occurrence_count: int
    observables: list[ObservableRead]
    participants: list[ParticipantRead]
    allowed_transitions: list[Status]
    created_by: str
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    contained_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None


class IncidentCreated(BaseModel):
    id: int
    ref: str
    status: Status


class IncidentPage(BaseModel):
    items: list[IncidentRead]
    next_cursor: str | None


class EventRead(BaseModel):
    id: int
    kind: str
    actor: str
    at: datetime
    note: str | None
    data: dict[str, Any]


class CommentRead(BaseModel):
    id: int
    author: str
    body: str
    tlp: TLP
    created_at: datetime
    updated_at: datetime
    edits: list[dict[str, Any]]


class ProblemRead(BaseModel):
    """RFC 9457 problem details with every field error."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)


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


SORTS = ("-created", "created", "-updated", "updated")


class IncidentQuery(Strict):
    """Filters of the incident list; lists accept repeated or comma-separated values."""

    status: list[Status] | None = None
    category: list[Category] | None = None
    priority: list[Priority] | None = None
    tlp: list[TLP] | None = None
    incident_class: IncidentClass | None = Field(default=None, alias="class")
    exercise: bool | None = None
    updated_since: AwareDatetime | None = None
    q: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    sort: Literal["-created", "created", "-updated", "updated"] = "-created"
    limit: int = Field(default=50, ge=1, le=500)
    cursor: Annotated[str, Field(max_length=500)] | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    @field_validator("updated_since")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        return _utc_representable(value)

    @field_validator("tlp", mode="before")
    @classmethod
    def _tlp_spelling(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v.replace("_", "+") if isinstance(v, str) else v for v in value]
        return value

    def filter_key(self) -> str:
        """A digest of every filter, so a cursor cannot be replayed against other filters."""
        data = self.model_dump(mode="json", exclude={"cursor", "limit"}, by_alias=True)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class PageQuery(Strict):
    """Paging of a timeline or comment list, oldest first."""

    cursor: Annotated[str, Field(max_length=100)] | None = None
    limit: int = Field(default=50, ge=1, le=500)

    def after(self) -> int:
        """The id the cursor points past (cursors are opaque to clients)."""
        if not self.cursor:
            return 0
        try:
            kind, _, value = (
                base64.urlsafe_b64decode(self.cursor + "=" * (-len(self.cursor) % 4)).decode().partition(":")
            )
            if kind != "after" or not 0 <= int(value) <= MAX_ID:
                raise ValueError(kind)
            return int(value)
        except ValueError:
            raise ValidationFailed(
                "invalid cursor", errors=[FieldError("cursor", "not a cursor of this list")]
            ) from None

    @staticmethod
    def next_cursor(items: list[Any], limit: int) -> str | None:
        if len(items) < limit:
            return None
        return base64.urlsafe_b64encode(f"after:{items[-1].id}".encode()).decode().rstrip("=")


class AuditQuery(PageQuery):
    """An admin's export of the audit trail: rows with since <= at < until, in chain order."""

    since: AwareDatetime
    until: AwareDatetime
    limit: int = Field(default=500, ge=1, le=5000)

    @field_validator("since", "until")
    @classmethod
    def _in_range(cls, value: datetime, info: ValidationInfo) -> datetime:
        _utc_representable(value)
        since = info.data.get("since")
        if info.field_name == "until" and since is not None and value <= since:
            raise ValueError("must be later than since")
        return value

    def next_cursor_of(self, rows: list[dict[str, Any]]) -> str | None:
        """The cursor past the last row of a full page."""
        if len(rows) < self.limit:
            return None
        return base64.urlsafe_b64encode(f"after:{rows[-1]['id']}".encode()).decode().rstrip("=")


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
