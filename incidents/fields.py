"""How an incident's schema fields map onto its columns, and what its search text is made of."""

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from incidents.models import Incident, Observable, System
from incidents.schemas.incidents import IncidentCreate, IncidentUpdate
from incidents.schemas.observables import ObservableIn
from incidents.text import fold

_SEARCH_FIELDS = ("ref", "title", "description", "dedup_key", "reporter_organisation", "reporter_name")


def search_text(incident: Incident, observables: Iterable[Observable | ObservableIn], system: System | None) -> str:
    return search_text_of({name: getattr(incident, name) for name in _SEARCH_FIELDS}, observables, system)


def search_text_of(
    values: dict[str, Any], observables: Iterable[Observable | ObservableIn], system: System | None
) -> str:
    parts = [values[name] or "" for name in _SEARCH_FIELDS]
    parts += [o.value for o in observables]
    if system is not None:
        parts += [system.code, system.name]
    return fold(" ".join(parts))


FORM_FIELDS = (
    "description", "detection_method", "detection_detail", "handled_at_report", "system_os",
    "system_services", "security_measures", "support_requested",
)  # fmt: skip


PERSON_FIELDS = {
    "reporter": ("name", "organisation", "address", "phone", "email"),
    "contact": ("name", "position", "phone", "email"),
}


def apply_fields(incident: Incident, data: IncidentCreate | IncidentUpdate, fields: set[str]) -> dict[str, Any]:
    """Copy the given schema fields onto the incident; return {field: [old, new]} for what changed."""
    changes: dict[str, Any] = {}

    def put(attr: str, value: Any) -> None:
        old = getattr(incident, attr)
        if old != value:
            changes[attr] = [jsonable(old), jsonable(value)]
            setattr(incident, attr, value)

    for name in fields:
        value = getattr(data, name)
        if name in PERSON_FIELDS:
            person = value.model_dump() if value is not None else {}
            for sub in PERSON_FIELDS[name]:
                put(f"{name}_{sub}", person.get(sub))
        elif name == "notified_parties":
            put(name, [p.value for p in value or []])
        elif name in ("title", "category", "priority", "tlp", "detected_at", "exercise", "beyond_capacity"):
            put(name, value if name != "beyond_capacity" else bool(value))
        elif name in FORM_FIELDS:
            put(name, value if name != "description" else (value or ""))
    return changes


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def unique_observables(observables: Sequence[ObservableIn]) -> list[ObservableIn]:
    seen: dict[tuple[str, str], ObservableIn] = {}
    for obs in observables:
        seen.setdefault((obs.type, obs.value), obs)
    return list(seen.values())
