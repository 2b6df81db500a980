"""Webhooks: a JSON POST signed with HMAC-SHA256, carrying an Idempotency-Key that is stable across retries."""

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from notifiers import outbound
from notifiers.base import DeliveryFailed, Message, timeout_of

SIGNATURE_HEADER = "X-UCSC-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`t=TIMESTAMP,v1=HEX`: HMAC-SHA256 of "TIMESTAMP.BODY", so a receiver can refuse a stale replay."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class WebhookNotifier:
    channel = "webhook"

    def __init__(
        self, *, timeout: float = 10.0, user_agent: str = "UCSC", allow: outbound.Allowance | None = None
    ) -> None:
        # Each contact or token names its own URL, so each connection is checked (notifiers/outbound.py).
        headers = {"User-Agent": user_agent}
        self.client = outbound.client(allow or outbound.Allowance(), timeout=timeout, headers=headers)

    def send(self, message: Message) -> str:
        body = json.dumps(message.data, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.key}
        if message.secret:
            headers[SIGNATURE_HEADER] = signature(message.secret, str(int(time.time())), body)
        try:
            response = self.client.post(message.to, content=body, headers=headers)
        except outbound.OutboundRefused as exc:
            raise DeliveryFailed(f"POST {message.to}: refused: {exc}", permanent=True) from exc
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"POST {message.to}: {exc}") from exc
        if response.status_code >= 300:
            # 4xx other than 408/429 will not get better by retrying; 5xx, 408 and 429 may.
            permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 409, 425, 429)
            raise DeliveryFailed(f"POST {message.to}: HTTP {response.status_code}", permanent=permanent)
        return f"HTTP {response.status_code}"

    def close(self) -> None:
        self.client.close()


def factory(config: Mapping[str, Any]) -> WebhookNotifier:
    """The registry's factory: always there, since each address names its own URL (checked against
    `OUTBOUND_ALLOW`)."""
    return WebhookNotifier(timeout=timeout_of(config), allow=outbound.Allowance.parse(config.get("OUTBOUND_ALLOW")))
