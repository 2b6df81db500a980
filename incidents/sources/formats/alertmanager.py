"""Alertmanager's webhook payload version 4, Grafana-managed alerts' extra fields included."""

from typing import Any

from incidents.errors import FieldError, ValidationFailed
from incidents.sources.formats.common import (
    CATEGORIES,
    FIRING,
    RESOLVED,
    Alert,
    Fields,
    address,
    domain,
    fallback,
    first_mapped,
    lines,
    unique,
    url,
)

# Alertmanager writes this zero time as endsAt of an alert that has no end yet.
_NO_END = "0001-01-01T00:00:00Z"

# Fields of Grafana-managed alerts beyond Alertmanager's own: kept as context.
_GRAFANA_ALERT_FIELDS = ("silenceURL", "dashboardURL", "panelURL", "values", "valueString", "imageURL", "orgId")
_GRAFANA_TOP_FIELDS = ("orgId", "title", "state", "message", "truncatedAlerts")


def parse_alertmanager(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """Alertmanager's webhook payload version 4 (Grafana's too): one alert per fingerprint."""
    top = Fields(payload)
    version = top.text("version")
    if version is not None and version != "4":
        top.errors.append(FieldError("version", "only webhook payload version 4 is understood"))
    items = payload.get("alerts")
    if not isinstance(items, list) or not items:
        top.errors.append(FieldError("alerts", "must be a non-empty list"))
    top.check()
    common = {k: payload[k] for k in ("receiver", "groupKey", "externalURL", "groupLabels") if k in payload}
    common.update({k: payload[k] for k in _GRAFANA_TOP_FIELDS if k in payload})
    alerts: list[Alert] = []
    errors: list[FieldError] = []
    for n, item in enumerate(items):
        f = Fields(item if isinstance(item, dict) else {}, f"alerts[{n}].")
        if not isinstance(item, dict):
            errors.append(FieldError(f"alerts[{n}]", "must be an object"))
            continue
        status = f.text("status", required=True)
        if status not in (None, FIRING, RESOLVED):
            f.errors.append(FieldError(f"alerts[{n}].status", "must be firing or resolved"))
        labels, annotations = f.mapping("labels"), f.mapping("annotations")
        fingerprint = f.text("fingerprint", required=True)
        starts = f.time("startsAt", required=True)
        ends_raw = f.get("endsAt")
        ends = f.time("endsAt") if ends_raw not in (None, "", _NO_END) else None
        if f.errors:
            errors.extend(f.errors)
            continue
        name = str(labels.get("alertname") or "alert")
        severity = labels.get("severity")
        priority = first_mapped(mapping.get("severity_priority") or {}, [severity]) or fallback(mapping, "priority")
        category = labels.get("category") if labels.get("category") in CATEGORIES else None
        category = category or first_mapped(mapping.get("label_category") or {}, [name, labels.get("job")])
        summary = annotations.get("summary") or annotations.get("title")
        title = f"{name}: {summary}" if summary else name
        instance = labels.get("instance")
        host = str(instance).rsplit(":", 1)[0] if instance else None
        observables = [address(host), domain(host)]
        for value in (*labels.values(), *annotations.values()):
            if (
                isinstance(value, str)
                and value.startswith(("http://", "https://"))
                and value != item.get("generatorURL")
            ):
                observables.append(url(value))
        alerts.append(
            Alert(
                incident={
                    "title": title,
                    "description": lines(
                        ("Alert", name),
                        ("Severity", severity),
                        ("Summary", summary),
                        ("Description", annotations.get("description")),
                        ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))),
                        ("Started", starts.isoformat() if starts else None),
                        ("Source", item.get("generatorURL")),
                    ),
                    "category": category or fallback(mapping, "category"),
                    "priority": priority,
                    "detected_at": starts.isoformat() if starts else None,
                    "observables": unique(observables),
                    "dedup_key": f"alertmanager:{fingerprint}",
                    "detection_method": "other",
                    "detection_detail": f"Alertmanager alert {name}"[:1000],
                },
                status=str(status),
                context={
                    "fingerprint": fingerprint,
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": item.get("startsAt"),
                    "endsAt": ends.isoformat() if ends else None,
                    "generatorURL": item.get("generatorURL"),
                    **{k: item[k] for k in _GRAFANA_ALERT_FIELDS if k in item},
                    "group": common,
                },
            )
        )
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid field(s)", errors=errors)
    return alerts
