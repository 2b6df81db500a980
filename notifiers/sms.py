"""SMS through a provider-neutral HTTP gateway: a templated request in the form the operator's gateway takes.

VNPT's and Viettel's brandname gateways (and most others) take one HTTP request per message whose fields
carry the account, the brandname, the number, the text and a request id. `SMS_GATEWAY_TEMPLATE` maps each
field name the gateway expects to a template of `{to}`, `{text}`, `{key}`, `{sender}`, `{user}`, `{password}`;
presets give the field names of the common gateways. Sent as a form or as JSON, with a timeout; 2xx is
accepted, 5xx/408/429 are retried, other answers are refusals.
"""

import json
import unicodedata
from collections.abc import Mapping
from typing import Any

import httpx

from notifiers.base import DeliveryFailed, Message, timeout_of

PRESETS: dict[str, dict[str, Any]] = {
    # A plain JSON gateway (and the test receiver).
    "generic": {"format": "json", "fields": {"to": "{to}", "text": "{text}", "sender": "{sender}", "id": "{key}"}},
    # Viettel's brandname MT request: account, brandname as ServiceID, the number in both user and receiver fields.
    "viettel": {
        "format": "form",
        "fields": {
            "User": "{user}",
            "Password": "{password}",
            "CPCode": "{cp_code}",
            "RequestID": "{key}",
            "UserID": "{to}",
            "ReceiverID": "{to}",
            "ServiceID": "{sender}",
            "CommandCode": "bulksms",
            "Content": "{text}",
            "ContentType": "0",
        },
    },
    # VNPT's brandname REST request.
    "vnpt": {
        "format": "json",
        "fields": {
            "username": "{user}",
            "password": "{password}",
            "brandname": "{sender}",
            "phone": "{to}",
            "message": "{text}",
            "requestId": "{key}",
        },
    },
}


def normalise_phone(number: str, country: str = "84") -> str:
    """Digits only in international form: 0912 345 678 and +84912345678 both become 84912345678."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        digits = country + digits[1:]
    return digits


class SmsNotifier:
    channel = "sms"

    def __init__(
        self,
        url: str,
        *,
        fields: Mapping[str, str],
        format: str = "json",
        sender: str = "UCSC",
        user: str = "",
        password: str = "",
        extra: Mapping[str, str] | None = None,
        ascii_only: bool = True,
        max_length: int = 459,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if format not in ("json", "form"):
            raise ValueError("SMS_GATEWAY_FORMAT must be json or form")
        self.url, self.fields, self.format = url, dict(fields), format
        self.values = {"sender": sender, "user": user, "password": password, **(extra or {})}
        self.ascii_only = ascii_only  # unaccented text fits 160 characters a part, not 70
        self.max_length = max_length  # three concatenated parts
        self.client = httpx.Client(timeout=timeout, headers=dict(headers or {}), follow_redirects=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, timeout: float) -> "SmsNotifier":
        preset = PRESETS[str(config.get("SMS_GATEWAY_PRESET") or "generic")]
        template = config.get("SMS_GATEWAY_TEMPLATE")
        if isinstance(template, str) and template:
            template = json.loads(template)
        headers = config.get("SMS_GATEWAY_HEADERS") or {}
        if isinstance(headers, str):
            headers = json.loads(headers) if headers else {}
        return cls(
            str(config["SMS_GATEWAY_URL"]),
            fields=template or preset["fields"],
            format=str(config.get("SMS_GATEWAY_FORMAT") or preset["format"]),
            sender=str(config.get("SMS_SENDER") or "UCSC"),
            user=str(config.get("SMS_GATEWAY_USER") or ""),
            password=str(config.get("SMS_GATEWAY_PASSWORD") or ""),
            extra={"cp_code": str(config.get("SMS_GATEWAY_CP_CODE") or "")},
            ascii_only=bool(config.get("SMS_ASCII", True)),
            timeout=timeout,
            headers=headers,
        )

    def render(self, message: Message) -> dict[str, str]:
        """The gateway's fields for `message`: the number in international form, the text folded and cut."""
        text = message.text
        if self.ascii_only:
            text = _unaccent(text)
        if len(text) > self.max_length:
            text = text[: self.max_length - 1] + "…"
        values = {**self.values, "to": normalise_phone(message.to), "text": text, "key": message.key}
        return {name: template.format_map(values) for name, template in self.fields.items()}

    def send(self, message: Message) -> str:
        fields = self.render(message)
        headers = {"Idempotency-Key": message.key}
        try:
            if self.format == "form":
                response = self.client.post(self.url, data=fields, headers=headers)
            else:
                response = self.client.post(self.url, json=fields, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"SMS gateway: {exc}") from exc
        if response.status_code >= 300:
            permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 409, 425, 429)
            raise DeliveryFailed(f"SMS gateway: HTTP {response.status_code}", permanent=permanent)
        return f"HTTP {response.status_code}"

    def close(self) -> None:
        self.client.close()


_D = str.maketrans({"đ": "d", "Đ": "D"})


def _unaccent(text: str) -> str:
    """Vietnamese without diacritics, case kept (search's `fold` would also lower-case it)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_D))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def factory(config: Mapping[str, Any]) -> SmsNotifier | None:
    """The registry's factory: the channel exists when an SMS gateway is configured."""
    if not config.get("SMS_GATEWAY_URL"):
        return None
    return SmsNotifier.from_config(config, timeout=timeout_of(config))
