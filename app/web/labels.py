"""Localised labels of the API's vocabularies, and time formatting in Asia/Ho_Chi_Minh."""

import re
from datetime import datetime
from typing import Any

from flask_babel import LazyString, format_datetime, get_locale
from flask_babel import lazy_gettext as _l

from incidents.enums import CATEGORY_NAMES, category_name

# The procedure's words: an incident is first received (tiếp nhận), then verified and classified.
STATUS = {
    "new": _l("Received"),
    "triage": _l("Verification and classification"),
    "first_response": _l("First response"),
    "containment": _l("Containment"),
    "eradication": _l("Eradication"),
    "recovery": _l("Recovery"),
    "assessment": _l("System check"),
    "review": _l("Review and lessons learned"),
    "closed": _l("Closed"),
    "rejected": _l("Not an incident"),
    "merged": _l("Duplicate"),
}
# What the button that moves an incident to each status says.
ACTION = {
    "triage": _l("Start verification"),
    "first_response": _l("Start first response"),
    "containment": _l("Move to containment"),
    "eradication": _l("Move to eradication"),
    "recovery": _l("Move to recovery"),
    "assessment": _l("Check the system"),
    "review": _l("Move to review"),
    "closed": _l("Close the incident"),
    "rejected": _l("Reject: not an incident"),
    "merged": _l("Merge as duplicate"),
}
CATEGORY = {code: LazyString(lambda code=code: category_name(code, str(get_locale()))) for code in CATEGORY_NAMES}
PRIORITY = {"P1": _l("P1 critical"), "P2": _l("P2 high"), "P3": _l("P3 medium"), "P4": _l("P4 low")}
CLASS = {"ordinary": _l("Ordinary"), "serious": _l("Serious")}
TLP = {
    "clear": "TLP:CLEAR",
    "green": "TLP:GREEN",
    "amber": "TLP:AMBER",
    "amber+strict": "TLP:AMBER+STRICT",
    "red": "TLP:RED",
}
ROLE = {
    "admin": _l("Administrator"),
    "operator": _l("SOC operator"),
    "responder": _l("Responder"),
    "committee": _l("Steering board member"),
    "intake": _l("Intake client"),
}
DETECTION = {
    "ids": _l("Intrusion detection system"),
    "log_review": _l("Log review"),
    "notified": _l("Notified by someone"),
    "other": _l("Other"),
}
NOTIFIED = {
    "network_member": _l("Member of the response network"),
    "isp": _l("Internet service provider"),
    "national_coordinator": _l("National coordinator"),
    "owner": _l("Owner agency of the system"),
    "specialised_unit": _l("Specialised response unit"),
}
CONDITION = {
    "service_interruption": _l("(a) Service interruption"),
    "state_secrets": _l("(b) Possible disclosure of state secrets"),
    "data_integrity": _l("(c) Unrecoverable loss of integrity of important data"),
    "loss_of_control": _l("(d) Loss of control of the system"),
    "spread": _l("(đ) Likely to spread to other level 4–5 systems"),
}
PARTICIPANT = {"lead": _l("Lead"), "member": _l("Member"), "observer": _l("Observer"), "reporter": _l("Reporter")}
EVENT = {
    "incident.created": _l("Incident filed"),
    "incident.updated": _l("Details changed"),
    "incident.status_changed": _l("Status changed"),
    "incident.occurrence": _l("Reported again"),
    "incident.observables_added": _l("Indicators added"),
    "incident.attack_techniques_added": _l("ATT&CK techniques added"),
    "incident.classification_proposed": _l("Upgrade to serious proposed"),
    "incident.classification_decided": _l("Class decided"),
    "comment.created": _l("Comment"),
    "comment.edited": _l("Comment edited"),
    "incident.participant_added": _l("Participant added"),
    "incident.participant_removed": _l("Participant removed"),
    "playbook.started": _l("Playbook started"),
    "playbook.finished": _l("Playbook finished"),
    "playbook.stopped": _l("Playbook stopped"),
    "page.sent": _l("Paged"),
    "page.delivered": _l("Page delivered"),
    "page.failed": _l("Page failed"),
    "page.acknowledged": _l("Page acknowledged"),
    "page.escalated": _l("Escalated to the next tier"),
    "page.support_requested": _l("Support requested"),
    "digest.sent": _l("Digest sent"),
    "task.created": _l("Task created"),
    "task.completed": _l("Task done"),
    "direction.requested": _l("Direction requested"),
    "direction.answered": _l("Directive given"),
    "source.silent": _l("Alert source silent"),
    "source.returned": _l("Alert source back"),
    "source.resolved": _l("Sender reports the alert ended"),
    "source.suppressed": _l("Alert held by a maintenance window"),
    "source.message_rejected": _l("Mail refused"),
    "notify.sent": _l("Notified"),
    "telegram.undeliverable": _l("Telegram message undeliverable"),
    "incident.assigned": _l("Owner assigned"),
    "evidence.added": _l("Evidence added"),
    "report.created": _l("Report drawn up"),
    "report.periodic_due": _l("Periodic summary due"),
    "deadline.warning": _l("Deadline near"),
    "deadline.breached": _l("Deadline missed"),
    "task.assigned": _l("Task assigned"),
    "task.commented": _l("Task comment"),
    "task.reopened": _l("Task reopened"),
    "playbook.version_added": _l("Playbook version saved"),
    "system.saved": _l("System saved in the registry"),
    "contact.created": _l("Contact added"),
    "contact.updated": _l("Contact details changed"),
    "contact.confirmed": _l("Contact details confirmed"),
    "contact.erased": _l("Contact erased"),
    "contact.imported": _l("Contacts imported"),
    "contact.telegram_link_created": _l("Telegram link made for a contact"),
    "contact.telegram_linked": _l("Contact linked to Telegram"),
    "contact.telegram_unlinked": _l("Contact unlinked from Telegram"),
    "group.saved": _l("Contact group saved"),
    "schedule.saved": _l("On-call rota saved"),
    "schedule.override_added": _l("On-call swap added"),
    "directory.unconfirmed": _l("Focal points not confirmed"),
    "job.dead": _l("Background job gave up"),
}
# The directory's roles that playbooks page by name (playbooks/definitions, docs/playbooks.md).
CONTACT_ROLE = {
    "board.head": _l("Head of the steering board"),
    "board.deputy_head": _l("Deputy head of the steering board"),
    "working_group.leader": _l("Leader of the working group"),
    "standing_body.duty": _l("Standing body's duty officer"),
}
# How a page was acknowledged.
VIA = {
    "api": _l("through the API"),
    "web": _l("on the web"),
    "email": _l("by e-mail link"),
    "telegram": _l("on Telegram"),
    "sms": _l("by SMS"),
    "phone": _l("by phone"),
}
HIDDEN_LINK = _l("[acknowledgement link, for the recipient only]")
CHANNEL = {"email": _l("E-mail"), "telegram": "Telegram", "sms": "SMS", "webhook": "Webhook", "outbox": _l("Outbox")}
# Notes the code writes on events, in the reader's language; other code-written notes are shown as technical detail.
NOTES = {
    "no channel this deployment has reaches this person": _l("No channel configured here reaches this person"),
    "nobody to page: no active contact": _l("Nobody to page: no active contact"),
    "the page was cancelled": _l("The page was cancelled"),
}
# Kinds whose note the code writes (an error, a count); any other kind's note is a person's words.
CODE_NOTES = frozenset({"page.failed", "job.dead", "telegram.undeliverable", "source.resolved", "source.silent",
                        "report.created", "report.periodic_due", "directory.unconfirmed"})  # fmt: skip
