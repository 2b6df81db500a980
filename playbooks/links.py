"""Signed links a person follows from a message: acknowledge a page, confirm their directory details.

A token names what it acts on and is signed with the deployment's secret, so a link cannot be forged or
pointed at another page or person; an ack link also carries when it stops working.
"""

import base64
import hashlib
import hmac
import math
import time
from datetime import UTC, datetime

from incidents.clock import LOCAL_TZ
from playbooks.settings import Settings


def _mac(secret: str, *parts: object) -> str:
    digest = hmac.new(secret.encode(), ":".join(map(str, parts)).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def ack_token(secret: str, page_id: int, contact_id: int, expires: int) -> str:
    """A token naming one recipient of one page until `expires` (Unix seconds), signed: the e-mail's link carries it."""
    return f"{page_id}-{contact_id}-{expires}-{_mac(secret, 'ack', page_id, contact_id, expires)}"


def read_ack_token(secret: str, token: str) -> tuple[int, int, datetime] | None:
    """(page id, contact id, expiry) of a genuine token, expired or not; None for a forged or malformed one."""
    parts = token.split("-", 3)
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) < 19 for p in parts[:3]):
        return None
    page_id, contact_id, expires = int(parts[0]), int(parts[1]), int(parts[2])
    if not hmac.compare_digest(parts[3], _mac(secret, "ack", page_id, contact_id, expires)):
        return None
    return page_id, contact_id, datetime.fromtimestamp(min(expires, 32503680000), UTC)


def ack_link_until(settings: Settings) -> datetime:
    """When an ack link composed now stops working (`ACK_LINK_TTL_HOURS`), to the second, never later."""
    # Rounded down: the time the e-mail states (to the minute, also rounded down) is then never past the real end.
    return datetime.fromtimestamp(math.floor(time.time() + settings.ack_link_ttl), UTC)


def ack_url(settings: Settings, page_id: int, contact_id: int, until: datetime) -> str:
    token = ack_token(settings.secret_key, page_id, contact_id, int(until.timestamp()))
    return f"{settings.base_url}/ack/{token}"


def local_time(at: datetime) -> str:
    """A time as the e-mail and the ack page state it: Vietnam time, `HH:MM dd/mm/yyyy`."""
    return at.astimezone(LOCAL_TZ).strftime("%H:%M %d/%m/%Y")


def confirm_token(secret: str, contact_id: int) -> str:
    """The signed link a person follows to confirm their details."""
    return f"{contact_id}-{_mac(secret, 'confirm', contact_id)}"


def read_confirm_token(secret: str, token: str) -> int | None:
    head, _, mac = token.partition("-")
    if not head.isdigit() or not hmac.compare_digest(mac, _mac(secret, "confirm", int(head))):
        return None
    return int(head)


def confirm_url(settings: Settings, contact_id: int) -> str:
    return f"{settings.base_url}/directory/confirm/{confirm_token(settings.secret_key, contact_id)}"
