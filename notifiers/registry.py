"""The channels a deployment has configured, by name; a new channel registers a factory here."""

from collections.abc import Callable, Mapping
from typing import Any

from notifiers import outbound
from notifiers.base import Notifier
from notifiers.email import EmailNotifier
from notifiers.sms import SmsNotifier
from notifiers.telegram import factory as telegram_factory
from notifiers.webhook import WebhookNotifier

# name -> factory(config) returning the channel, or None when the deployment has not configured it.
Factory = Callable[[Mapping[str, Any]], Notifier | None]
FACTORIES: dict[str, Factory] = {}
# The contact field that holds each channel's address.
ADDRESS_FIELDS: dict[str, str] = {}
# Above this TLP a channel carries only the reference and a link (configurable per deployment).
DEFAULT_MAX_TLP = {"email": "amber", "sms": "green", "webhook": "amber", "telegram": "amber"}


def register_channel(name: str, factory: Factory, *, address_field: str) -> None:
    """Make channel `name` available: `factory(config)` builds it; contacts hold its address in `address_field`."""
    FACTORIES[name] = factory
    ADDRESS_FIELDS[name] = address_field


def _timeout(config: Mapping[str, Any]) -> float:
    return float(config.get("NOTIFY_TIMEOUT", 10))


def _email(config: Mapping[str, Any]) -> Notifier | None:
    if not config.get("SMTP_URL"):
        return None
    return EmailNotifier(
        config["SMTP_URL"],
        str(config.get("MAIL_FROM") or "ucsc@localhost"),
        timeout=_timeout(config),
        subject_prefix=str(config.get("MAIL_SUBJECT_PREFIX", "[TBSC]") or ""),
    )


def _webhook(config: Mapping[str, Any]) -> Notifier | None:
    return WebhookNotifier(timeout=_timeout(config), allow=outbound.Allowance.parse(config.get("OUTBOUND_ALLOW")))


def _sms(config: Mapping[str, Any]) -> Notifier | None:
    if not config.get("SMS_GATEWAY_URL"):
        return None
    return SmsNotifier.from_config(config, timeout=_timeout(config))


register_channel("email", _email, address_field="email")
register_channel("webhook", _webhook, address_field="webhook_url")
register_channel("sms", _sms, address_field="phone")
register_channel("telegram", telegram_factory, address_field="telegram_chat_id")


def build_notifiers(config: Mapping[str, Any]) -> dict[str, Notifier]:
    """Every registered channel the configuration enables (webhooks always: each address names its own URL)."""
    channels: dict[str, Notifier] = {}
    for name, factory in FACTORIES.items():
        notifier = factory(config)
        if notifier is not None:
            channels[name] = notifier
    return channels


def max_tlp(config: Mapping[str, Any], channel: str) -> str:
    """The highest TLP `channel` may carry in full (`CHANNEL_MAX_TLP` overrides the defaults)."""
    overrides = config.get("CHANNEL_MAX_TLP") or {}
    return str(overrides.get(channel) or DEFAULT_MAX_TLP.get(channel, "green"))
