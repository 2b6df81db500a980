"""Paging settings, read once per process from configuration (`UCSC_PAGING_*`, `UCSC_ACK_LINK_TTL_HOURS`, …)."""

from dataclasses import dataclass, field
from typing import Any

from notifiers import registry


@dataclass(frozen=True)
class Settings:
    """Paging settings from configuration (`UCSC_PAGING_*`), read once per process."""

    base_url: str = "http://127.0.0.1:5000"
    secret_key: str = ""
    channels: frozenset[str] = frozenset({"webhook"})
    max_tlp: dict[str, str] = field(default_factory=dict)
    rate_limit: int = 6
    rate_window: float = 600.0
    digest_delay: float = 60.0
    retry_seconds: float = 5.0
    retry_cap: float = 300.0
    channel_attempts: int = 5
    max_attempts: int = 20
    escalation_grace: float = 0.0
    focal_hours: float = 24.0
    ack_link_ttl: float = 168 * 3600.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Settings":
        key = id(config)
        cached = _SETTINGS.get(key)
        if cached is not None and cached[0] is config:
            return cached[1]
        enabled = set()
        for name, channel in registry.CHANNELS.items():
            notifier = channel.factory(config)
            if notifier is not None:
                enabled.add(name)
                close = getattr(notifier, "close", None)
                if close:
                    close()
        settings = cls(
            base_url=str(config.get("BASE_URL") or "").rstrip("/"),
            secret_key=str(config.get("SECRET_KEY") or ""),
            channels=frozenset(enabled),
            max_tlp={name: registry.max_tlp(config, name) for name in registry.NAMES},
            rate_limit=int(config.get("PAGING_RATE_LIMIT", 6)),
            rate_window=float(config.get("PAGING_RATE_WINDOW_SECONDS", 600)),
            digest_delay=float(config.get("PAGING_DIGEST_DELAY_SECONDS", 60)),
            retry_seconds=float(config.get("PAGING_RETRY_SECONDS", 5)),
            retry_cap=float(config.get("PAGING_RETRY_CAP_SECONDS", 300)),
            channel_attempts=int(config.get("PAGING_CHANNEL_ATTEMPTS", 5)),
            max_attempts=int(config.get("PAGING_MAX_ATTEMPTS", 20)),
            escalation_grace=float(config.get("PAGING_ESCALATION_GRACE_SECONDS", 0)),
            focal_hours=float(config.get("FOCAL_POINT_CONFIRM_HOURS", 24)),
            ack_link_ttl=float(config.get("ACK_LINK_TTL_HOURS", 168)) * 3600,
        )
        _SETTINGS[key] = (config, settings)
        return settings


# Built settings by the identity of the configuration they were read from: a process reads its own once.
_SETTINGS: dict[int, tuple[dict[str, Any], Settings]] = {}
