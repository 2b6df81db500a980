"""The e-mail's acknowledgement link: a GET shows a confirmation form and never acknowledges (mail scanners open
GET links); only its POST acknowledges, as the person the signed link names. Also paging's CLI and settings."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
from flask import Blueprint, Flask, current_app, render_template, request
from flask.cli import AppGroup

from app import db
from incidents import audit
from incidents.base import utcnow
from incidents.errors import Conflict, Forbidden, NotFound
from playbooks import directory, links, service, spec
from playbooks.models import Contact, Page

bp = Blueprint("ack", __name__)


@dataclass(frozen=True)
class Link:
    """What a genuine ack link names: the page, its recipient, and until when the link works."""

    page: Page
    contact: Contact
    until: datetime

    @property
    def expired(self) -> bool:
        return self.until <= utcnow()


def _resolve(token: str) -> Link | None:
    parsed = links.read_ack_token(str(current_app.config["SECRET_KEY"]), token)
    if parsed is None:
        return None
    session = db.session()
    page, contact = session.get(Page, parsed[0]), session.get(Contact, parsed[1])
    if page is None or contact is None:
        return None
    return Link(page, contact, parsed[2])


def _render(token: str, link: Link | None, *, done: str | None = None, status: int = 200) -> Any:
    if link is None:
        return render_template("ack.html", invalid=True), 404
    until = links.local_time(link.until)
    if link.expired:
        # 410: the link was genuine but its time is over; nothing on this page can acknowledge.
        return render_template("ack.html", invalid=False, expired=True, until=until), 410
    return render_template(
        "ack.html", page=link.page, contact=link.contact, incident=link.page.incident, token=token, done=done,
        invalid=False, expired=False, until=until,
    ), status  # fmt: skip


@bp.get("/ack/<token>")
def confirm_form(token: str) -> Any:
    """Show what would be acknowledged, with a button and until when the link works; nothing changes."""
    return _render(token, _resolve(token))


@bp.post("/ack/<token>")
def confirm(token: str) -> Any:
    """Acknowledge as the recipient the link names (the signed, unexpired link is the credential, no session)."""
    link = _resolve(token)
    if link is None:
        return _render(token, None)
    if link.expired:
        audit.record_refused_link(db.session(), page_id=link.page.id, contact_id=link.contact.id,
                                  reason="link expired", source_ip=request.remote_addr)  # fmt: skip
        return _render(token, link)
    try:
        page = service.acknowledge_page(
            session=db.session(),
            page_id=link.page.id,
            by_contact_id=link.contact.id,
            via="email",
            note=(request.form.get("note") or "")[:2000] or None,
            source_ip=request.remote_addr,
        )
    except (Forbidden, NotFound, Conflict) as exc:
        return _render(token, link, done=f"refused: {exc.detail}", status=403)
    db.session().refresh(page)
    return _render(token, Link(page, link.contact, link.until), done="acknowledged")


@bp.get("/directory/confirm/<token>")
def confirm_details_form(token: str) -> Any:
    """Show the person's details with a confirm button; nothing changes."""
    contact = _contact_of(token)
    if contact is None:
        return render_template("confirm_details.html", contact=None), 404
    return render_template("confirm_details.html", contact=contact, done=False)


@bp.post("/directory/confirm/<token>")
def confirm_details(token: str) -> Any:
    """The person confirms their details are still right: `confirmed_at` is stamped."""
    contact = _contact_of(token)
    if contact is None:
        return render_template("confirm_details.html", contact=None), 404
    contact = directory.confirm_contact(session=db.session(), contact_id=contact.id, via="link")
    return render_template("confirm_details.html", contact=contact, done=True)


def _contact_of(token: str) -> Contact | None:
    contact_id = links.read_confirm_token(str(current_app.config["SECRET_KEY"]), token)
    contact = db.session().get(Contact, contact_id) if contact_id is not None else None
    return contact if contact is not None and contact.erased_at is None else None


playbooks_cli = AppGroup("playbooks", help="Check and load playbook definitions.")


@playbooks_cli.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=True))
def validate(paths: tuple[str, ...]) -> None:
    """Validate YAML definitions (default: playbooks/definitions/); exit 1 naming file, line and field."""
    from pathlib import Path

    session = db.session()
    known = service.known(session)
    failed, checked = 0, 0
    files: list[Path] = []
    for raw in paths or (str(spec.DEFINITIONS),):
        path = Path(raw)
        files += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    for path in files:
        checked += 1
        try:
            parsed = spec.load(path.read_text(encoding="utf-8"), path.name, known)
        except spec.SpecError as exc:
            failed += 1
            for issue in exc.issues:
                click.echo(f"{exc.source}:{issue.line or '?'}: {issue.field}: {issue.message}")
            continue
        click.echo(f"{path.name}: ok ({parsed.name}, {len(parsed.definition['steps'])} steps)")
    click.echo(f"{checked - failed} of {checked} playbook(s) valid")
    if failed:
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.cli.add_command(playbooks_cli)
