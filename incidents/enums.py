"""Vocabularies of the incident domain; their values are the API's values."""

from enum import StrEnum


class Status(StrEnum):
    NEW = "new"
    TRIAGE = "triage"
    FIRST_RESPONSE = "first_response"
    CONTAINMENT = "containment"
    ERADICATION = "eradication"
    RECOVERY = "recovery"
    ASSESSMENT = "assessment"
    REVIEW = "review"
    CLOSED = "closed"
    REJECTED = "rejected"
    MERGED = "merged"


# An incident in one of these states is no longer worked on; dedup_key matches skip them.
TERMINAL_STATUSES = frozenset({Status.CLOSED, Status.REJECTED, Status.MERGED})


class Priority(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class IncidentClass(StrEnum):
    ORDINARY = "ordinary"
    SERIOUS = "serious"


class TLP(StrEnum):
    CLEAR = "clear"
    GREEN = "green"
    AMBER = "amber"
    AMBER_STRICT = "amber+strict"
    RED = "red"

    @classmethod
    def parse(cls, value: str) -> "TLP":
        """Accept the query-string spelling `amber_strict` beside `amber+strict`."""
        return cls(value.replace("_", "+"))


# From the widest audience to the narrowest: a level later here is stricter, and the stricter level wins.
TLP_ORDER = (TLP.CLEAR, TLP.GREEN, TLP.AMBER, TLP.AMBER_STRICT, TLP.RED)


def tlp_above(tlp: str, maximum: str) -> bool:
    """Whether `tlp` is stricter than `maximum` (an unknown level counts as stricter: it is withheld)."""
    return TLP_ORDER.index(str(tlp)) > TLP_ORDER.index(maximum) if str(tlp) in TLP_ORDER else True


class Category(StrEnum):
    DOS = "dos"
    PHISHING = "phishing"
    MALWARE = "malware"
    UNAUTHORIZED_ACCESS = "unauthorized_access"
    DEFACEMENT = "defacement"
    RANSOMWARE = "ransomware"
    DESTRUCTION = "destruction"
    DATA_THEFT = "data_theft"
    COMBINED = "combined"
    OTHER = "other"


# Each category's name, the one table every page, message and form reads: the Vietnamese is the row of Circular 20's
# Form 05 (domain.md), the English its translation. Names are data here, not catalogue entries, so that the legal
# wording cannot drift between the web, Telegram, e-mail and the reports.
CATEGORY_NAMES: dict[str, tuple[str, str]] = {
    Category.DOS: ("Từ chối dịch vụ", "Denial of service (DoS/DDoS)"),
    Category.PHISHING: ("Tấn công giả mạo", "Spoofing / phishing"),
    Category.MALWARE: ("Tấn công sử dụng mã độc", "Malware"),
    Category.UNAUTHORIZED_ACCESS: ("Truy cập trái phép, chiếm quyền điều khiển", "Unauthorised access, takeover"),
    Category.DEFACEMENT: ("Thay đổi giao diện", "Defacement"),
    Category.RANSOMWARE: ("Mã hóa phần mềm, dữ liệu, thiết bị", "Ransomware, encryption"),
    Category.DESTRUCTION: ("Phá hoại thông tin, dữ liệu, phần mềm", "Destruction of data or software"),
    Category.DATA_THEFT: ("Nghe trộm, gián điệp, lấy cắp thông tin, dữ liệu", "Eavesdropping, data theft"),
    Category.COMBINED: ("Tấn công tổng hợp sử dụng kết hợp nhiều hình thức", "Combined multi-vector attack"),
    Category.OTHER: ("Các hình thức tấn công khác", "Other attack"),
}


def category_name(category: str, language: str) -> str:
    """A category's name in `language` ("en", else Vietnamese); an unknown code is shown as it is."""
    names = CATEGORY_NAMES.get(str(category))
    if names is None:
        return str(category)
    return names[1] if language == "en" else names[0]


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    RESPONDER = "responder"
    COMMITTEE = "committee"
    INTAKE = "intake"


class DetectionMethod(StrEnum):
    """Form 03's detection methods: IDS, log review, notified by someone, other."""

    IDS = "ids"
    LOG_REVIEW = "log_review"
    NOTIFIED = "notified"
    OTHER = "other"


class NotifiedParty(StrEnum):
    """Form 03's "already notified" (network member, ISP, national coordinator), and the owner and the specialised
    unit Decision 05 Art. 11.1.a asks to be notified with the coordinator."""

    NETWORK_MEMBER = "network_member"
    ISP = "isp"
    NATIONAL_COORDINATOR = "national_coordinator"
    OWNER = "owner"
    SPECIALISED_UNIT = "specialised_unit"


class ObservableType(StrEnum):
    IPV4 = "ipv4-addr"
    IPV6 = "ipv6-addr"
    DOMAIN = "domain-name"
    URL = "url"
    EMAIL = "email-addr"
    FILE = "file"


class SeriousCondition(StrEnum):
    """Decision 05 Art. 9's impact conditions (a)–(đ)."""

    SERVICE_INTERRUPTION = "service_interruption"
    STATE_SECRETS = "state_secrets"
    DATA_INTEGRITY = "data_integrity"
    LOSS_OF_CONTROL = "loss_of_control"
    SPREAD = "spread"


class ParticipantRole(StrEnum):
    LEAD = "lead"
    MEMBER = "member"
    OBSERVER = "observer"
    REPORTER = "reporter"
