"""Importing STIX 2.1 from MISP, OpenCTI or a TAXII client: validated first, then stored in one transaction."""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stix2
import stix2.exceptions
import stix2patterns.v21.pattern
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from incidents.access import Actor, can_see, stricter
from incidents.base import utcnow
from incidents.enums import TLP, TLP_ORDER, Category, ObservableType, Priority
from incidents.errors import FieldError, ValidationFailed
from incidents.events import record_event
from incidents.filing import FilingSettings, file_in_session
from incidents.models import Incident, Observable, StixLink, StixObject, TaxiiStatus
from incidents.policy import Capability, require
from incidents.schemas.incidents import IncidentCreate
from incidents.schemas.observables import ObservableIn
from incidents.stix import mapping, store
from incidents.stix.push import enqueue_push
from incidents.uow import in_transaction

_MAX_MESSAGES = 50


@dataclass
class ImportResult:
    """What an import did: rows stored, versions it already had, incidents it created or enriched."""

    stored: int = 0
    duplicates: int = 0
    created: list[str] = field(default_factory=list)
    enriched: list[str] = field(default_factory=list)
    successes: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "incidents_created": self.created,
            "incidents_enriched": self.enriched,
        }


def _refs(obj: dict[str, Any]) -> Iterable[str]:
    for name, value in obj.items():
        if name.endswith("_ref") and isinstance(value, str):
            yield value
        elif name.endswith("_refs") and isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))
    for marking in obj.get("granular_markings") or []:
        if isinstance(marking, dict) and isinstance(marking.get("marking_ref"), str):
            yield marking["marking_ref"]


def _version(obj: dict[str, Any]) -> str | None:
    return obj.get("modified") or obj.get("created")


def _tlp(obj: dict[str, Any], default: str) -> str:
    levels = [mapping.TLP_OF_MARKING[m] for m in obj.get("object_marking_refs") or [] if m in mapping.TLP_OF_MARKING]
    if obj.get("type") == "marking-definition":
        return TLP.CLEAR.value
    if not levels:
        return default
    level = levels[0]
    for other in levels[1:]:
        level = stricter(level, other)
    return str(level)


def _sco_key(obj: dict[str, Any]) -> str | None:
    kind = obj.get("type")
    if kind in store.SCO_TYPES and kind != "file" and isinstance(obj.get("value"), str):
        return f"sco:{kind}:{obj['value']}"
    if kind == "file" and isinstance(obj.get("hashes"), dict) and obj.get("name"):
        hashes = {str(k).upper(): str(v).lower() for k, v in obj["hashes"].items()}
        return f"sco:{mapping.ObservableView('file', obj['name'], hashes).key}"
    return None


