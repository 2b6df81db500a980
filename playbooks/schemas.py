"""Request bodies of the directory and paging API (pydantic, validated at the edge)."""

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from incidents.base import MAX_ID
from incidents.schemas.base import Strict
from notifiers import registry

# A row id: positive and within BIGINT, so an impossible one is a field error, never a database overflow.
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
MAX_VERSION = 2**31 - 1  # playbook_versions.version is a 32-bit INTEGER: PostgreSQL refuses a larger parameter

Text300 = Annotated[str, Field(max_length=300)]
Note = Annotated[str, Field(max_length=2000)]
Channel = Literal[registry.NAMES]  # type: ignore[valid-type]


class ContactBody(Strict):
    organisation: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    title: Text300 | None = None
    phone: Annotated[str, Field(max_length=64)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    telegram_chat_id: Annotated[str, Field(max_length=64)] | None = None
    webhook_url: Annotated[str, Field(max_length=2000)] | None = None
    webhook_secret: Annotated[str, Field(max_length=128)] | None = None
    language: Literal["vi", "en"] | None = None
    channels: Annotated[list[Channel], Field(max_length=len(registry.NAMES))] | None = None
    roles: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=20)] | None = None
    user: Annotated[str, Field(max_length=150)] | None = None
    active: bool | None = None


class GroupBody(Strict):
    code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    name_vi: Annotated[str, Field(min_length=1, max_length=300)]
    name_en: Text300 | None = None
    organisation: Annotated[str, Field(max_length=64)] | None = None
    members: Annotated[list[RowId], Field(max_length=500, default_factory=list)]


class ScheduleBody(Strict):
    code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    name: Annotated[str, Field(min_length=1, max_length=300)]
    organisation: Annotated[str, Field(max_length=64)] | None = None
    group: Annotated[str, Field(max_length=64)] | None = None
    starts_at: AwareDatetime
    shift_hours: int = Field(default=168, ge=1, le=24 * 366)
    members: Annotated[list[RowId], Field(min_length=1, max_length=500)]


class OverrideBody(Strict):
    contact_id: int = Field(ge=1, le=MAX_ID)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    reason: Note | None = None


class AckBody(Strict):
    note: Note | None = None
    on_behalf_of: int | None = Field(default=None, ge=1, le=MAX_ID)


class SupportBody(Strict):
    note: Note | None = None


class TaskDoneBody(Strict):
    note: Note | None = None


class PageBody(Strict):
    contact: int | None = Field(default=None, ge=1, le=MAX_ID)
    group: Annotated[str, Field(max_length=64)] | None = None
    organisation: Annotated[str, Field(max_length=64)] | None = None
    role: Annotated[str, Field(max_length=64)] | None = None
    pick: Literal["default", "all", "on_call", "round_robin"] | None = None
    reason: Note | None = None
    requires_ack: bool = True


class DirectionRequestBody(Strict):
    question_vi: Annotated[str, Field(min_length=1, max_length=5000)]
    question_en: Annotated[str, Field(max_length=5000)] | None = None


class DirectiveBody(Strict):
    text: Annotated[str, Field(min_length=1, max_length=5000)]


class RunBody(Strict):
    playbook: Annotated[str, Field(min_length=1, max_length=100)]
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


class PlaybookEnable(Strict):
    enabled: bool
