"""Wazuh: a raw alert, or the message of Wazuh's built-in `shuffle` integration."""

from typing import Any

from incidents.errors import FieldError, ValidationFailed
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


def parse_wazuh(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """A raw Wazuh alert, or the message of Wazuh's `shuffle` integration (which carries it in `all_fields`)."""
    prefix = ""
    if "all_fields" in payload:
        if not isinstance(payload["all_fields"], dict):
            raise ValidationFailed("invalid field", errors=[FieldError("all_fields", "must be an object")])
        prefix, raw = "all_fields.", payload["all_fields"]
    else:
        raw = payload
    f = Fields(raw, prefix)
    rule_id = f.text("rule.id", required=True)
    description = f.text("rule.description") or (payload.get("title") if prefix else None)
    if not description:
        f.errors.append(FieldError(prefix + "rule.description", "required"))
    agent = f.text("agent.name", required=True)
    level = f.get("rule.level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int | str) or not str(level).isdigit()):
        f.errors.append(FieldError(prefix + "rule.level", "must be a whole number 0-15"))
        level = None
    groups = f.strings("rule.groups")
    mitre_ids = f.strings("rule.mitre.id")
    detected = f.time("timestamp")
    alert_id = f.text("id") or (str(payload["id"]) if prefix and payload.get("id") else None)
    data, syscheck = f.mapping("data"), f.mapping("syscheck")
    f.check()

    priority = fallback(mapping, "priority")
    if level is not None:
        for band in mapping.get("level_priority") or []:
            if int(level) >= int(band["min"]):
                priority = band["priority"]
                break
    category = first_mapped(mapping.get("group_category") or {}, groups) or fallback(mapping, "category")
    observables = [address(f.get("agent.ip"))]
    for key in ("srcip", "src_ip", "dstip", "dst_ip", "dest_ip"):
        observables.append(address(data.get(key)))
    for key in ("url", "uri"):
        observables.append(url(data.get(key)))
    for key in ("hostname", "domain", "dns_query"):
        observables.append(domain(data.get(key)))
    if syscheck:
        observables.append(
            file_hashes(
                str(syscheck.get("path") or "file"),
                (syscheck.get(k) for k in ("md5_after", "sha1_after", "sha256_after")),
            )
        )
    users = [str(data[k]) for k in ("srcuser", "dstuser", "user", "username") if data.get(k)]
    description_text = lines(
        ("Wazuh rule", f"{rule_id} (level {level})" if level is not None else rule_id),
        ("Agent", f"{agent} ({f.get('agent.ip')})" if f.get("agent.ip") else agent),
        ("Location", f.get("location")),
        ("Users", ", ".join(users)),
        ("Groups", ", ".join(groups)),
        ("MITRE ATT&CK", ", ".join(mitre_ids)),
        ("File", syscheck.get("path")),
        ("Log", f.get("full_log")),
    )
    return [
        Alert(
            incident={
                "title": description,
                "description": description_text,
                "category": category,
                "priority": priority,
                "detected_at": detected.isoformat() if detected else None,
                "observables": unique(observables),
                "dedup_key": f"wazuh:{rule_id}:{agent}",
                "detection_method": "ids",
                "detection_detail": f"Wazuh rule {rule_id} on agent {agent}"[:1000],
            },
            idempotency_key=f"wazuh:{alert_id}" if alert_id else None,
            attack_techniques=technique_ids(mitre_ids),
            context={
                "rule": f.get("rule"),
                "agent": f.get("agent"),
                "users": users,
                "location": f.get("location"),
                "data": data,
                **({"shuffle": {k: v for k, v in payload.items() if k != "all_fields"}} if prefix else {}),
            },
        )
    ]
