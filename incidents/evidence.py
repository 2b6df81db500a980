"""Evidence: attachments with their own TLP, stored outside the web root, with a chain of custody.

Files are kept under `UCSC_EVIDENCE_DIR` by their SHA-256 (content addressed, written once). A malware
sample is never kept or served in the clear: it is wrapped at upload into an AES-256 ZIP whose password is
the field's convention, `infected` (what MalwareBazaar, VirusTotal and most sandboxes use), so that
antivirus on the server or the analyst's machine does not eat it and nobody opens it by a double-click.
pyzipper writes WinZip AES (AE-2), which 7-Zip and unzip/bsdtar read; the standard library's zipfile cannot
write encryption at all. Every download is written to the audit trail and to the item's custody chain.
"""

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, selectinload

from incidents import audit
from incidents.access import Actor, check_tlp_change, tlp_clause
from incidents.base import utcnow
from incidents.enums import TLP
from incidents.errors import Conflict, FieldError, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.policy import Capability, require
from incidents.queries import get_incident
from incidents.records import EVIDENCE_KINDS, CustodyRecord, Evidence
from incidents.uow import in_transaction

ARCHIVE_PASSWORD = b"infected"
CHUNK = 1 << 20
CUSTODY_ACTIONS = ("transferred", "verified", "note")


@dataclass(frozen=True)
class Store:
    """Where evidence lives and how large one item may be."""

    root: Path
    max_bytes: int

    def path(self, stored_name: str) -> Path:
        return self.root / stored_name[:2] / stored_name


@dataclass(frozen=True)
class Download:
    evidence: Evidence
    path: Path
    filename: str
    media_type: str


def _visible(actor: Actor):
    return tlp_clause(actor, Evidence.tlp, Evidence.incident_id)


def _spool(stream: BinaryIO, store: Store) -> tuple[Path, str, int]:
    """Copy the upload to a temporary file in the store, hashing as it goes; refuse it past the size limit."""
    store.root.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, name = tempfile.mkstemp(dir=store.root, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > store.max_bytes:
                    raise ValidationFailed(
                        "the file is larger than the evidence limit",
                        errors=[FieldError("file", f"larger than {store.max_bytes} bytes")],
                    )
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name), digest.hexdigest(), size


def _archive(plain: Path, filename: str) -> bytes:
    import pyzipper

    out = io.BytesIO()
    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(ARCHIVE_PASSWORD)
        zf.setencryption(pyzipper.WZ_AES, nbits=256)
        zf.write(plain, arcname=filename)
    return out.getvalue()


