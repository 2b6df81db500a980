"""The local outbox page, and the board's one notice of the channels this deployment has not configured."""

import re
from typing import Any

from flask import current_app

from app import db
from app.web import labels
from app.web.browser import bp, current_actor
from app.web.views import render, roles
from incidents.policy import Capability, allows, roles_with
from notifiers import outbox
from playbooks.kept_pages import kept_pages, unconfigured

DESK = roles_with(Capability.PAGE_BY_HAND)
# A kept page's acknowledgement link would acknowledge as its recipient: the desk reads the text, not the link.
_ACK_LINK = re.compile(r"https?://\S+/ack/\S+")


@bp.route("/outbox")
@roles(*DESK)
def outbox_page() -> Any:
    config = current_app.config
    rows = kept_pages(db.session(), actor=current_actor(), config=config)
    return render("outbox.html", rows=rows, hide_link=hide_link)


def hide_link(text: str | None) -> str:
    return _ACK_LINK.sub(str(labels.HIDDEN_LINK), text or "")


def notice() -> dict[str, Any] | None:
    """Which outward channels are not configured and where to set them; None when all are."""
    config = current_app.config
    missing = unconfigured(config)
    if not missing:
        return None
    return {
        "channels": [(labels.label(labels.CHANNEL, name), f"UCSC_{setting}") for name, setting in missing],
        "outbox": outbox.enabled(config),
        "may_read": allows(current_actor(), Capability.PAGE_BY_HAND),
    }
