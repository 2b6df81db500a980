"""What a Telegram message says of an incident or a page: in the reader's language, cut down to the chat's TLP."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.telegram.settings import Settings
from incidents.base import utcnow
from incidents.enums import tlp_above
from incidents.models import Incident, Organisation
from notifiers import telegram as tg
from notifiers.registry import max_tlp as channel_max_tlp
from playbooks.models import Page

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"


class Views:
    """The renderer, the TLP a chat may read, the page and incident views, and signed buttons."""

    def __init__(self, settings: Settings, config: Mapping[str, Any]) -> None:
        self.settings = settings
        self.config = config

    def renderer(self, language: str | None) -> tg.Renderer:
        return tg.Renderer(TRANSLATIONS, language)

    def max_tlp(self, chat_id: int) -> str:
        configured = channel_max_tlp(self.config, tg.CHANNEL)
        if chat_id < 0 and tlp_above(configured, tg.GROUP_MAX_TLP):
            return tg.GROUP_MAX_TLP
        return configured

    def page_view(self, session: Session, page: Page, language: str) -> tg.PageView:
        incident = session.get(Incident, page.incident_id)
        system = incident.affected_system if incident is not None else None
        organisation = None
        if page.organisation_id is not None:
            org = session.get(Organisation, page.organisation_id)
            if org is not None:
                organisation = org.name_en if language == "en" and org.name_en else org.name_vi
        ask = (page.reason_en if language == "en" and page.reason_en else page.reason_vi) or None
        return self.view(incident, page_id=page.id, system=getattr(system, "name", None), organisation=organisation,
                         ask=ask)  # fmt: skip

    def view(self, incident: Incident, **extra: Any) -> tg.PageView:
        """What a message may say of an incident (the renderer cuts it down to the chat's TLP)."""
        return tg.PageView(**{
            "page_id": 0, "ref": incident.ref, "title": incident.title, "tlp": str(incident.tlp),
            "url": f"{self.settings.base_url}/incidents/{incident.id}",
            "category": str(incident.category) if incident.category else None,
            "priority": str(incident.priority) if incident.priority else None,
            "incident_class": str(incident.incident_class) if incident.incident_class else None,
            "exercise": bool(getattr(incident, "exercise", False)), **extra,
        })  # fmt: skip

    def buttons(self, page_id: int, chat_id: int, actions: tuple[str, ...] = tg.ACTIONS) -> dict[str, str]:
        secret, now = self.settings.callback_secret, utcnow()
        return {a: tg.sign_callback(secret, a, page_id, chat_id, now) for a in actions}