def _place(store: Store, data_path: Path) -> tuple[str, str]:
    """Move a finished file to its content address; an identical file already there is kept."""
    digest = hashlib.sha256()
    with data_path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    stored_name = digest.hexdigest()
    target = store.path(stored_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        data_path.unlink()
    else:
        os.replace(data_path, target)
    return stored_name, stored_name


def _safe_name(filename: str) -> str:
    name = Path(filename.replace("\\", "/")).name.strip().replace("\x00", "")
    return (name or "evidence.bin")[:255]


def add_evidence(
    *,
    session: Session,
    incident_id: int | str,
    stream: BinaryIO,
    filename: str,
    media_type: str | None,
    kind: str,
    tlp: str | None,
    description: str | None,
    actor: Actor,
    store: Store,
    source_ip: str | None = None,
) -> Evidence:
    """Store an attachment and record who collected it (one transaction after the file is safely on disk)."""
    require(actor, Capability.ADD_EVIDENCE, f"the role {actor.role} may not add evidence")
    errors = []
    if kind not in EVIDENCE_KINDS:
        errors.append(FieldError("kind", f"one of {', '.join(EVIDENCE_KINDS)}"))
    try:
        level = TLP.parse(tlp) if tlp else None
    except ValueError:
        errors.append(FieldError("tlp", "one of clear, green, amber, amber+strict, red"))
        level = None
    if description is not None and len(description) > 10_000:
        errors.append(FieldError("description", "at most 10000 characters"))
    if errors:
        raise ValidationFailed("invalid evidence", errors=errors)
    incident = get_incident(session, actor, incident_id)  # 404 before reading a byte
    check_tlp_change(actor, incident.tlp, level)
    session.rollback()  # end the read transaction: the copy below may take a while
    name = _safe_name(filename)
    spooled, sha256, size = _spool(stream, store)
    if size == 0:
        spooled.unlink()
        raise ValidationFailed("empty file", errors=[FieldError("file", "must not be empty")])
    try:
        if kind == "malware":
            fd, zipped = tempfile.mkstemp(dir=store.root, prefix=".archive-")
            with os.fdopen(fd, "wb") as out:
                out.write(_archive(spooled, name))
            spooled.unlink()
            stored_name, stored_sha = _place(store, Path(zipped))
            stored_as = "zip-aes"
        else:
            stored_name, stored_sha = _place(store, spooled)
            stored_as = "plain"
    finally:
        spooled.unlink(missing_ok=True)

    def work() -> Evidence:
        locked = get_incident(session, actor, incident.id, for_update=True)
        now = utcnow()
        item = Evidence(
            incident_id=locked.id,
            kind=kind,
            filename=name,
            media_type=(media_type or "application/octet-stream")[:127],
            description=description,
            sha256=sha256,
            size=size,
            stored_as=stored_as,
            stored_name=stored_name,
            stored_sha256=stored_sha,
            tlp=(level or TLP(locked.tlp)).value,
            uploaded_by_id=actor.user_id,
            uploaded_at=now,
        )
        session.add(item)
        session.flush()
        session.add(
            CustodyRecord(evidence_id=item.id, at=now, action="collected", actor_id=actor.user_id, actor=actor.label,
                          sha256_checked=sha256, source_ip=source_ip, note=description)
        )  # fmt: skip
        record_event(
            session, kind="evidence.added", actor=actor, incident=locked, at=now, note=name, tlp=item.tlp,
            data={"ref": locked.ref, "status": str(locked.status), "evidence_id": item.id, "kind": kind,
                  "sha256": sha256, "size": size, "tlp": item.tlp},
        )  # fmt: skip
        return item

    return in_transaction(session, work)


def list_evidence(session: Session, actor: Actor, incident_id: int | str) -> list[Evidence]:
    """Items of an incident whose own TLP the actor's clearance reaches."""
    require(actor, Capability.READ_RESPONSE)
    incident = get_incident(session, actor, incident_id)
    stmt = (
        select(Evidence)
        .where(Evidence.incident_id == incident.id, _visible(actor))
        .options(selectinload(Evidence.uploaded_by))
        .order_by(Evidence.id)
    )
    return list(session.scalars(stmt))


def get_evidence(session: Session, actor: Actor, incident_id: int | str, evidence_id: int) -> Evidence:
    """The item, or NotFound when it does not exist or the actor's clearance does not reach it."""
    require(actor, Capability.READ_RESPONSE)
    incident = get_incident(session, actor, incident_id)
    item = session.scalar(
        select(Evidence)
        .where(and_(Evidence.id == evidence_id, Evidence.incident_id == incident.id, _visible(actor)))
        .options(selectinload(Evidence.custody), selectinload(Evidence.uploaded_by))
    )
    if item is None:
        raise NotFound(f"no evidence {evidence_id} on {incident.ref}")
    return item


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    *, session: Session, actor: Actor, incident_id: int | str, evidence_id: int, store: Store,
    source_ip: str | None = None,
) -> Download:  # fmt: skip
    """Check the stored file's digest, write custody and audit rows (one transaction), and say what to send."""
    item = get_evidence(session, actor, incident_id, evidence_id)
    path = store.path(item.stored_name)
    found = _file_digest(path) if path.exists() else None
    intact = found == item.stored_sha256

    def work() -> None:
        incident = get_incident(session, actor, item.incident_id)
        now = utcnow()
        session.add(
            CustodyRecord(evidence_id=item.id, at=now, action="downloaded", actor_id=actor.user_id, actor=actor.label,
                          sha256_checked=found, source_ip=source_ip,
                          note=None if intact else "stored file missing or altered: download refused")
        )  # fmt: skip
        audit.append(
            session, action=audit.Action.EVIDENCE_DOWNLOADED, actor=actor, target=incident.ref, source_ip=source_ip,
            data={"evidence_id": item.id, "sha256": item.sha256, "filename": item.filename, "tlp": item.tlp,
                  "stored_as": item.stored_as, "intact": intact},
        )  # fmt: skip

    in_transaction(session, work)
    if not intact:
        raise Conflict("the stored file does not match its recorded digest; the custody chain notes it")
    if item.stored_as == "zip-aes":
        return Download(item, path, f"{item.filename}.zip", "application/zip")
    return Download(item, path, item.filename, "application/octet-stream")


def add_custody(
    *, session: Session, actor: Actor, incident_id: int | str, evidence_id: int, action: str,
    holder: str | None, note: str | None, store: Store, source_ip: str | None = None,
) -> CustodyRecord:  # fmt: skip
    """Record a hand-over, a check of the digest or a note in the item's chain."""
    require(actor, Capability.ADD_EVIDENCE, f"the role {actor.role} may not change custody")
    if action not in CUSTODY_ACTIONS:
        raise ValidationFailed("invalid action", errors=[FieldError("action", f"one of {', '.join(CUSTODY_ACTIONS)}")])
    if action == "transferred" and not holder:
        raise ValidationFailed("who received it", errors=[FieldError("holder", "required for a transfer")])
    item = get_evidence(session, actor, incident_id, evidence_id)
    path = store.path(item.stored_name)
    found = _file_digest(path) if path.exists() else None

    def work() -> CustodyRecord:
        record = CustodyRecord(
            evidence_id=item.id, at=utcnow(), action=action, actor_id=actor.user_id, actor=actor.label,
            holder=holder, note=note, sha256_checked=found, source_ip=source_ip,
        )  # fmt: skip
        session.add(record)
        session.flush()
        return record

    return in_transaction(session, work)


def as_dict(item: Evidence) -> dict:
    return {
        "id": item.id,
        "kind": item.kind,
        "filename": item.filename,
        "media_type": item.media_type,
        "description": item.description,
        "sha256": item.sha256,
        "size": item.size,
        "tlp": item.tlp,
        "archive": "zip-aes-256 (password: infected)" if item.stored_as == "zip-aes" else None,
        "uploaded_by": item.uploaded_by.username if item.uploaded_by else None,
        "uploaded_at": item.uploaded_at.isoformat(),
    }


def custody_dict(record: CustodyRecord) -> dict:
    return {
        "id": record.id,
        "at": record.at.isoformat(),
        "action": record.action,
        "actor": record.actor,
        "holder": record.holder,
        "note": record.note,
        "sha256_checked": record.sha256_checked,
        "source_ip": record.source_ip,
    }
