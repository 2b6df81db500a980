"""The STIX 2.1 mapping of an incident, built with the stix2 library (objects, patterns, markings, extension)."""

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stix2
from stix2 import (
    URL,
    AttackPattern,
    CustomExtension,
    DomainName,
    EmailAddress,
    EqualityComparisonExpression,
    ExternalReference,
    File,
    HashConstant,
    Identity,
    Incident,
    Indicator,
    IPv4Address,
    IPv6Address,
    MarkingDefinition,
    ObjectPath,
    ObservationExpression,
    OrBooleanExpression,
    Relationship,
    Report,
    Sighting,
    StringConstant,
)
from stix2.properties import EnumProperty, IntegerProperty, ListProperty, OpenVocabProperty, StringProperty

from incidents.enums import TLP, Category, DetectionMethod, Priority, Status

INCIDENT_CORE = "extension-definition--ef765651-680c-498d-9894-99799f2fa126"
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_CREATED = "2022-10-01T00:00:00.000Z"

# The OASIS TLP 2.0 marking definitions (cti-stix-common-objects): fixed ids, never minted by us.
TLP_MARKING_IDS: dict[str, str] = {
    TLP.CLEAR: "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    TLP.GREEN: "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    TLP.AMBER: "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    TLP.AMBER_STRICT: "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    TLP.RED: "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
# TLP 1.0 ids of the STIX 2.1 specification (stix2.TLP_*), as MISP and OpenCTI often send them.
TLP1_MARKING_IDS: dict[str, str] = {
    stix2.TLP_WHITE.id: TLP.CLEAR,
    stix2.TLP_GREEN.id: TLP.GREEN,
    stix2.TLP_AMBER.id: TLP.AMBER,
    stix2.TLP_RED.id: TLP.RED,
}
TLP_OF_MARKING: dict[str, str] = {**{v: k for k, v in TLP_MARKING_IDS.items()}, **TLP1_MARKING_IDS}


@CustomExtension(
    INCIDENT_CORE,
    [
        (
            "determination",
            EnumProperty(["blocked", "confirmed", "failed-attempt", "false-positive", "suspected"], required=True),
        ),
        ("investigation_status", OpenVocabProperty(["closed", "new", "open"], required=True)),
        ("criticality", IntegerProperty(min=0, max=100)),
        ("detection_methods", ListProperty(StringProperty)),
        ("incident_types", ListProperty(StringProperty)),
        ("recoverability", EnumProperty(["extended", "not-applicable", "not-recoverable", "regular", "supplemented"])),
    ],
)
class IncidentCoreExt:
    """The OASIS Incident Core Extension, registered once so stix2 refuses bad values in it."""

    extension_type = "property-extension"


def tlp_marking(level: str) -> MarkingDefinition:
    """The OASIS TLP 2.0 marking definition of `level`."""
    name = "TLP:" + str(level).upper()
    return MarkingDefinition(
        id=TLP_MARKING_IDS[TLP(level)],
        created=TLP2_CREATED,
        name=name,
        extensions={TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": str(level)}},
    )


def marked(obj: dict[str, Any], level: str) -> dict[str, Any]:
    """A JSON object with its TLP markings replaced by `level` (other markings kept)."""
    others = [m for m in obj.get("object_marking_refs") or [] if m not in TLP_OF_MARKING]
    return {**obj, "object_marking_refs": [*others, TLP_MARKING_IDS[TLP(level)]]}


# Appendix B of the Incident Core Extension: criticality 0–100; our priorities sit in its bands.
CRITICALITY = {Priority.P1: 90, Priority.P2: 70, Priority.P3: 50, Priority.P4: 25}
OPENCTI_SEVERITY = {Priority.P1: "critical", Priority.P2: "high", Priority.P3: "medium", Priority.P4: "low"}
INCIDENT_TYPES = {
    Category.DOS: "denial-of-service",
    Category.PHISHING: "phishing",
    Category.MALWARE: "malware",
    Category.UNAUTHORIZED_ACCESS: "unauthorized-access",
    Category.DEFACEMENT: "defacement",
    Category.RANSOMWARE: "ransomware",
    Category.DESTRUCTION: "destruction",
    Category.DATA_THEFT: "data-exfiltration",
    Category.COMBINED: "multiple",
    Category.OTHER: "other",
}
CATEGORY_OF_TYPE = {v: k for k, v in INCIDENT_TYPES.items()}
OPENCTI_INCIDENT_TYPE = {
    Category.RANSOMWARE: "ransomware",
    Category.PHISHING: "phishing",
    Category.DATA_THEFT: "data-leak",
    Category.DEFACEMENT: "reputation-damage",
    Category.DOS: "information-system-disruption",
    Category.DESTRUCTION: "information-system-disruption",
    Category.UNAUTHORIZED_ACCESS: "compromise",
}
DETECTION_METHODS = {
    DetectionMethod.IDS: "automated-tool",
    DetectionMethod.LOG_REVIEW: "log-review",
    DetectionMethod.NOTIFIED: "external-notification",
    DetectionMethod.OTHER: "other",
}


def determination(status: str) -> str:
    if status == Status.REJECTED:
        return "false-positive"
    if status in (Status.NEW, Status.TRIAGE):
        return "suspected"
    return "confirmed"


def investigation_status(status: str) -> str:
    if status == Status.NEW:
        return "new"
    if status in (Status.CLOSED, Status.REJECTED, Status.MERGED):
        return "closed"
    return "open"


@dataclass(frozen=True)
class ObservableView:
    """What the mapping needs of an observable."""

    type: str
    value: str
    hashes: dict[str, str] | None = None

    @property
    def key(self) -> str:
        if self.type == "file" and self.hashes:
            digest = ",".join(f"{k}={v}" for k, v in sorted(self.hashes.items()))
            return f"file:{self.value}:{digest}"
        return f"{self.type}:{self.value}"


@dataclass(frozen=True)
class IncidentView:
    """The STIX-visible state of an incident; nothing else may make a new version."""

    id: int
    ref: str
    title: str
    description: str
    category: str
    priority: str
    status: str
    tlp: str
    created_at: datetime
    detected_at: datetime
    detection_method: str | None
    reporter_organisation: str | None
    affected_organisation: str | None
    observables: tuple[ObservableView, ...]
    url: str
    techniques: tuple[str, ...] = ()  # MITRE ATT&CK technique ids, in the order they were added


# A MITRE ATT&CK (sub-)technique id: T1566, T1566.001.
ATTACK_TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?")


def attack_url(technique: str) -> str:
    """The technique's page on attack.mitre.org (sub-techniques: T1566/001)."""
    return "https://attack.mitre.org/techniques/" + technique.replace(".", "/") + "/"


def sco(obs: ObservableView, marking: str) -> Any:
    """The cyber-observable of an observable; stix2 gives it a deterministic UUIDv5 id."""
    refs = [marking]
    match obs.type:
        case "ipv4-addr":
            return IPv4Address(value=obs.value, object_marking_refs=refs)
        case "ipv6-addr":
            return IPv6Address(value=obs.value, object_marking_refs=refs)
        case "domain-name":
            return DomainName(value=obs.value, object_marking_refs=refs)
        case "url":
            return URL(value=obs.value, object_marking_refs=refs)
        case "email-addr":
            return EmailAddress(value=obs.value, object_marking_refs=refs)
        case "file":
            return File(name=obs.value, hashes=obs.hashes or {}, object_marking_refs=refs)
    raise ValueError(f"no STIX mapping for observable type {obs.type!r}")


def pattern(obs: ObservableView) -> str:
    """The indicator pattern of an observable, built with stix2's expression classes (values escaped)."""
    if obs.type == "file":
        comparisons = [
            EqualityComparisonExpression(ObjectPath("file", ["hashes", algo]), HashConstant(digest, algo))
            for algo, digest in sorted((obs.hashes or {}).items())
        ]
        expression = comparisons[0] if len(comparisons) == 1 else OrBooleanExpression(comparisons)
        return str(ObservationExpression(expression))
    return str(
        ObservationExpression(EqualityComparisonExpression(ObjectPath(obs.type, ["value"]), StringConstant(obs.value)))
    )


def object_uuid(*parts: str) -> str:
    """A fresh random UUIDv4 for a new SDO (stored once, never derived again)."""
    del parts
    return str(uuid.uuid4())


def bundle_id_of(objects: str) -> str:
    """A bundle id fixed by its content, shaped as a UUIDv4, so a re-export of the same objects is identical."""
    raw = bytearray(hashlib.sha256(objects.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return f"bundle--{uuid.UUID(bytes=bytes(raw))}"


@dataclass
class Planned:
    """One object the mapping wants stored: its projector key, and whether it is shared between incidents."""

    key: str
    obj: Any
    shared: bool = False
    body: str = ""


class Ids:
    """Ids and first timestamps already stored for an incident's objects, so none is minted twice."""

    def __init__(self, known: dict[str, tuple[str, datetime | None]]) -> None:
        self.known = known

    def get(self, key: str, prefix: str) -> tuple[str, datetime | None]:
        if key not in self.known:
            self.known[key] = (f"{prefix}--{object_uuid()}", None)
        return self.known[key]


def stamp(value: datetime) -> str:
    """A STIX timestamp at millisecond precision."""
    return stix2.utils.format_datetime(stix2.utils.STIXdatetime(value, precision="millisecond"))


def plan(view: IncidentView, ids: Ids, board_id: str, created: datetime) -> list[Planned]:
    """The incident's graph: identities, incident, observables, indicators, sightings, relationships, report.

    Every SDO gets `created` (its first version) from `ids` or `created`; `modified` equals `created` here and is
    moved by the projector only when the serialised object differs from the stored one.
    """
    marking = TLP_MARKING_IDS[TLP(view.tlp)]
    common = {"created_by_ref": board_id, "object_marking_refs": [marking]}
    planned: list[Planned] = []

    def sdo(key: str, cls: type, **props: Any) -> Any:
        stix_id, first = ids.get(key, cls._type)
        at = stamp(first or created)
        obj = cls(id=stix_id, created=at, modified=at, **common, **props)
        planned.append(Planned(key, obj))
        return obj

    def identity(name: str | None, identity_class: str) -> Any:
        if not name:
            return None
        # Shared per TLP level: one organisation keeps one id at each level it is seen at.
        key = f"identity:{view.tlp}:{name}"
        already = next((p.obj for p in planned if p.key == key), None)
        if already is not None:
            return already
        stix_id, first = ids.get(key, "identity")
        at = stamp(first or created)
        obj = Identity(id=stix_id, created=at, modified=at, name=name, identity_class=identity_class, **common)
        planned.append(Planned(key, obj, shared=True))
        return obj

    reporter = identity(view.reporter_organisation, "organization")
    affected = identity(view.affected_organisation, "organization")
    ext = IncidentCoreExt(
        determination=determination(view.status),
        investigation_status=investigation_status(view.status),
        criticality=CRITICALITY[Priority(view.priority)],
        incident_types=[INCIDENT_TYPES[Category(view.category)]],
        detection_methods=[DETECTION_METHODS[DetectionMethod(view.detection_method)]] if view.detection_method else [],
    )
    incident = sdo(
        "incident",
        Incident,
        name=f"{view.ref} {view.title}",
        description=view.description or view.title,
        labels=[f"priority:{view.priority}", f"status:{view.status}", f"category:{view.category}"],
        external_references=[ExternalReference(source_name="ucsc", external_id=view.ref, url=view.url)],
        extensions={INCIDENT_CORE: ext},
    )
    if affected is not None:
        sdo(
            "rel:targets:affected",
            Relationship,
            relationship_type="targets",
            source_ref=incident.id,
            target_ref=affected.id,
        )
    for technique in view.techniques:
        # The id is the name: the ATT&CK catalogue is not shipped; consumers (MISP, OpenCTI) match on external_id.
        attack = sdo(
            f"attack-pattern:{technique}",
            AttackPattern,
            name=technique,
            external_references=[
                ExternalReference(source_name="mitre-attack", external_id=technique, url=attack_url(technique))
            ],
        )
        sdo(
            f"rel:uses:{technique}",
            Relationship,
            relationship_type="uses",
            source_ref=incident.id,
            target_ref=attack.id,
        )
    sighted_by = (reporter or affected).id if (reporter or affected) else board_id
    first_seen = stamp(view.detected_at)
    for obs in view.observables:
        observable = sco(obs, marking)
        planned.append(Planned(f"sco:{obs.key}", observable, shared=True))
        indicator = sdo(
            f"indicator:{obs.key}",
            Indicator,
            name=f"{obs.type} {obs.value}",
            description=f"Seen in {view.ref}",
            pattern=pattern(obs),
            pattern_type="stix",
            valid_from=first_seen,
            indicator_types=["malicious-activity"],
        )
        sdo(
            f"rel:indicates:{obs.key}",
            Relationship,
            relationship_type="indicates",
            source_ref=indicator.id,
            target_ref=incident.id,
        )
        sdo(
            f"rel:based-on:{obs.key}",
            Relationship,
            relationship_type="based-on",
            source_ref=indicator.id,
            target_ref=observable.id,
        )
        sdo(
            f"sighting:{obs.key}",
            Sighting,
            sighting_of_ref=indicator.id,
            where_sighted_refs=[sighted_by],
            first_seen=first_seen,
        )
    refs = [p.obj.id for p in planned]
    sdo(
        "report",
        Report,
        name=f"{view.ref} {view.title}",
        description=view.description or view.title,
        published=stamp(view.created_at),
        report_types=["threat-report"],
        object_refs=refs,
    )
    return planned


def new_version(obj: Any, modified: datetime) -> Any:
    """The same object, `modified` moved (stix2 keeps the id and `created`)."""
    return obj.new_version(modified=stamp(modified) if not isinstance(modified, str) else modified)


def serialise(obj: Any) -> str:
    return obj.serialize(ensure_ascii=False)


def board_identity(stix_id: str, created: datetime, name: str) -> Identity:
    at = stamp(created)
    return Identity(
        id=stix_id,
        created=at,
        modified=at,
        name=name,
        identity_class="organization",
        sectors=["government-regional"],
        object_marking_refs=[TLP_MARKING_IDS[TLP.CLEAR]],
    )


def opencti_profile(body: dict[str, Any], priority: str, category: str, detected_at: str) -> str:
    """OpenCTI's top-level incident fields (severity is reserved in STIX 2.1: the strict validator refuses it)."""
    obj = stix2.parse(body, allow_custom=True)
    extra = {
        "severity": OPENCTI_SEVERITY[Priority(priority)],
        "incident_type": OPENCTI_INCIDENT_TYPE.get(Category(category), "alert"),
        "source": "UCSC",
        "first_seen": detected_at,
    }
    return serialise(stix2.Incident(**dict(obj), custom_properties=extra, allow_custom=True))


MILLI = timedelta(milliseconds=1)
