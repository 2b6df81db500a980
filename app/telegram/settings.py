"""The Telegram runtime's settings, read once from the app's configuration."""

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from notifiers import telegram as tg
from playbooks.telegram_links import telegram_mode

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name


@dataclass(frozen=True)
class Settings:
    token: str
    api_url: str
    mode: str
    base_url: str
    secret_key: str
    board_chat_id: int | None = None
    poll_timeout: int = 20
    callback_ttl: timedelta = timedelta(days=7)
    retry_base: float = 0.5

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Settings | None":
        """None when Telegram is off (no token, or `TELEGRAM_MODE=off`)."""
        mode = telegram_mode(config)
        if mode is None:
            return None
        board = config.get("TELEGRAM_BOARD_CHAT_ID")
        return cls(
            token=str(config["TELEGRAM_TOKEN"]),
            api_url=str(config.get("TELEGRAM_API_URL") or "https://api.telegram.org/bot"), mode=mode,
            base_url=str(config.get("BASE_URL") or "").rstrip("/"), secret_key=str(config["SECRET_KEY"]),
            board_chat_id=int(board) if board not in (None, "") else None,
            poll_timeout=int(config.get("TELEGRAM_POLL_TIMEOUT", 20)),
            callback_ttl=timedelta(hours=float(config.get("TELEGRAM_CALLBACK_TTL_HOURS", 168))),
            retry_base=float(config.get("TELEGRAM_RETRY_SECONDS", 0.5)),
        )  # fmt: skip

    @property
    def bot(self) -> str:
        """The token's name in the database: never the token itself."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:32]

    @property
    def lock_key(self) -> int:
        return int.from_bytes(hashlib.sha256(b"ucsc.telegram.leader\x00" + self.token.encode()).digest()[:8], "big",
                              signed=True)  # fmt: skip

    @property
    def callback_secret(self) -> bytes:
        return tg.callback_key(self.secret_key + "\x00" + self.token)

    @property
    def webhook_secret(self) -> str:
        """The `secret_token` given to setWebhook: derived, so web and worker agree without another setting."""
        return hmac.new(self.secret_key.encode(), b"ucsc.telegram.webhook\x00" + self.token.encode(),
                        hashlib.sha256).hexdigest()  # fmt: skip
