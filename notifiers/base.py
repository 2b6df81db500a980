"""The interface every channel implements: send one message, raise on failure, never block without a timeout."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """One delivery: an address on a channel, the text in the recipient's language, and a stable key.

    `key` is the same on every attempt of the same delivery, so a receiver can drop a repeat
    (the e-mail's Message-ID, the webhook's Idempotency-Key).
    """

    to: str
    subject: str
    text: str
    key: str
    data: dict[str, Any] = field(default_factory=dict)
    secret: str | None = None  # a webhook's HMAC key


class DeliveryFailed(Exception):
    """The channel refused or could not be reached; `permanent` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Queued(str):
    """A receipt for a message the channel only queued: it records the delivery's outcome once it has one."""


class Notifier(Protocol):
    channel: str

    def send(self, message: Message) -> str:
        """Deliver `message`; return the channel's receipt (a message id, a status line)."""
        ...


def timeout_of(config: Mapping[str, Any]) -> float:
    """Seconds any channel's network call may take (`NOTIFY_TIMEOUT`)."""
    return float(config.get("NOTIFY_TIMEOUT", 10))