PAGE_STATE = {
    "open": _l("Waiting for acknowledgement"),
    "acknowledged": _l("Acknowledged"),
    "cancelled": _l("Cancelled"),
}
RECIPIENT_STATE = {"paged": _l("paged"), "held": _l("held back"), "digested": _l("in a digest")}
RUN_STATE = {"running": _l("Running"), "waiting": _l("Waiting"), "done": _l("Finished"), "stopped": _l("Stopped")}
TASK_STATE = {"open": _l("Open"), "done": _l("Done")}
DIRECTION_STATE = {"open": _l("Waiting for direction"), "answered": _l("Answered")}
# Messages of the shared validation (incidents/schemas, the services): a pattern of the schema's English text and
# the message in the user's language, with the parts it quotes (a value, a number) carried over.
MESSAGES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(p), text)
    for p, text in (
        (r"^Field required", _l("Required")),
        (r"^String should have at least 1 character", _l("Must not be empty")),
        (r"^String should have at most (?P<n>\d+) character", _l("At most %(n)s characters")),
        (r"^at most (?P<n>\d+) characters", _l("At most %(n)s characters")),
        (r"^at most (?P<n>\d+) observables", _l("At most %(n)s indicators")),
        (r"^at most (?P<n>\d+) incidents per request", _l("At most %(n)s incidents at once")),
        (r"^String should match pattern", _l("Not in the expected form")),
        (r"^Input should be a valid integer", _l("Must be a whole number")),
        (r"^Input should be a valid boolean", _l("Must be yes or no")),
        (r"^Input should be (?:greater|less) than", _l("Out of range")),
        (r"^Input should be", _l("Not one of the allowed values")),
        (r"^not an e-mail address", _l("Not an e-mail address")),
        (r"^unknown field", _l("Unknown field")),
        (r"^timestamp must carry a zone offset", _l("Give a date and time")),
        (r"^timestamp out of range", _l("Date out of range")),
        (r"lies in the future$", _l("Lies in the future")),
        (r"lies before 1970$", _l("Lies before 1970")),
        (r"^not an IP address: (?P<value>.*)$", _l("Not an IP address: %(value)s")),
        (r"^not a domain name: (?P<value>.*)$", _l("Not a domain name: %(value)s")),
        (r"^not a URL: (?P<value>.*)$", _l("Not a URL: %(value)s")),
        (r"^a URL needs a scheme", _l("A URL needs a scheme (http, https, ftp, ws) and a host")),
        (r"^(?P<value>.*) is not an? [a-z0-9-]+ value$", _l("Not a valid value: %(value)s")),
        (r"^a file observable needs at least one hash", _l("A file needs at least one hash")),
        (r"^hashes are only allowed on file observables", _l("Only a file has hashes")),
        (r"^unknown hash algorithm", _l("Unknown hash algorithm: use MD5, SHA-1, SHA-256 or SHA-512")),
        (r"^(?P<value>\S+) must be (?P<n>\d+) hexadecimal", _l("%(value)s must be %(n)s hexadecimal characters")),
        (r"^must not contain the NUL character", _l("Must not contain the NUL character")),
        (r"^give exactly one of user or organisation", _l("Give either an account or an organisation")),
        (r"^give at least one field to change", _l("Change at least one field")),
        (r"cannot be null$", _l("Must not be empty")),
        (r"^no organisation (?P<value>.*)$", _l("No such organisation: %(value)s")),
        (r"^no system (?P<value>.*) in the registry$", _l("No such system in the registry: %(value)s")),
        (r"^no user (?P<value>.*)$", _l("No such account: %(value)s")),
        (r"^no such account", _l("No such account")),
        (r"^must be later than since", _l("Must be later than the start")),
    )
]  # fmt: skip
# The form's fields by name, for the list of errors above a form (a numbered list's items name their number).
FIELD = {
    "title": _l("Title"),
    "description": _l("Brief description"),
    "category": _l("Type of attack"),
    "priority": _l("Priority"),
    "tlp": _l("Confidentiality (TLP)"),
    "detected_at": _l("Detected at (local time)"),
    "detection_method": _l("Detection method"),
    "detection_detail": _l("Detection details (notified by whom, which tool)"),
    "affected_system": _l("Affected system"),
    "system_os": _l("Operating system"),
    "system_services": _l("Services running on the system"),
    "security_measures": _l("Security measures in place"),
    "support_requested": _l("Support requested"),
    "notified_parties": _l("Parties notified"),
    "handled_at_report": _l("Handled at the time of the report"),
    "beyond_capacity": _l("Beyond our capacity"),
    "exercise": _l("Exercise"),
    "reporter": _l("Reporter"),
    "contact": _l("Contact person"),
    "name": _l("Name"),
    "organisation": _l("Organisation"),
    "address": _l("Address"),
    "phone": _l("Telephone"),
    "email": _l("E-mail"),
    "position": _l("Position"),
    "observables": _l("Indicator"),
    "type": _l("Type"),
    "value": _l("Value"),
    "hashes": _l("Hashes"),
    "body": _l("Comment"),
    "assignee": _l("Owner"),
    "user": _l("Account"),
    "role": _l("Role"),
    "merged_into": _l("Duplicate of"),
    "note": _l("Note"),
}
OBSERVABLE_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr", "file")


