"""Acknowledging receipt to the reporter at once (Decision 05 Art. 12): by e-mail, or to the SIEM's webhook.

The filing transaction enqueues one job per channel and incident; the worker sends it after the commit,
with the reference and a status link. Each delivery has a stable key, so a retry is recognisable.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.models import ApiToken, Incident
from notifiers.base import DeliveryFailed, Message

EMAIL, WEBHOOK = "receipt.email", "receipt.webhook"


def enqueue_receipts(
    session: Session,
    created: Sequence[tuple[int, str | None]],
    *,
    token_id: int | None,
    by_email: bool,
) -> None:
    """Queue the receipts of new incidents, given as (id, reporter e-mail); in the filing transaction."""
    rows = []
    if by_email:
        rows += [
            jobs.job_values(EMAIL, {"incident_id": i, "to": email}, key=f"{EMAIL}:{i}", incident_id=i)
            for i, email in created
            if email
        ]
    if token_id is not None and session.scalar(select(ApiToken.webhook_url).where(ApiToken.id == token_id)):
        rows += [
            jobs.job_values(WEBHOOK, {"incident_id": i, "token_id": token_id}, key=f"{WEBHOOK}:{i}", incident_id=i)
            for i, _ in created
        ]
    jobs.enqueue_many(session, rows)


def _incident(ctx: jobs.JobContext, incident_id: int) -> dict[str, Any]:
    with ctx.sessions() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise jobs.PermanentError(f"incident {incident_id} is gone")
        base = str(ctx.config.get("BASE_URL", "")).rstrip("/")
        return {
            "id": incident.id,
            "ref": incident.ref,
            "status": str(incident.status),
            "title": incident.title,
            "received_at": incident.created_at.isoformat(),
            "status_url": f"{base}/api/v1/incidents/{incident.id}",
            "exercise": incident.exercise,
        }


def _send(ctx: jobs.JobContext, channel: str, message: Message) -> None:
    notifier = ctx.notifiers.get(channel)
    if notifier is None:
        raise jobs.PermanentError(f"the {channel} channel is not configured")
    try:
        notifier.send(message)
    except DeliveryFailed as exc:
        if exc.permanent:
            raise jobs.PermanentError(str(exc)) from exc
        raise


def send_email_receipt(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    info = _incident(ctx, job.payload["incident_id"])
    drill = "[DIỄN TẬP / DRILL] " if info["exercise"] else ""
    text = (
        f"{drill}Ban Chỉ đạo đã tiếp nhận báo cáo sự cố của quý cơ quan.\n"
        f"Số hiệu: {info['ref']}\n"
        f"Tiêu đề: {info['title']}\n"
        f"Thời điểm tiếp nhận (UTC): {info['received_at']}\n"
        f"Trạng thái: {info['status']}\n"
        f"Theo dõi: {info['status_url']}\n\n"
        f"The steering board has received your incident report.\n"
        f"Reference: {info['ref']} · status: {info['status']} · {info['status_url']}\n"
    )
    subject = f"{drill}[{info['ref']}] Xác nhận tiếp nhận sự cố / Incident report received"
    _send(ctx, "email", Message(to=job.payload["to"], subject=subject, text=text, key=job.idempotency_key or ""))


def send_webhook_receipt(ctx: jobs.JobContext, job: jobs.ClaimedJob) -> None:
    with ctx.sessions() as session:
        token = session.get(ApiToken, job.payload["token_id"])
        url, secret = (token.webhook_url, token.webhook_secret) if token else (None, None)
    if not url:
        raise jobs.PermanentError("the token has no webhook any more")
    info = _incident(ctx, job.payload["incident_id"])
    data = {"type": "incident.received", **info}
    _send(ctx, "webhook", Message(to=url, subject="", text="", key=job.idempotency_key or "", data=data, secret=secret))
