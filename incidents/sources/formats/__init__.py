"""The senders' own payloads turned into filings: pure functions, one module per kind, no database."""

from collections.abc import Callable
from typing import Any

from incidents.errors import FieldError, ValidationFailed
from incidents.sources.formats import alertmanager, kibana, splunk, thehive, wazuh
from incidents.sources.formats.common import (
    FIRING,
    MAPPING_FILE,
    RESOLVED,
    Alert,
    mapping_for,
    parse_time,
    shipped_mapping,
)
from incidents.sources.models import SourceKind

__all__ = ["FIRING", "MAPPING_FILE", "PARSERS", "RESOLVED", "Alert", "mapping_for", "parse", "parse_time",
           "shipped_mapping"]  # fmt: skip

PARSERS: dict[SourceKind, Callable[[dict[str, Any], dict[str, Any]], list[Alert]]] = {
    SourceKind.WAZUH: wazuh.parse_wazuh,
    SourceKind.ALERTMANAGER: alertmanager.parse_alertmanager,
    SourceKind.KIBANA: kibana.parse_kibana,
    SourceKind.SPLUNK: splunk.parse_splunk,
    SourceKind.THEHIVE: thehive.parse_thehive,
}


def parse(kind: str, payload: Any, mapping: dict[str, Any]) -> list[Alert]:
    """The alerts of one payload of `kind`; ValidationFailed naming each bad field."""
    if not isinstance(payload, dict):
        raise ValidationFailed("the body must be a JSON object", errors=[FieldError("body", "must be an object")])
    return PARSERS[SourceKind(kind)](payload, mapping)
