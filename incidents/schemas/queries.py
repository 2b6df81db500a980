"""Query strings: the incident list's filters and the paging of timelines, comments and the audit trail."""

import base64
import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, ValidationInfo, field_validator

from incidents.base import MAX_ID
from incidents.enums import TLP, Category, IncidentClass, Priority, Status
from incidents.errors import FieldError, ValidationFailed
from incidents.schemas.base import Strict, utc_representable

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
        return utc_representable(value)

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
        utc_representable(value)
        since = info.data.get("since")
        if info.field_name == "until" and since is not None and value <= since:
            raise ValueError("must be later than since")
        return value

    def next_cursor_of(self, rows: list[dict[str, Any]]) -> str | None:
        """The cursor past the last row of a full page."""
        if len(rows) < self.limit:
            return None
        return base64.urlsafe_b64encode(f"after:{rows[-1]['id']}".encode()).decode().rstrip("=")
