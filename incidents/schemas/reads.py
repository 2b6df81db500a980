"""Response schemas: documentation of what serialisers in app/api write (a test keeps them in step)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from incidents.enums import (
    TLP,
    Category,
    DetectionMethod,
    IncidentClass,
    NotifiedParty,
    ObservableType,
    ParticipantRole,
    Priority,
    SeriousCondition,
    Status,
)
from incidents.schemas.incidents import ContactIn, ReporterIn


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
    assignee: str | None
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
