"""The channels a deployment has configured, by name."""

from collections.abc import Mapping
from typing import Any

from notifiers.base import Notifier
from notifiers.email import EmailNotifier
from notifiers.webhook import WebhookNotifier


def build_notifiers(config: Mapping[str, Any]) -> dict[str, Notifier]:
    """E-mail when `SMTP_URL` is set; webhooks always (each token names its own URL)."""
    channels: dict[str, Notifier] = {"webhook": WebhookNotifier(timeout=float(config.get("NOTIFY_TIMEOUT", 10)))}
    if config.get("SMTP_URL"):
        channels["email"] = EmailNotifier(
            config["SMTP_URL"], str(config.get("MAIL_FROM") or "ucsc@localhost"),
            timeout=float(config.get("NOTIFY_TIMEOUT", 10)),
        )  # fmt: skip
    return channels
