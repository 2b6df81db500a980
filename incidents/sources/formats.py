"""The senders' own payloads turned into filings: pure functions, one per kind, no database."""

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from incidents.enums import ObservableType
from incidents.errors import FieldError, ValidationFailed
from incidents.schemas import ObservableIn
from incidents.sources.models import SourceKind

MAPPING_FILE = Path(__file__).with_name("mapping.yaml")
FIRING, RESOLVED = "firing", "resolved"
_TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?")
_HASH_BY_LENGTH = {32: "MD5", 40: "SHA-1", 64: "SHA-256", 128: "SHA-512"}
# Alertmanager writes this zero time as endsAt of an alert that has no end yet.
_NO_END = "0001-01-01T00:00:00Z"


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


def parse(kind: str, payload: Any, mapping: dict[str, Any]) -> list[Alert]:
    """The alerts of one payload of `kind`; ValidationFailed naming each bad field."""
    if not isinstance(payload, dict):
        raise ValidationFailed("the body must be a JSON object", errors=[FieldError("body", "must be an object")])
    return PARSERS[SourceKind(kind)](payload, mapping)


# ---------------------------------------------------------------------------------------------- helpers


class _Fields:
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


def _observable(kind: ObservableType, value: str, hashes: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The observable if its value is valid for its type; a sender's odd value ("any", "-") is left in context."""
    try:
        obs = ObservableIn(type=kind, value=value, hashes=hashes)
    except ValueError:
        return None
    return obs.model_dump(mode="json", exclude_none=True)


def address(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, str) or not value:
        return None
    return _observable(ObservableType.IPV6 if ":" in value else ObservableType.IPV4, value)


def url(value: Any) -> dict[str, Any] | None:
    return _observable(ObservableType.URL, value) if isinstance(value, str) and value else None


def domain(value: Any) -> dict[str, Any] | None:
    return _observable(ObservableType.DOMAIN, value) if isinstance(value, str) and value else None


def email(value: Any) -> dict[str, Any] | None:
    return _observable(ObservableType.EMAIL, value) if isinstance(value, str) and value else None


def file_hashes(name: str, hashes: Iterable[Any]) -> dict[str, Any] | None:
    """A file observable from hex digests of any of the known lengths (MD5, SHA-1, SHA-256, SHA-512)."""
    found = {}
    for digest in hashes:
        if isinstance(digest, str) and re.fullmatch(r"[0-9a-fA-F]+", digest) and len(digest) in _HASH_BY_LENGTH:
            found[_HASH_BY_LENGTH[len(digest)]] = digest
    return _observable(ObservableType.FILE, name or "file", found) if found else None


def _unique(observables: Iterable[dict[str, Any] | None]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for obs in observables:
        if obs is not None:
            seen.setdefault((obs["type"], obs["value"]), obs)
    return list(seen.values())


def _first(mapping: dict[str, Any], keys: Iterable[Any]) -> Any:
    """The mapped value of the first key (compared case-insensitively) that the mapping names."""
    lowered = {str(k).lower(): v for k, v in (mapping or {}).items()}
    for key in keys:
        if key is not None and str(key).lower() in lowered:
            return lowered[str(key).lower()]
    return None


def _fallback(mapping: dict[str, Any], name: str) -> str:
    return (mapping.get("fallback") or {}).get(name) or ("other" if name == "category" else "P3")


def _lines(*pairs: tuple[str, Any]) -> str:
    return "\n".join(f"{label}: {value}" for label, value in pairs if value not in (None, "", [], {}))


def _techniques(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and _TECHNIQUE.fullmatch(v.strip())))


# ---------------------------------------------------------------------------------------------- wazuh


def parse_wazuh(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """A raw Wazuh alert, or the message of Wazuh's `shuffle` integration (which carries it in `all_fields`)."""
    prefix = ""
    if "all_fields" in payload:
        if not isinstance(payload["all_fields"], dict):
            raise ValidationFailed("invalid field", errors=[FieldError("all_fields", "must be an object")])
        prefix, raw = "all_fields.", payload["all_fields"]
    else:
        raw = payload
    f = _Fields(raw, prefix)
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

    priority = _fallback(mapping, "priority")
    if level is not None:
        for band in mapping.get("level_priority") or []:
            if int(level) >= int(band["min"]):
                priority = band["priority"]
                break
    category = _first(mapping.get("group_category") or {}, groups) or _fallback(mapping, "category")
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
    description_text = _lines(
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
                "observables": _unique(observables),
                "dedup_key": f"wazuh:{rule_id}:{agent}",
                "detection_method": "ids",
                "detection_detail": f"Wazuh rule {rule_id} on agent {agent}"[:1000],
            },
            idempotency_key=f"wazuh:{alert_id}" if alert_id else None,
            attack_techniques=_techniques(mitre_ids),
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


# ---------------------------------------------------------------------------------------------- alertmanager

# Fields of Grafana-managed alerts beyond Alertmanager's own: kept as context.
_GRAFANA_ALERT_FIELDS = ("silenceURL", "dashboardURL", "panelURL", "values", "valueString", "imageURL", "orgId")
_GRAFANA_TOP_FIELDS = ("orgId", "title", "state", "message", "truncatedAlerts")


def parse_alertmanager(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """Alertmanager's webhook payload version 4 (Grafana's too): one alert per fingerprint."""
    top = _Fields(payload)
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
        f = _Fields(item if isinstance(item, dict) else {}, f"alerts[{n}].")
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
        priority = _first(mapping.get("severity_priority") or {}, [severity]) or _fallback(mapping, "priority")
        category = labels.get("category") if labels.get("category") in _CATEGORIES else None
        category = category or _first(mapping.get("label_category") or {}, [name, labels.get("job")])
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
                    "description": _lines(
                        ("Alert", name),
                        ("Severity", severity),
                        ("Summary", summary),
                        ("Description", annotations.get("description")),
                        ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))),
                        ("Started", starts.isoformat() if starts else None),
                        ("Source", item.get("generatorURL")),
                    ),
                    "category": category or _fallback(mapping, "category"),
                    "priority": priority,
                    "detected_at": starts.isoformat() if starts else None,
                    "observables": _unique(observables),
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


