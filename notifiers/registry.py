"""The channels, one line each: the only list of channel names the rest of the code reads.

Adding a channel is a module in notifiers/ with a `Notifier` and a `factory(config)`, plus one line in
`CHANNELS`; the contact directory, the playbook schema and the paging engine take the names from here.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from notifiers import email, outbox, sms, telegram, webhook
from notifiers.base import Notifier

# factory(config) returns the channel, or None when the deployment has not configured it.
Factory = Callable[[Mapping[str, Any]], Notifier | None]


@dataclass(frozen=True)
class Channel:
    name: str
    factory: Factory
    address_field: str  # the contact field that holds the channel's address
    max_tlp: str  # above this TLP the channel carries only the reference and a link (`CHANNEL_MAX_TLP` overrides)
    default: bool  # a new contact is reached on it unless told otherwise


# In the order a new contact tries them.
CHANNELS: dict[str, Channel] = {
    c.name: c
    for c in (
        Channel("telegram", telegram.factory, "telegram_chat_id", max_tlp="amber", default=True),
        Channel("email", email.factory, "email", max_tlp="amber", default=True),
        Channel("sms", sms.factory, "phone", max_tlp="green", default=True),
        Channel("webhook", webhook.factory, "webhook_url", max_tlp="amber", default=False),
        Channel("outbox", outbox.factory, "name", max_tlp="amber", default=False),  # the last resort when on
    )
}
NAMES = tuple(CHANNELS)
DEFAULT_CHANNELS = tuple(c.name for c in CHANNELS.values() if c.default)
ADDRESS_FIELDS = {c.name: c.address_field for c in CHANNELS.values()}


def build_notifiers(config: Mapping[str, Any]) -> dict[str, Notifier]:
    """Every channel the configuration enables (webhooks always: each address names its own URL)."""
    channels: dict[str, Notifier] = {}
    for channel in CHANNELS.values():
        notifier = channel.factory(config)
        if notifier is not None:
            channels[channel.name] = notifier
    return channels


def max_tlp(config: Mapping[str, Any], channel: str) -> str:
    """The highest TLP `channel` may carry in full (`CHANNEL_MAX_TLP` overrides the defaults)."""
    overrides = config.get("CHANNEL_MAX_TLP") or {}
    known = CHANNELS.get(channel)
    return str(overrides.get(channel) or (known.max_tlp if known else "green"))
