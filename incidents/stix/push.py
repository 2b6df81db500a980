"""The outbound feed: new objects a national coordinator may see are POSTed to its TAXII collection, retried."""

import json
import logging

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.base import utcnow
from incidents.models import StixCursor, StixObject
from incidents.stix import store
from incidents.uow import in_transaction
from notifiers import outbound

log = logging.getLogger("ucsc.stix.push")
TAXII = "application/taxii+json;version=2.1"
KIND = "stix.push"


def enqueue_push(session: Session) -> None:
    """Queue one push of what is new, in the caller's transaction (a push per newest row id at most)."""
    last = session.scalar(select(func.max(StixObject.id))) or 0
    jobs.enqueue(session, KIND, {}, key=f"{KIND}:{last}")


def _post(cfg: dict, url: str, body: bytes, auth: tuple[str, str] | None) -> httpx.Response:
    """POST through the outbound check: a collection on an internal address is refused, not retried."""
    allow = outbound.Allowance.parse(cfg.get("OUTBOUND_ALLOW"))
    with outbound.client(allow, timeout=float(cfg.get("NOTIFY_TIMEOUT", 10))) as http:
        try:
            return http.post(url, content=body, auth=auth, headers={"Content-Type": TAXII, "Accept": TAXII})
        except outbound.OutboundRefused as exc:
            raise jobs.PermanentError(f"TAXII push to {url} refused: {exc}") from exc


def push(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    """Send what is after the push cursor, a batch at a time; the cursor moves only when the server accepted."""
    cfg = ctx.config
    url = str(cfg["STIX_PUSH_URL"]).rstrip("/") + "/objects/"
    auth = (cfg["STIX_PUSH_USER"], cfg["STIX_PUSH_PASSWORD"]) if cfg.get("STIX_PUSH_USER") else None
    batch = int(cfg.get("STIX_PUSH_BATCH", 500))
    while True:
        with ctx.sessions() as session:
            start = session.scalar(select(StixCursor.position).where(StixCursor.name == store.PUSH)) or 0
            # What a TAXII collection up to that level holds: a raised incident's objects are not sent.
            rows = session.execute(
                select(StixObject.id, StixObject.body)
                .where(StixObject.id > start, store.in_collection(cfg["STIX_PUSH_MAX_TLP"]))
                .order_by(StixObject.id)
                .limit(batch)
            ).all()
            last = (
                rows[-1].id
                if rows
                else session.scalar(
                    select(StixObject.id).where(StixObject.id > start).order_by(StixObject.id.desc()).limit(1)
                )
            )
        if rows:
            # Stored bodies are sent as stored, inside the TAXII envelope.
            body = '{"objects": [' + ", ".join(r.body for r in rows) + "]}"
            answer = _post(cfg, url, body.encode(), auth)
            if answer.status_code not in (200, 202):
                raise RuntimeError(f"TAXII push refused: HTTP {answer.status_code} {answer.text[:300]}")
            status = answer.json()
            log.info(
                "pushed %d object(s): %s",
                len(rows),
                json.dumps({k: status.get(k) for k in ("status", "success_count", "failure_count")}),
            )
        if last is None:
            return
        with ctx.sessions() as session:

            def advance(end: int = last, begin: int = start) -> None:
                cursor = store.cursor(session, store.PUSH)
                if cursor.position == begin:
                    cursor.position = end
                    cursor.updated_at = utcnow()

            in_transaction(session, advance)
        if len(rows) < batch:
            return