def label(table: dict[str, Any], value: Any) -> str:
    if value is None:
        return "—"
    return str(table.get(str(value), value))


def event(ev: Any) -> str:
    """What an event records; a page kept in the local outbox was not delivered to anyone, and says so."""
    data = getattr(ev, "data", None) or {}
    if ev.kind == "page.delivered" and data.get("channel") == "outbox":
        return str(_l("Page kept in the outbox"))
    return label(EVENT, ev.kind)


def actor(name: str | None, runs: Any = ()) -> str:
    """Who did it: a person's name as is, the system, or a playbook by its title (from `runs` when given)."""
    if not name:
        return "—"
    if name == "system":
        return str(_l("System"))
    if name.startswith("playbook:"):
        playbook = name.removeprefix("playbook:")
        for run in runs or ():
            version = getattr(run, "version", None)
            if version is not None and getattr(version, "name", None) == playbook:
                return str(_l("Playbook “%(title)s”", title=localised(version.title_vi, version.title_en)))
        return str(_l("Playbook “%(title)s”", title=playbook))
    return name


def note(kind: str, text: str | None) -> tuple[str, str]:
    """(a sentence in the reader's language, technical detail) for an event's note."""
    if not text:
        return "", ""
    if kind not in CODE_NOTES:
        return text, ""
    known = NOTES.get(text)
    if known is not None:
        return str(known), ""
    return "", text


