"""Kibana: the webhook connector body docs/sources.md gives for a security detection rule."""

from typing import Any

from incidents.errors import FieldError
from incidents.sources.formats.common import (
    Alert,
    Fields,
    address,
    domain,
    fallback,
    file_hashes,
    first_mapped,
    lines,
    technique_ids,
    unique,
    url,
)


def parse_kibana(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """The body of the webhook connector docs/sources.md gives (a security detection rule's action)."""
    f = Fields(payload)
    rule_id = f.text("rule.id", required=True)
    name = f.text("rule.name", required=True)
    severity = f.text("rule.severity")
    tags = [t.strip() for t in ",".join(f.strings("rule.tags")).split(",") if t.strip()]
    techniques = f.strings("rule.techniques")
    detected = f.time("date")
    items = f.get("alerts", [])
    if not isinstance(items, list):
        f.errors.append(FieldError("alerts", "must be a list"))
        items = []
    f.check()
    alerts = [a for a in items if isinstance(a, dict) and any(v not in (None, "") for v in a.values())]
    observables: list[dict[str, Any] | None] = []
    hosts, users, ids = [], [], []
    for alert in alerts:
        observables += [address(alert.get("source_ip")), address(alert.get("destination_ip")), url(alert.get("url"))]
        observables.append(domain(alert.get("domain")))
        observables.append(file_hashes(str(alert.get("file") or "file"), [alert.get("hash")]))
        hosts += [str(alert["host"])] if alert.get("host") else []
        users += [str(alert["user"])] if alert.get("user") else []
        ids += [str(alert["id"])] if alert.get("id") else []
    priority = first_mapped(mapping.get("severity_priority") or {}, [severity]) or fallback(mapping, "priority")
    category = first_mapped(mapping.get("tag_category") or {}, tags) or fallback(mapping, "category")
    reasons = [str(a["reason"]) for a in alerts if a.get("reason")]
    host = hosts[0] if len(set(hosts)) == 1 else None
    return [
        Alert(
            incident={
                "title": name,
                "description": lines(
                    ("Kibana rule", name),
                    ("Description", f.get("rule.description")),
                    ("Severity", severity),
                    ("Risk score", f.get("rule.risk_score")),
                    ("Alerts", len(alerts)),
                    ("Hosts", ", ".join(dict.fromkeys(hosts))),
                    ("Users", ", ".join(dict.fromkeys(users))),
                    ("Reasons", "\n".join(reasons[:20])),
                    ("Results", f.get("results_link")),
                ),
                "category": category,
                "priority": priority,
                "detected_at": detected.isoformat() if detected else None,
                "observables": unique(observables),
                "dedup_key": f"kibana:{rule_id}:{host}" if host else f"kibana:{rule_id}",
                "detection_method": "log_review",
                "detection_detail": f"Kibana rule {name}"[:1000],
            },
            idempotency_key=f"kibana:{rule_id}:{','.join(sorted(ids))}" if ids else None,
            attack_techniques=technique_ids(techniques),
            context={"rule": f.get("rule"), "alerts": alerts, "results_link": f.get("results_link")},
        )
    ]