_CATEGORIES = {
    "dos", "phishing", "malware", "unauthorized_access", "defacement", "ransomware", "destruction", "data_theft",
    "combined", "other",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- kibana


def parse_kibana(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """The body of the webhook connector docs/sources.md gives (a security detection rule's action)."""
    f = _Fields(payload)
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
    priority = _first(mapping.get("severity_priority") or {}, [severity]) or _fallback(mapping, "priority")
    category = _first(mapping.get("tag_category") or {}, tags) or _fallback(mapping, "category")
    reasons = [str(a["reason"]) for a in alerts if a.get("reason")]
    host = hosts[0] if len(set(hosts)) == 1 else None
    return [
        Alert(
            incident={
                "title": name,
                "description": _lines(
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
                "observables": _unique(observables),
                "dedup_key": f"kibana:{rule_id}:{host}" if host else f"kibana:{rule_id}",
                "detection_method": "log_review",
                "detection_detail": f"Kibana rule {name}"[:1000],
            },
            idempotency_key=f"kibana:{rule_id}:{','.join(sorted(ids))}" if ids else None,
            attack_techniques=_techniques(techniques),
            context={"rule": f.get("rule"), "alerts": alerts, "results_link": f.get("results_link")},
        )
    ]


# ---------------------------------------------------------------------------------------------- splunk


def parse_splunk(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """Splunk's webhook alert action: the first result of a saved search, with its search id and name."""
    f = _Fields(payload)
    search_name = f.text("search_name", required=True)
    sid = f.text("sid", required=True)
    result = f.mapping("result")
    f.check()
    severity = result.get("severity") or result.get("urgency")
    priority = _first(mapping.get("severity_priority") or {}, [severity]) or _fallback(mapping, "priority")
    words = [result.get("category"), *[w for w in (mapping.get("name_category") or {}) if w in search_name.lower()]]
    category = _first(mapping.get("name_category") or {}, words) or _fallback(mapping, "category")
    observables = [address(result.get(k)) for k in ("src", "src_ip", "dest", "dest_ip", "dst", "ip", "clientip")]
    observables += [url(result.get(k)) for k in ("url", "uri")]
    observables += [domain(result.get(k)) for k in ("domain", "query", "dest_host", "host_name")]
    observables += [email(result.get(k)) for k in ("sender", "recipient", "src_user_email")]
    observables.append(
        file_hashes(str(result.get("file_name") or "file"),
                    (result.get(k) for k in ("file_hash", "md5", "sha1", "sha256", "hash")))
    )  # fmt: skip
    host = result.get("host") or result.get("dest") or result.get("src")
    users = [str(result[k]) for k in ("user", "src_user", "dest_user") if result.get(k)]
    stamp = result.get("_time")
    # Splunk gives _time as epoch seconds in a string ("1733455800.000").
    epoch = isinstance(stamp, str) and re.fullmatch(r"\d{9,11}(\.\d+)?", stamp)
    detected = parse_time(float(stamp) * 1000) if epoch else parse_time(stamp) if stamp else None
    digest = hashlib.sha256(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return [
        Alert(
            incident={
                "title": search_name,
                "description": _lines(
                    ("Splunk search", search_name),
                    ("Host", host),
                    ("Users", ", ".join(users)),
                    ("Severity", severity),
                    ("Result", json.dumps(result, ensure_ascii=False, sort_keys=True)[:4000]),
                    ("Results", payload.get("results_link")),
                ),
                "category": category,
                "priority": priority,
                "detected_at": detected.isoformat() if detected else None,
                "observables": _unique(observables),
                "dedup_key": f"splunk:{search_name}:{host}" if host else f"splunk:{search_name}",
                "detection_method": "log_review",
                "detection_detail": f"Splunk search {search_name}"[:1000],
            },
            idempotency_key=f"splunk:{sid}:{digest}",
            context={k: payload.get(k) for k in ("sid", "results_link", "search_name", "owner", "app", "result")},
        )
    ]


# ---------------------------------------------------------------------------------------------- thehive

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
    f = _Fields(payload)
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
    techniques = _techniques(
        p.get("patternId") for p in payload.get("procedures") or [] if isinstance(p, dict)
    ) + _techniques(t.split(":")[-1] for t in tags)
    return [
        Alert(
            incident={
                "title": str(payload["title"]),
                "description": _lines(
                    ("", str(payload["description"])),
                    ("TheHive alert", f"{payload['type']} from {source}, ref {ref}"),
                    ("Tags", ", ".join(tags)),
                    ("Other observables", ", ".join(f"{o['dataType']}={o['data']}" for o in others)),
                ).removeprefix(": "),
                "category": _first(mapping.get("tag_category") or {}, [*tags, payload["type"]])
                or _fallback(mapping, "category"),
                "priority": _first(mapping.get("severity_priority") or {}, [severity])
                or _fallback(mapping, "priority"),
                "tlp": tlps.get(str(tlp_raw), "amber"),
                "detected_at": detected.isoformat() if detected else None,
                "observables": _unique(observables),
                "dedup_key": f"thehive:{source}:{ref}",
                "detection_method": "notified",
                "detection_detail": f"TheHive alert {payload['type']} from {source}"[:1000],
            },
            idempotency_key=f"thehive:{payload['type']}:{source}:{ref}",
            attack_techniques=techniques,
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


PARSERS: dict[SourceKind, Callable[[dict[str, Any], dict[str, Any]], list[Alert]]] = {
    SourceKind.WAZUH: parse_wazuh,
    SourceKind.ALERTMANAGER: parse_alertmanager,
    SourceKind.KIBANA: parse_kibana,
    SourceKind.SPLUNK: parse_splunk,
    SourceKind.THEHIVE: parse_thehive,
}
