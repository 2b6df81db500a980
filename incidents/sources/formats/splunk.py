"""Splunk's webhook alert action: the first result row of a saved search."""

import hashlib
import json
import re
from typing import Any

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
    parse_time,
    unique,
    url,
)


def parse_splunk(payload: dict[str, Any], mapping: dict[str, Any]) -> list[Alert]:
    """Splunk's webhook alert action: the first result of a saved search, with its search id and name."""
    f = Fields(payload)
    search_name = f.text("search_name", required=True)
    sid = f.text("sid", required=True)
    result = f.mapping("result")
    f.check()
    severity = result.get("severity") or result.get("urgency")
    priority = first_mapped(mapping.get("severity_priority") or {}, [severity]) or fallback(mapping, "priority")
    words = [result.get("category"), *[w for w in (mapping.get("name_category") or {}) if w in search_name.lower()]]
    category = first_mapped(mapping.get("name_category") or {}, words) or fallback(mapping, "category")
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
                "description": lines(
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
                "observables": unique(observables),
                "dedup_key": f"splunk:{search_name}:{host}" if host else f"splunk:{search_name}",
                "detection_method": "log_review",
                "detection_detail": f"Splunk search {search_name}"[:1000],
            },
            idempotency_key=f"splunk:{sid}:{digest}",
            context={k: payload.get(k) for k in ("sid", "results_link", "search_name", "owner", "app", "result")},
        )
    ]
