"""Incidents, comments and participants as clients send them: filing, changes, transitions, class."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from incidents.enums import (
    TLP,
    Category,
    DetectionMethod,
    IncidentClass,
    NotifiedParty,
    ParticipantRole,
    Priority,
    SeriousCondition,
    Status,
)
from incidents.schemas.base import DEFAULT_LIMITS, Email, Phone, Strict, Text300, limits_of, utc_representable
from incidents.schemas.observables import ObservableIn

# A detection time this far ahead of the server's clock is a client error, not clock skew.
MAX_CLOCK_SKEW = timedelta(minutes=5)


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


# Before networked computers there was nothing to detect, and STIX timestamps (stix2 writes them with
# strftime, which drops the zeros of a year before 1000) could not carry it.
DETECTED_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)


def _check_detected_at(value: datetime | None) -> datetime | None:
    if utc_representable(value) is not None and value - datetime.now(UTC) > MAX_CLOCK_SKEW:
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
        if value is not None and len(value) > limits_of(info).description:
            raise ValueError(f"at most {limits_of(info).description} characters")
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
        if len(value) > limits_of(info).title:
            raise ValueError(f"at most {limits_of(info).title} characters")
        return value

    @field_validator("observables")
    @classmethod
    def _observable_limit(cls, value: list[ObservableIn], info: ValidationInfo) -> list[ObservableIn]:
        if len(value) > limits_of(info).observables:
            raise ValueError(f"at most {limits_of(info).observables} observables")
        return value


class IncidentBatchCreate(Strict):
    """Up to 500 incidents filed together: all are accepted or none."""

    incidents: list[IncidentCreate] = Field(min_length=1, json_schema_extra={"maxItems": DEFAULT_LIMITS.bulk})

    @field_validator("incidents")
    @classmethod
    def _bulk_limit(cls, value: list[IncidentCreate], info: ValidationInfo) -> list[IncidentCreate]:
        if len(value) > limits_of(info).bulk:
            raise ValueError(f"at most {limits_of(info).bulk} incidents per request")
        return value


class IncidentUpdate(_IncidentFields):
    """Fields an operator may change; status and class move only through their own endpoints."""

    title: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, json_schema_extra={"maxLength": DEFAULT_LIMITS.title}
    )
    assignee: Annotated[str, Field(min_length=1, max_length=150)] | None = Field(
        default=None, description="The owner's username; null clears it. Needs assign_incident (operators, admins)."
    )

    @field_validator("title")
    @classmethod
    def _title_limit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and len(value) > limits_of(info).title:
            raise ValueError(f"at most {limits_of(info).title} characters")
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
        if len(value) > limits_of(info).comment:
            raise ValueError(f"at most {limits_of(info).comment} characters")
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
        if value is not None and len(value) > limits_of(info).comment:
            raise ValueError(f"at most {limits_of(info).comment} characters")
        return value
