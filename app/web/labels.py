"""Localised labels of the API's vocabularies, and time formatting in Asia/Ho_Chi_Minh."""

from datetime import datetime
from typing import Any

from flask_babel import format_datetime
from flask_babel import lazy_gettext as _l

STATUS = {
    "new": _l("New"),
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
CATEGORY = {
    "dos": _l("Denial of service (DoS/DDoS)"),
    "phishing": _l("Spoofing / phishing"),
    "malware": _l("Malware"),
    "unauthorized_access": _l("Unauthorised access, takeover"),
    "defacement": _l("Defacement"),
    "ransomware": _l("Ransomware, encryption"),
    "destruction": _l("Destruction of data or software"),
    "data_theft": _l("Eavesdropping, data theft"),
    "combined": _l("Combined multi-vector attack"),
    "other": _l("Other attack"),
}
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
}
PAGE_STATE = {
    "open": _l("Waiting for acknowledgement"),
    "acknowledged": _l("Acknowledged"),
    "cancelled": _l("Cancelled"),
}
RECIPIENT_STATE = {"paged": _l("paged"), "held": _l("held back"), "digested": _l("in a digest")}
RUN_STATE = {"running": _l("Running"), "waiting": _l("Waiting"), "done": _l("Finished"), "stopped": _l("Stopped")}
TASK_STATE = {"open": _l("Open"), "done": _l("Done")}
DIRECTION_STATE = {"open": _l("Waiting for direction"), "answered": _l("Answered")}
# Messages of the shared validation (incidents/schemas.py) that the form shows in the user's language.
MESSAGES = {
    "Field required": _l("Required"),
    "String should have at least 1 character": _l("Must not be empty"),
    "not an e-mail address": _l("Not an e-mail address"),
    "unknown field": _l("Unknown field"),
    "timestamp must carry a zone offset (RFC 3339)": _l("Give a date and time"),
}
OBSERVABLE_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr", "file")


def label(table: dict[str, Any], value: Any) -> str:
    if value is None:
        return "—"
    return str(table.get(str(value), value))


def message(text: str) -> str:
    """A validation message in the user's language when the catalogue has it, else as the schema wrote it."""
    for prefix, translated in MESSAGES.items():
        if text.startswith(prefix):
            return str(translated)
    return text


def localtime(value: datetime | None, style: str = "short") -> str:
    """A timestamp in Asia/Ho_Chi_Minh (BABEL_DEFAULT_TIMEZONE), in the user's locale."""
    if value is None:
        return "—"
    return format_datetime(value, "dd/MM/yyyy HH:mm" if style == "short" else "dd/MM/yyyy HH:mm:ss")


def iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""
