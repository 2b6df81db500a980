"""The local outbox: where pages go when no outward channel is configured, kept in a file the web shows.

In the embedded default (no SMTP server, Telegram bot or SMS gateway) a page would otherwise fail on every
channel; here it is kept, with who it was for and its text, until someone configures a real channel. Each
line of the file is one JSON object; a repeated send of the same delivery (at least once) is shown once.
"""

import fcntl
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notifiers.base import Message

NAME = "outbox"
# The outward channels and the settings that configure each: with none of them set, `OUTBOX=auto` turns it on.
OUTWARD = {"email": "SMTP_URL", "telegram": "TELEGRAM_TOKEN", "sms": "SMS_GATEWAY_URL"}


class OutboxNotifier:
    channel = NAME

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, message: Message) -> str:
        line = json.dumps(
            {
                "key": message.key,
                "to": message.to,
                "subject": message.subject,
                "text": message.text,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            ensure_ascii=False,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The web and every worker thread append to one file: a lock keeps each line whole.
        with self.path.open("a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line + "\n")
        return f"{NAME} {message.key}"


def enabled(config: Mapping[str, Any]) -> bool:
    """`OUTBOX`: on, off, or auto (the default): on when no outward channel is configured."""
    mode = config.get("OUTBOX", "auto")
    if isinstance(mode, bool):
        return mode
    mode = str(mode).strip().lower()
    if mode in ("on", "1", "yes"):
        return True
    if mode in ("off", "0", "no", "false"):
        return False
    telegram_off = str(config.get("TELEGRAM_MODE") or "polling").lower() == "off"
    configured = [name for name, key in OUTWARD.items() if config.get(key)]
    if telegram_off and "telegram" in configured:
        configured.remove("telegram")
    return not configured


def factory(config: Mapping[str, Any]) -> OutboxNotifier | None:
    if not enabled(config) or not config.get("OUTBOX_FILE"):
        return None
    return OutboxNotifier(Path(str(config["OUTBOX_FILE"])))


def read(path: Path | str | None, keys: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """The kept messages by key (the first of repeats), only those in `keys` when given."""
    found: dict[str, dict[str, Any]] = {}
    if not path or not Path(path).exists():
        return found
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            key = entry.get("key") if isinstance(entry, dict) else None
            if isinstance(key, str) and key not in found and (keys is None or key in keys):
                found[key] = entry
    return found
