"""What paging sends: a page in the contact's language, a digest of held pages, a request to confirm details.

A page's sentences are English message ids translated through the `paging` Babel catalogue
(`playbooks/translations/<language>/LC_MESSAGES/paging.po`, compiled to `.mo`), the mechanism the Telegram
renderer uses for its own catalogue. A Vietnamese page ends with a short English summary, and its drill and
repeat marks stay readable in both languages, for the responders who do not read Vietnamese.
"""

from collections.abc import Callable
from functools import cache
from pathlib import Path

from babel.support import NullTranslations, Translations

from incidents.enums import category_name, tlp_above
from incidents.models import Incident, System
from notifiers.base import Message
from notifiers.telegram import CLASS_LABELS
from playbooks.links import ack_link_until, ack_url, confirm_url, local_time
from playbooks.models import Contact, Page
from playbooks.settings import Settings

CATALOGUES = Path(__file__).resolve().parent / "translations"
DOMAIN = "paging"


def _(message: str) -> str:
    """Mark a message id for the catalogue; it is translated where it is used."""
    return message


DRILL = _("[DRILL]")
REPEAT = _("repeat")
SUBJECT = _("[%(ref)s] Page: %(title)s%(again)s")
PAGED = _("You are paged for incident %(ref)s.")
TITLE = _("Title: %(title)s")
FACTS = _("Category: %(category)s · priority %(priority)s · class %(class)s")
SYSTEM = _("System: %(system)s")
RESTRICTED = _("TLP:%(tlp)s: open the link to read the incident.")
ASKED = _("Asked of you: %(reason)s")
OCCURRENCES = _("Occurrences so far: %(count)s")
ACKNOWLEDGE = _("Acknowledge (confirm on the page that opens): %(link)s")
UNTIL = _("The link works until %(time)s (Vietnam time).")


@cache
def catalogue(language: str) -> NullTranslations:
    """The `paging` catalogue of `language`; English, the message ids' own language, needs none."""
    return Translations.load(str(CATALOGUES), [language], domain=DOMAIN)


def _page_lines(t: Callable[[str], str], incident: Incident, page: Page, reason: str | None, link: str, until: str,
                *, drill: str, restricted: bool, language: str) -> list[str]:  # fmt: skip
    system: System | None = incident.affected_system
    tlp = str(incident.tlp).upper()
    # Category and class by their names in the page's language, as the Telegram renderer shows them, not as codes.
    category, incident_class = str(incident.category), str(incident.incident_class)
    facts = {
        "category": category_name(category, language),
        "priority": incident.priority,
        "class": t(CLASS_LABELS.get(incident_class, incident_class)),
    }
    return [
        f"{drill} {t(PAGED) % {'ref': incident.ref}}".strip(),
        *(
            [
                t(TITLE) % {"title": incident.title},
                t(FACTS) % facts,
                t(SYSTEM) % {"system": system.name if system else "-"},
            ]
            if not restricted
            else [t(RESTRICTED) % {"tlp": tlp}]
        ),
        *([t(ASKED) % {"reason": reason}] if reason and not restricted else []),
        t(OCCURRENCES) % {"count": page.occurrences} if page.occurrences > 1 else "",
        t(ACKNOWLEDGE) % {"link": link},
        t(UNTIL) % {"time": until},
    ]


def compose(page: Page, incident: Incident, contact: Contact, channel: str, wave: int, settings: Settings) -> Message:
    """The page in the contact's language; above the channel's TLP only the reference and the link."""
    until = ack_link_until(settings)
    link = ack_url(settings, page.id, contact.id, until)
    en = contact.language == "en"
    t = catalogue("en" if en else "vi").gettext
    drill = "" if not incident.exercise else t(DRILL) if en else f"{t(DRILL)} {DRILL}"
    restricted = tlp_above(incident.tlp, settings.max_tlp.get(channel, "green"))
    title = "" if restricted else incident.title
    reason = (page.reason_en or page.reason_vi) if en else page.reason_vi
    again = "" if not wave else f" ({t(REPEAT)})" if en else f" ({t(REPEAT)} / {REPEAT})"
    shown = title or "TLP:" + str(incident.tlp).upper()
    subject = f"{drill} {t(SUBJECT) % {'ref': incident.ref, 'title': shown, 'again': again}}".strip()
    lines = _page_lines(t, incident, page, reason, link, local_time(until), drill=drill, restricted=restricted,
                        language="en" if en else "vi")  # fmt: skip
    if not en:
        summary = f"{DRILL + ' ' if incident.exercise else ''}Page for incident {incident.ref}. Acknowledge: {link}"
        lines += ["", summary, UNTIL % {"time": local_time(until)}]
    text = "\n".join(lines)
    if channel == "sms":
        text = f"{drill} {incident.ref} P{str(incident.priority)[-1]} {title[:80]} {link}".strip()
    data = {
        "type": "page",
        "page_id": page.id,
        "wave": wave,
        "incident": {
            "id": incident.id,
            "ref": incident.ref,
            "status": str(incident.status),
            "tlp": str(incident.tlp),
            "exercise": incident.exercise,
            **(
                {}
                if restricted
                else {"title": incident.title, "category": str(incident.category), "priority": str(incident.priority)}
            ),
        },
        "reason": None if restricted else reason,
        "ack_url": link,
        "incident_url": f"{settings.base_url}/api/v1/incidents/{incident.id}",
        "drill": incident.exercise,
    }
    return Message(
        to="",
        subject=subject,
        text=text,
        key=f"page.{page.id}.{contact.id}.{wave}",
        data=data,
        secret=contact.webhook_secret,
    )


def digest_item(incident: Incident, link: str, settings: Settings) -> str:
    """One held page in a digest: its incident (the title only where e-mail may carry it) and its ack link."""
    shown = incident.title if not tlp_above(incident.tlp, settings.max_tlp.get("email", "amber")) else "TLP"
    drill = f"{catalogue('vi').gettext(DRILL)} " if incident.exercise else ""
    return f"- {drill}{incident.ref} ({incident.priority}) {shown}: {link}"


def digest(items: list[str], refs: set[str], until: str, settings: Settings) -> tuple[str, str]:
    """(subject, text) of the digest that carries the pages the storm limit held back from one person."""
    text = (
        f"Tổng hợp {len(items)} lần gọi trực bị gộp (vượt {settings.rate_limit} lần trong "
        f"{int(settings.rate_window // 60)} phút) / Digest of {len(items)} held pages:\n"
        + "\n".join([*items, f"Đường dẫn có hiệu lực đến / Links work until {until} (giờ Việt Nam)."])
    )
    subject = f"[{len(items)}] Tổng hợp gọi trực / Page digest: {', '.join(sorted(refs))[:150]}"
    return subject, text


def confirm_request(contact: Contact, settings: Settings) -> tuple[str, str, str]:
    """(subject, text, link) asking a person whether the directory still reaches them."""
    link = confirm_url(settings, contact.id)
    text = (
        f"Ban Chỉ đạo ứng cứu sự cố: đề nghị đồng chí {contact.name} xác nhận thông tin liên lạc "
        f"(điện thoại {contact.phone or '-'}, e-mail {contact.email or '-'}) vẫn đúng: {link}\n"
        f"The steering board asks you to confirm your contact details are still right: {link}"
    )
    return "Xác nhận thông tin đầu mối / Are these still your details?", text, link
