"""What every format shares: the Alert that ingest files, field reading with error paths, observables, mapping."""

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from incidents.enums import Category, ObservableType
from incidents.errors import FieldError, ValidationFailed
from incidents.schemas.observables import ObservableIn

MAPPING_FILE = Path(__file__).parent.parent / "mapping.yaml"
FIRING, RESOLVED = "firing", "resolved"
TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?")
HASH_BY_LENGTH = {32: "MD5", 40: "SHA-1", 64: "SHA-256", 128: "SHA-512"}

CATEGORIES = frozenset(c.value for c in Category)


@dataclass
class Alert:
    """One alert as ingest needs it: the incident to file, and what only the sender knows."""

    incident: dict[str, Any]  # IncidentCreate fields
    idempotency_key: str | None = None
    attack_techniques: list[str] = field(default_factory=list)
    status: str = FIRING
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str | None:
        return self.incident.get("dedup_key")

    def digest(self) -> str:
        """A digest of what the sender said, so an idempotency key reused for another alert is caught."""
        body = json.dumps([self.incident, self.context, self.status], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()


@cache
def shipped_mapping() -> dict[str, Any]:
    """The mapping shipped in mapping.yaml: level/severity -> priority, groups/labels/tags -> category."""
    return yaml.safe_load(MAPPING_FILE.read_text(encoding="utf-8"))


def mapping_for(kind: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The shipped mapping of `kind`, each section replaced or extended by a source's own overrides."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in shipped_mapping().get(kind, {}).items()}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


class Fields:
    """Reads a payload's fields by dotted path and collects what is missing or malformed."""

    def __init__(self, payload: dict[str, Any], prefix: str = "") -> None:
        self.payload = payload
        self.prefix = prefix
        self.errors: list[FieldError] = []

    def get(self, path: str, default: Any = None) -> Any:
        value: Any = self.payload
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return value

    def text(self, path: str, *, required: bool = False) -> str | None:
        value = self.get(path)
        if value is None or value == "":
            if required:
                self.errors.append(FieldError(self.prefix + path, "required"))
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.errors.append(FieldError(self.prefix + path, "must be a string"))
            return None
        return str(value)

    def mapping(self, path: str) -> dict[str, Any]:
        value = self.get(path)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.errors.append(FieldError(self.prefix + path, "must be an object"))
            return {}
        return value

    def strings(self, path: str) -> list[str]:
        value = self.get(path)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            self.errors.append(FieldError(self.prefix + path, "must be a list of strings"))
            return []
        return [str(v) for v in value]

    def time(self, path: str, *, required: bool = False) -> datetime | None:
        raw = self.get(path)
        if raw is None or raw == "":
            if required:
                self.errors.append(FieldError(self.prefix + path, "required"))
            return None
        parsed = parse_time(raw)
        if parsed is None:
            self.errors.append(FieldError(self.prefix + path, "not a timestamp (RFC 3339, or epoch milliseconds)"))
        return parsed

    def check(self) -> None:
        if self.errors:
            raise ValidationFailed(f"{len(self.errors)} invalid field(s)", errors=self.errors)


def parse_time(raw: Any) -> datetime | None:
    """RFC 3339 (Wazuh's `+0000` offsets too), or epoch milliseconds as TheHive sends; aware UTC or None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        try:
            return datetime.fromtimestamp(raw / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(raw, str):
        return None
    text = raw.strip().replace("Z", "+00:00")
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)  # Wazuh: 2026-12-06T10:00:00.123+0000
    # Go writes up to nine fractional digits; Python reads six.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


def observable(kind: ObservableType, value: str, hashes: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The observable if its value is valid for its type; a sender's odd value ("any", "-") is left in context."""
    found = _checked_observable(kind, value, tuple(sorted(hashes.items())) if hashes else None)
    if found is None:
        return None
    return {**found, "hashes": dict(found["hashes"])} if "hashes" in found else dict(found)  # the caller's own


@lru_cache(maxsize=4096)
def _checked_observable(kind: ObservableType, value: str, hashes: tuple[tuple[str, str], ...] | None) -> Any:
    # A storm of alerts names the same agent and addresses again and again: each is checked once.
    try:
        obs = ObservableIn(type=kind, value=value, hashes=dict(hashes) if hashes else None)
    except ValueError:
        return None
    return obs.model_dump(mode="json", exclude_none=True)


def address(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, str) or not value:
        return None
    return observable(ObservableType.IPV6 if ":" in value else ObservableType.IPV4, value)


def url(value: Any) -> dict[str, Any] | None:
    return observable(ObservableType.URL, value) if isinstance(value, str) and value else None


def domain(value: Any) -> dict[str, Any] | None:
    return observable(ObservableType.DOMAIN, value) if isinstance(value, str) and value else None


def email(value: Any) -> dict[str, Any] | None:
    return observable(ObservableType.EMAIL, value) if isinstance(value, str) and value else None


def file_hashes(name: str, hashes: Iterable[Any]) -> dict[str, Any] | None:
    """A file observable from hex digests of any of the known lengths (MD5, SHA-1, SHA-256, SHA-512)."""
    found = {}
    for digest in hashes:
        if isinstance(digest, str) and re.fullmatch(r"[0-9a-fA-F]+", digest) and len(digest) in HASH_BY_LENGTH:
            found[HASH_BY_LENGTH[len(digest)]] = digest
    return observable(ObservableType.FILE, name or "file", found) if found else None


def unique(observables: Iterable[dict[str, Any] | None]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for obs in observables:
        if obs is not None:
            seen.setdefault((obs["type"], obs["value"]), obs)
    return list(seen.values())


def first_mapped(mapping: dict[str, Any], keys: Iterable[Any]) -> Any:
    """The mapped value of the first key (compared case-insensitively) that the mapping names."""
    lowered = {str(k).lower(): v for k, v in (mapping or {}).items()}
    for key in keys:
        if key is not None and str(key).lower() in lowered:
            return lowered[str(key).lower()]
    return None


def fallback(mapping: dict[str, Any], name: str) -> str:
    return (mapping.get("fallback") or {}).get(name) or ("other" if name == "category" else "P3")


def lines(*pairs: tuple[str, Any]) -> str:
    return "\n".join(f"{label}: {value}" for label, value in pairs if value not in (None, "", [], {}))


def technique_ids(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and TECHNIQUE.fullmatch(v.strip())))