def validate(objects: Sequence[Any], *, limit: int, known_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Check every object with stix2 and stix2-validator and every reference; ValidationFailed lists all faults."""
    if len(objects) > limit:
        raise ValidationFailed(
            f"{len(objects)} objects is more than the limit of {limit}",
            errors=[FieldError("objects", f"at most {limit} objects per import")],
        )
    errors: list[FieldError] = []
    clean: list[dict[str, Any]] = []
    for i, obj in enumerate(objects):
        where = f"objects[{i}]"
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not isinstance(obj.get("id"), str):
            errors.append(FieldError(where, "a STIX object needs a type and an id"))
            continue
        try:
            stix2.parse(obj, allow_custom=True, version="2.1")
        except (stix2.exceptions.STIXError, ValueError, TypeError) as exc:
            errors.append(FieldError(f"{where} ({obj['id']})", str(exc)))
            continue
        clean.append(obj)
    errors.extend(_repeated_versions(clean))
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid object(s)", errors=errors[:_MAX_MESSAGES])
    if clean:
        # Imported here: loading the validator's schemas costs seconds, which no process should pay at start.
        from stix2validator import ValidationOptions, validate_parsed_json

        results = validate_parsed_json(
            {"type": "bundle", "id": "bundle--" + "0" * 8 + "-0000-4000-8000-" + "0" * 12, "objects": clean},
            ValidationOptions(version="2.1"),
        )
        for result in results if isinstance(results, list) else [results]:
            errors.extend(FieldError(f"objects ({e.message.split(':', 1)[0]})", str(e)) for e in result.errors)
    if errors:
        raise ValidationFailed(f"{len(errors)} validator error(s)", errors=errors[:_MAX_MESSAGES])
    return clean


def _repeated_versions(objects: Sequence[dict[str, Any]]) -> list[FieldError]:
    """One version of an object is one row: a bundle naming the same id and version twice is refused."""
    seen: set[tuple[str, Any]] = set()
    errors = []
    for obj in objects:
        version = _version(obj)
        if version is None:
            continue
        try:
            key: Any = (obj["id"], _parse_time(version))
        except ValueError:
            key = (obj["id"], version)
        if key in seen:
            errors.append(FieldError(f"objects ({obj['id']})", f"sent more than once with the version {version}"))
        seen.add(key)
    return errors


def _dangling(
    session: Session, objects: Sequence[dict[str, Any]], extra_ids: Iterable[str], actor: Actor
) -> list[FieldError]:
    """References to nothing the importer may read: an object hidden from them is answered as one never stored."""
    present = {o["id"] for o in objects} | set(extra_ids) | set(mapping.TLP_OF_MARKING)
    wanted: dict[str, str] = {}
    for obj in objects:
        for ref in _refs(obj):
            if ref not in present:
                wanted.setdefault(ref, obj["id"])
    refs = list(wanted)
    stored: set[str] = set()
    for i in range(0, len(refs), 500):
        stored |= set(
            session.scalars(
                select(StixObject.stix_id).where(
                    StixObject.stix_id.in_(refs[i : i + 500]), store.visible_objects(actor)
                )
            )
        )
    return [
        FieldError(f"objects ({source})", f"refers to {ref}, which is neither in the bundle nor stored")
        for ref, source in wanted.items()
        if ref not in stored
    ][:_MAX_MESSAGES]


def _incident_links(objects: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    """For each incident in the bundle, the ids linked to it (by relationship, sighting or a wrapping report)."""
    incidents = {o["id"] for o in objects if o["type"] == "incident"}
    # An incident may be referenced without being sent: one of ours, enriched by a bundle of new indicators.
    for obj in objects:
        refs = [obj.get("source_ref"), obj.get("target_ref"), *(obj.get("object_refs") or [])]
        incidents |= {r for r in refs if isinstance(r, str) and r.startswith("incident--")}
    linked: dict[str, set[str]] = {i: set() for i in incidents}
    for obj in objects:
        if obj["type"] == "relationship":
            src, dst = obj.get("source_ref"), obj.get("target_ref")
            for inc, other in ((src, dst), (dst, src)):
                if inc in linked:
                    linked[inc] |= {other, obj["id"]}
        elif obj["type"] in ("report", "grouping"):
            refs = set(obj.get("object_refs") or [])
            for inc in refs & incidents:
                linked[inc] |= refs | {obj["id"]}
    by_id = {o["id"]: o for o in objects}
    # One hop further: an indicator linked to the incident brings the observable it is based on.
    for inc, ids in linked.items():
        for obj in objects:
            target = by_id.get(obj.get("target_ref")) if obj["type"] == "relationship" else None
            if target is not None and obj.get("source_ref") in ids and target["type"] in store.SCO_TYPES:
                ids |= {target["id"], obj["id"]}
        ids.discard(inc)
    return linked


def _observables(objects: Iterable[dict[str, Any]]) -> list[ObservableIn]:
    found: list[ObservableIn] = []
    for obj in objects:
        candidates: list[tuple[str, str, dict | None]] = []
        if obj["type"] in store.SCO_TYPES:
            if obj["type"] == "file":
                if obj.get("hashes") and obj.get("name"):
                    candidates.append(("file", obj["name"], obj["hashes"]))
            elif isinstance(obj.get("value"), str):
                candidates.append((obj["type"], obj["value"], None))
        elif obj["type"] == "indicator" and obj.get("pattern_type") == "stix":
            comparisons = stix2patterns.v21.pattern.Pattern(obj["pattern"]).inspect().comparisons
            for kind, items in comparisons.items():
                for path, op, value in items:
                    if kind in store.SCO_TYPES and kind != "file" and path == ["value"] and op == "=":
                        candidates.append((kind, value.strip("'").replace("\\'", "'").replace("\\\\", "\\"), None))
        for kind, value, hashes in candidates:
            try:
                found.append(ObservableIn(type=ObservableType(kind), value=value, hashes=hashes))
            except ValueError:
                continue  # a value our registry cannot hold (an IP range in a pattern, say) stays a STIX object only
    return found


def _priority(criticality: int | None) -> Priority:
    if criticality is None:
        return Priority.P3
    return (
        Priority.P1
        if criticality >= 80
        else Priority.P2
        if criticality >= 60
        else (Priority.P3 if criticality >= 40 else Priority.P4)
    )


def _incident_create(obj: dict[str, Any], tlp: str, observables: list[ObservableIn]) -> IncidentCreate:
    ext = (obj.get("extensions") or {}).get(mapping.INCIDENT_CORE) or {}
    types = ext.get("incident_types") or []
    category = next((mapping.CATEGORY_OF_TYPE[t] for t in types if t in mapping.CATEGORY_OF_TYPE), Category.OTHER)
    detected = obj.get("first_seen") or obj.get("created") or utcnow().isoformat()
    unique = {(o.type, o.value): o for o in observables}
    return IncidentCreate.model_validate(
        {
            "title": str(obj.get("name") or obj["id"])[:300],
            "description": str(obj.get("description") or ""),
            "category": category,
            "priority": _priority(ext.get("criticality")),
            "tlp": tlp,
            "detected_at": detected,
            "observables": [o.model_dump() for o in unique.values()][:1000],
        }
    )


def import_objects(
    *,
    session: Session,
    objects: Sequence[Any],
    actor: Actor,
    settings: FilingSettings,
    default_tlp: str = TLP.AMBER.value,
    limit: int = 20_000,
    max_tlp: str = TLP.RED.value,
    status: tuple[str, str] | None = None,
    known_ids: Iterable[str] = (),
    push: bool = False,
) -> ImportResult:
    """Import objects all or nothing: incidents they describe are created or enriched, the rest stored as sent."""
    require(actor, Capability.IMPORT_STIX, f"the role {actor.role} may not import STIX")
    clean = validate(objects, limit=limit)
    too_secret = [o["id"] for o in clean if TLP_ORDER.index(TLP(_tlp(o, default_tlp))) > TLP_ORDER.index(TLP(max_tlp))]
    if too_secret:
        raise ValidationFailed(
            f"{len(too_secret)} object(s) are marked above {max_tlp}, the highest level this collection holds",
            errors=[FieldError(f"objects ({i})", f"marked above TLP:{max_tlp.upper()}") for i in too_secret][:50],
        )
    links = _incident_links(clean)

    def work() -> ImportResult:
        dangling = _dangling(session, clean, known_ids, actor)
        if dangling:
            raise ValidationFailed(f"{len(dangling)} dangling reference(s)", errors=dangling)
        return _store(session, clean, links, actor, settings, default_tlp, status, push)

    return in_transaction(session, work)


def _store(
    session: Session,
    objects: list[dict[str, Any]],
    links: dict[str, set[str]],
    actor: Actor,
    settings: FilingSettings,
    default_tlp: str,
    status: tuple[str, str] | None,
    push: bool,
) -> ImportResult:
    result = ImportResult()
    ids = [o["id"] for o in objects]
    have: set[tuple[str, datetime]] = set()
    projected: dict[str, set[str | None]] = {}
    for i in range(0, len(ids), 500):
        for r in session.execute(
            select(StixObject.stix_id, StixObject.modified, StixObject.imported_by_id, StixObject.key).where(
                StixObject.stix_id.in_(ids[i : i + 500])
            )
        ):
            have.add((r.stix_id, r.modified))
            if r.imported_by_id is None:
                projected.setdefault(r.stix_id, set()).add(r.key)
    _refuse_projected(objects, projected, have)
    sco_keys = {k for k in (_sco_key(o) for o in objects) if k}
    by_value: dict[tuple[str, str], str] = {}
    keys = list(sco_keys)
    for i in range(0, len(keys), 500):
        for row in session.execute(
            select(StixObject.key, StixObject.tlp, StixObject.stix_id).where(StixObject.key.in_(keys[i : i + 500]))
        ):
            by_value.setdefault((row.key, row.tlp), row.stix_id)
    # Which of our incidents each bundle incident stands for (its own id was once exported by us) or creates.
    incident_of: dict[str, int] = {}
    for inc_id, linked_ids in links.items():
        obj = next((o for o in objects if o["id"] == inc_id), None)
        # Ours when we exported it (a projected row) or imported it before (a row linked to an incident).
        ours = session.scalar(
            select(StixLink.incident_id)
            .join(StixObject, StixObject.id == StixLink.object_id)
            .where(StixObject.stix_id == inc_id)
            .order_by(StixObject.incident_id.is_(None))
            .limit(1)
        )
        observed = _observables(o for o in objects if o["id"] in linked_ids)
        if ours is not None and not can_see(session, actor, ours):
            ours = None  # an incident hidden from the importer is neither enriched nor named: as if it were not ours
        if ours is None and obj is None:
            continue  # refers to an incident stored only as STIX (checked as a reference): nothing to create
        if ours is not None:
            incident_of[inc_id] = ours
            if _enrich(session, ours, observed, actor):
                result.enriched.append(session.get_one(Incident, ours).ref)
        else:
            tlp = _tlp(obj, default_tlp)
            filed = file_in_session(session, [_incident_create(obj, tlp, observed)], actor, settings, False)
            incident_of[inc_id] = filed.incident_ids[0]
            result.created.append(filed.body["ref"])
    member_of: dict[str, set[int]] = {}
    for inc_id, linked_ids in links.items():
        if inc_id not in incident_of:
            continue
        for oid in {*linked_ids, inc_id}:
            member_of.setdefault(oid, set()).add(incident_of[inc_id])
    incident_tlp = {
        r.id: str(r.tlp)
        for r in session.execute(select(Incident.id, Incident.tlp).where(Incident.id.in_(set(incident_of.values()))))
    }
    rewrite: dict[str, str] = {}
    values: list[dict[str, Any]] = []
    row_links: dict[int, set[int]] = {}
    for obj in objects:
        tlp = _tlp(obj, default_tlp)
        floor = [incident_tlp[i] for i in member_of.get(obj["id"], ())]
        if any(stricter(tlp, level) != tlp for level in floor):
            # Never below the incident it describes: the stricter level, in the row and in the object's markings.
            for level in floor:
                tlp = stricter(tlp, level)
            obj = mapping.marked(obj, tlp)
        key = _sco_key(obj)
        version = _version(obj)
        modified = _parse_time(version) if version else None
        if modified is not None and (obj["id"], modified) in have:
            result.duplicates += 1
            result.successes.append({"id": obj["id"], "version": version})
            continue
        if key and (key, tlp) in by_value and by_value[(key, tlp)] != obj["id"]:
            rewrite[obj["id"]] = by_value[(key, tlp)]
            result.duplicates += 1
            result.successes.append({"id": obj["id"], "version": version or ""})
            continue
        if key and (key, tlp) in by_value:
            result.duplicates += 1
            result.successes.append({"id": obj["id"], "version": version or ""})
            continue
        if key:
            by_value[(key, tlp)] = obj["id"]
        values.append({"obj": obj, "tlp": tlp, "key": key, "modified": modified})
    dates = store.next_dates(session, len(values))
    rows = []
    for v, added in zip(values, dates, strict=True):
        obj = _rewritten(v["obj"], rewrite) if rewrite else v["obj"]
        created = obj.get("created")
        rows.append(
            {
                "stix_id": obj["id"],
                "type": obj["type"],
                "spec_version": obj.get("spec_version", "2.1"),
                "created": _parse_time(created) if created else None,
                "modified": v["modified"] or added,
                "date_added": added,
                "tlp": v["tlp"],
                "key": v["key"],
                "incident_id": None,
                "imported_by_id": actor.user_id,
                "body": json.dumps(obj, ensure_ascii=False),
                "current": True,
            }
        )
        result.successes.append(
            {"id": obj["id"], "version": obj.get("modified") or obj.get("created") or mapping.stamp(added)}
        )
        for incident_id in member_of.get(obj["id"], ()):
            row_links.setdefault(len(rows) - 1, set()).add(incident_id)
    single = {i: next(iter(s)) for i, s in row_links.items() if len(s) == 1}
    row_ids = store.insert_rows(session, rows, single) if rows else []
    extra = [{"object_id": row_ids[i], "incident_id": inc} for i, s in row_links.items() if len(s) > 1 for inc in s]
    if extra:
        session.execute(StixLink.__table__.insert(), extra)
    _fix_current(session, rows)
    result.stored = len(rows)
    if status is not None:
        status_id, collection_id = status
        session.add(
            TaxiiStatus(
                id=status_id,
                collection_id=collection_id,
                status="complete",
                request_timestamp=utcnow(),
                total_count=len(objects),
                successes=result.successes,
                failures=[],
                pendings=[],
                created_by_id=actor.user_id,
            )
        )
    if push and rows:
        enqueue_push(session)
    return result


PROJECTED = "this id is an object UCSC publishes from an incident; an import may not change it (use a new id)"


def _refuse_projected(
    objects: Sequence[dict[str, Any]], projected: dict[str, set[str | None]], have: set[tuple[str, datetime]]
) -> None:
    """An import never writes a version of a projected object; the version it already holds is a duplicate."""
    errors = []
    for obj in objects:
        if obj["id"] not in projected:
            continue
        version = _version(obj)
        if version is not None and (obj["id"], _parse_time(version)) in have:
            continue
        if version is None and _sco_key(obj) in projected[obj["id"]]:
            continue  # the same observable: an SCO's id is derived from its value
        errors.append(FieldError(f"objects ({obj['id']})", PROJECTED))
    if errors:
        raise ValidationFailed(
            f"{len(errors)} object(s) would change what incidents publish", errors=errors[:_MAX_MESSAGES]
        )


def _fix_current(session: Session, rows: list[dict[str, Any]]) -> None:
    """An imported version older than a stored one is not the current version: the newest is."""
    ids = list({r["stix_id"] for r in rows})
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        newest = dict(
            session.execute(
                select(StixObject.stix_id, func.max(StixObject.modified))
                .where(StixObject.stix_id.in_(part))
                .group_by(StixObject.stix_id)
            ).all()
        )
        older = [r["stix_id"] for r in rows if r["stix_id"] in newest and r["modified"] < newest[r["stix_id"]]]
        if older:
            session.execute(update(StixObject).where(StixObject.stix_id.in_(older)).values(current=False))
            for sid in set(older):
                session.execute(
                    update(StixObject)
                    .where(StixObject.stix_id == sid, StixObject.modified == newest[sid])
                    .values(current=True)
                )


def _rewritten(obj: dict[str, Any], rewrite: dict[str, str]) -> dict[str, Any]:
    out = dict(obj)
    for name, value in obj.items():
        if name.endswith("_ref") and value in rewrite:
            out[name] = rewrite[value]
        elif name.endswith("_refs") and isinstance(value, list):
            out[name] = [rewrite.get(v, v) for v in value]
    return out


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _enrich(session: Session, incident_id: int, observed: list[ObservableIn], actor: Actor) -> bool:
    incident = session.get_one(Incident, incident_id)
    have = {(o.type, o.value) for o in incident.observables}
    added = []
    now = utcnow()
    for obs in observed:
        if (str(obs.type), obs.value) not in have:
            have.add((str(obs.type), obs.value))
            incident.observables.append(Observable(type=obs.type, value=obs.value, hashes=obs.hashes, created_at=now))
            added.append({"type": str(obs.type), "value": obs.value})
    if added:
        incident.updated_at = now
        record_event(
            session,
            kind="incident.observables_added",
            actor=actor,
            incident=incident,
            at=now,
            data={"ref": incident.ref, "status": str(incident.status), "observables": added, "source": "stix"},
        )
    return bool(added)
