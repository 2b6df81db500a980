"""TheHive 5's alert, as thehive4py's `alert.create` and TheHive scripts post it."""

from collections.abc import Callable
from typing import Any

from incidents.errors import FieldError
from incidents.sources.formats.common import (
    Alert,
    Fields,
    address,
    domain,
    email,
    fallback,
    file_hashes,
    first_mapped,
    lines,
    technique_ids,
    unique,
    url,
)

_THEHIVE_TYPES: dict[str, Callable[[Any], dict[str, Any] | None]] = {
    "ip": address,
    "domain": domain,
    "fqdn": domain,
    "url": url,
    "mail": email,
    "email": email,
}


def parse_thehive(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """TheHive 5's alert (what thehive4py's `alert.create` posts)."""
    f = Fields(payload)
    for name in ("type", "source", "sourceRef", "title", "description"):
        f.text(name, required=True)
    severity = f.get("severity", 2)
    if severity not in (1, 2, 3, 4):
        f.errors.append(FieldError("severity", "must be 1 (low) to 4 (critical)"))
    tlp_raw = f.get("tlp", 2)
    tlps = {str(k): v for k, v in (mapping.get("tlp") or {}).items()}
    if str(tlp_raw) not in tlps:
        f.errors.append(FieldError("tlp", f"must be one of {', '.join(tlps)}"))
    detected = f.time("date")
    tags = f.strings("tags")
    raw_observables = f.get("observables", [])
    if not isinstance(raw_observables, list):
        f.errors.append(FieldError("observables", "must be a list"))
        raw_observables = []
    observables: list[dict[str, Any] | None] = []
    others: list[dict[str, Any]] = []
    for n, obs in enumerate(raw_observables):
        if not isinstance(obs, dict) or not isinstance(obs.get("dataType"), str):
            f.errors.append(FieldError(f"observables[{n}].dataType", "required"))
            continue
        data_type, data = obs["dataType"].lower(), obs.get("data")
        made = None
        if data_type == "hash" and isinstance(data, str):
            made = file_hashes("file", [data])
        elif data_type in _THEHIVE_TYPES:
            made = _THEHIVE_TYPES[data_type](data)
        if made is None:
            others.append({"dataType": obs["dataType"], "data": data})
        observables.append(made)
    f.check()
    source, ref = str(payload["source"]), str(payload["sourceRef"])
    found = technique_ids(
        p.get("patternId") for p in payload.get("procedures") or [] if isinstance(p, dict)
    ) + technique_ids(t.split(":")[-1] for t in tags)
    return [
        Alert(
            incident={
                "title": str(payload["title"]),
                "description": lines(
                    ("", str(payload["description"])),
                    ("TheHive alert", f"{payload['type']} from {source}, ref {ref}"),
                    ("Tags", ", ".join(tags)),
                    ("Other observables", ", ".join(f"{o['dataType']}={o['data']}" for o in others)),
                ).removeprefix(": "),
                "category": first_mapped(mapping.get("tag_category") or {}, [*tags, payload["type"]])
                or fallback(mapping, "category"),
                "priority": first_mapped(mapping.get("severity_priority") or {}, [severity])
                or fallback(mapping, "priority"),
                "tlp": tlps.get(str(tlp_raw), "amber"),
                "detected_at": detected.isoformat() if detected else None,
                "observables": unique(observables),
                "dedup_key": f"thehive:{source}:{ref}",
                "detection_method": "notified",
                "detection_detail": f"TheHive alert {payload['type']} from {source}"[:1000],
            },
            idempotency_key=f"thehive:{payload['type']}:{source}:{ref}",
            attack_techniques=found,
            context={
                k: payload.get(k)
                for k in (
                    "type",
                    "source",
                    "sourceRef",
                    "severity",
                    "tlp",
                    "pap",
                    "tags",
                    "externalLink",
                    "customFields",
                )
                if k in payload
            }
            | ({"observables": others} if others else {}),
        )
    ]