def target(page: Any) -> str:
    """Whom a page was for: a directory role by its label, else the name the page recorded."""
    kind = getattr(page, "target_kind", None)
    if kind == "role":
        return label(CONTACT_ROLE, page.target)
    if kind in ("organisation", "system_operator") and page.target in _organisation_names():
        return organisation(page.target)
    return str(getattr(page, "target_label", "") or "—")


def english() -> bool:
    locale = get_locale()
    return locale is not None and locale.language == "en"


def localised(vi: str | None, en: str | None) -> str:
    """The English text on an English page when there is one, else the Vietnamese."""
    return (en if english() and en else vi) or ""


def organisation(value: Any) -> str:
    """An organisation (a row, or its code) by its name in the reader's language; no organisation says so."""
    if value is None or value == "unknown":
        return str(_l("No organisation"))
    if isinstance(value, str):
        names = _organisation_names()
        found = names.get(value)
        return localised(*found) if found else value
    return localised(value.name_vi, value.name_en)


def _organisation_names() -> dict[str, tuple[str, str | None]]:
    """Code -> (Vietnamese, English) names, read once per request."""
    from flask import g
    from sqlalchemy import select

    from app import db
    from incidents.models import Organisation

    names = g.get("ucsc_organisation_names")
    if names is None:
        rows = db.session().execute(select(Organisation.code, Organisation.name_vi, Organisation.name_en))
        names = {code: (vi, en) for code, vi, en in rows}
        g.ucsc_organisation_names = names
    return names


def message(text: str) -> str:
    """A validation message in the user's language when the catalogue has it, else as the schema wrote it."""
    for pattern, translated in MESSAGES:
        found = pattern.search(text)
        if found:
            return str(translated) % found.groupdict() if found.groupdict() else str(translated)
    return text


def field(path: str) -> str:
    """A field path of a form (`reporter.email`, `observables[0].value`) in the user's words."""
    parts = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        text = label(FIELD, name)
        parts.append(f"{text} {int(index.rstrip(']')) + 1}" if index.rstrip("]").isdigit() else text)
    return " › ".join(parts)


def localtime(value: datetime | None, style: str = "short") -> str:
    """A timestamp in Asia/Ho_Chi_Minh (BABEL_DEFAULT_TIMEZONE), in the user's locale."""
    if value is None:
        return "—"
    return format_datetime(value, "dd/MM/yyyy HH:mm" if style == "short" else "dd/MM/yyyy HH:mm:ss")


def iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""
