"""Commands run as `flask --app wsgi COMMAND`: init-db, create-user, create-token, revoke-token, audit."""

import getpass
import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import yaml
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app import db
from app.auth import new_token
from incidents import accounts, audit, roster
from incidents.base import utcnow
from incidents.enums import Role
from incidents.errors import DomainError
from incidents.models import ApiToken, AuditEntry
from incidents.uow import in_transaction
from playbooks import seed

ROLES = click.Choice([r.value for r in Role])
_HERE = Path(__file__).resolve().parent.parent


def migrate(engine_url_or_connection: object = None) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    with db.engine().connect() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        connection.commit()


@click.command("init-db")
@click.option("--no-demo", is_flag=True, help="Skip the demo systems of the asset registry.")
@with_appcontext
def init_db(no_demo: bool) -> None:
    """Create or migrate the schema and load the roster; safe to run twice."""
    instance = Path(current_app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    # Keys from the environment mean a deployment: then no key file, and the audit key without its own variable
    # is derived from the secret key (app/config.py).
    for name, variable in (("secret_key", "UCSC_SECRET_KEY"), ("audit_key", "UCSC_AUDIT_KEY")):
        key_file = instance / name
        if not (os.environ.get(variable) or os.environ.get("UCSC_SECRET_KEY")) and not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
            click.echo(f"{name.replace('_', ' ')} written to {key_file}")
            if name == "audit_key":
                current_app.config["AUDIT_KEY"] = key_file.read_text()
                install_audit_keys(current_app)
    migrate()
    session = db.session()
    # Rows written before audit keys existed are pinned by a signed checkpoint after them (its copy outside the
    # database is the worker's and `audit checkpoint`'s to keep).
    if session.scalar(select(AuditEntry.mac).order_by(AuditEntry.id.desc()).limit(1)) is None:
        audit.checkpoint(session, actor=_cli_actor(), anchor_file=None, only_if_new=True)
    with session.begin():
        counts = roster.load_roster(session, yaml.safe_load((_HERE / "incidents" / "roster.yaml").read_text()))
        systems = 0
        directory = {"contacts": 0}
        if not no_demo:
            systems = roster.load_systems(
                session, yaml.safe_load((_HERE / "incidents" / "demo_systems.yaml").read_text())
            )
            directory = seed.load_demo_directory(session)
        playbooks_added, playbook_errors = seed.load_playbooks(session)
    for error in playbook_errors:
        click.echo(f"playbook refused: {error}", err=True)
    click.echo(
        f"database ready ({db.engine().dialect.name}): {counts['organisations']} organisations, "
        f"{counts['positions']} seats, {systems} demo systems added; {directory['contacts']} demo contacts, "
        f"{len(playbooks_added)} playbook versions added"
    )


@click.command("create-user")
@click.argument("username")
@click.option("--role", type=ROLES, required=True)
@click.option("--organisation", default=None, help="Organisation code (default: the standing body).")
@click.option("--name", "display_name", default=None)
@with_appcontext
def create_user(username: str, role: str, organisation: str | None, display_name: str | None) -> None:
    """Create a user; the password is read from standard input."""
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 10:
        raise click.UsageError("the password (on standard input) needs at least 10 characters")
    session = db.session()
    organisation = organisation or current_app.config["STANDING_BODY"]

    def work() -> None:
        accounts.create_user(
            session=session, username=username, role=Role(role), display_name=display_name,
            organisation=organisation, password_hash=generate_password_hash(password),
        )  # fmt: skip
        audit.append(session, action=audit.Action.USER_CREATED, actor=_cli_actor(), target=username,
                     data={"role": role, "organisation": organisation})  # fmt: skip

    try:
        in_transaction(session, work)
    except DomainError as exc:
        raise click.ClickException(f"{exc.detail}: {', '.join(e.message for e in exc.errors)}") from None
    click.echo(f"user {username} created with role {role}")


@click.command("create-token")
@click.argument("name")
@click.option("--role", type=ROLES, required=True)
@click.option("--user", default=None, help="Act as this user (default: a service account named NAME).")
@click.option("--organisation", default=None, help="The service account's organisation (default: the standing body).")
@click.option("--webhook", default=None, help="Post the receipt of each incident this token files to this URL.")
@with_appcontext
def create_token(name: str, role: str, user: str | None, organisation: str | None, webhook: str | None) -> None:
    """Create an API token; it is printed once, alone on the last line."""
    token, digest = new_token()
    webhook_secret = secrets.token_urlsafe(32) if webhook else None
    session = db.session()

    def work() -> None:
        api_token = accounts.create_token(
            session=session, name=name, role=Role(role), digest=digest, user=user,
            organisation=organisation or current_app.config["STANDING_BODY"],
            webhook=(webhook, webhook_secret) if webhook else None,
            outbound_allow=current_app.config["OUTBOUND_ALLOW"],
        )  # fmt: skip
        audit.append(session, action=audit.Action.TOKEN_CREATED, actor=_cli_actor(), target=name,
                     data={"token_id": api_token.id, "role": role, "user": user or name})  # fmt: skip

    try:
        in_transaction(session, work)
    except DomainError as exc:
        raise click.ClickException(f"{exc.detail}: {', '.join(e.message for e in exc.errors)}") from None
    if webhook:
        click.echo(f"receipts go to {webhook}, signed (X-UCSC-Signature, HMAC-SHA256) with the secret {webhook_secret}")
    click.echo(f"token {name!r} created with role {role}; it is shown once, store it now:")
    click.echo(token)


@click.command("revoke-token")
@click.argument("name")
@with_appcontext
def revoke_token(name: str) -> None:
    """Revoke every live API token named NAME."""
    session = db.session()

    def work() -> int:
        tokens = session.scalars(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))).all()
        for api_token in tokens:
            api_token.revoked_at = utcnow()
            audit.append(session, action=audit.Action.TOKEN_REVOKED, actor=_cli_actor(), target=name,
                         data={"token_id": api_token.id, "role": str(api_token.role)})  # fmt: skip
        return len(tokens)

    revoked = in_transaction(session, work)
    if not revoked:
        raise click.ClickException(f"no live token named {name!r}")
    seconds = current_app.config["TOKEN_CACHE_SECONDS"]
    click.echo(f"{revoked} token(s) named {name!r} revoked; servers drop them from their cache within {seconds} s")


def _cli_actor() -> str:
    """Who acts from the server's shell, as the audit trail names them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _timestamp(_ctx: click.Context, _param: click.Parameter, value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("an ISO 8601 timestamp, e.g. 2026-11-01T00:00:00+07:00") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


audit_cli = AppGroup("audit", help="Check and export the hash-chained audit trail.")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain, the rows' signatures and the checkpoints; exit 1 naming the first broken row."""
    result = audit.verify(db.session(), anchor_file=_anchor_file())
    if not result.ok:
        where = f"at row {result.first_bad_id}" if result.first_bad_id is not None else "before its first row"
        click.echo(f"audit trail broken {where}: {result.reason}")
        sys.exit(1)
    click.echo(f"audit trail intact: {result.checked} rows")


@audit_cli.command("checkpoint")
def audit_checkpoint() -> None:
    """Append a signed checkpoint and keep its copy in UCSC_AUDIT_ANCHOR_FILE, outside the database."""
    anchor_file = _anchor_file()
    anchor = audit.checkpoint(db.session(), actor=_cli_actor(), anchor_file=anchor_file)
    assert anchor is not None  # noqa: S101 - a checkpoint asked for unconditionally is always written
    click.echo(f"audit checkpoint at row {anchor.id} ({anchor.count} rows), anchored in {anchor_file}")


def _anchor_file() -> Path:
    return Path(current_app.config["AUDIT_ANCHOR_FILE"])


def install_audit_keys(app: Flask) -> None:
    """Sign the audit rows this app's engine writes with UCSC_AUDIT_KEY; UCSC_AUDIT_KEYS_OLD still verify."""
    keys = audit.Keys.parse(str(app.config["AUDIT_KEY"]), app.config.get("AUDIT_KEYS_OLD") or "")
    audit.install(app.extensions["ucsc.engine"], keys)


@audit_cli.command("export")
@click.option("--since", required=True, callback=_timestamp, help="ISO 8601 start, inclusive (UTC without an offset).")
@click.option("--until", required=True, callback=_timestamp, help="ISO 8601 end, exclusive (UTC without an offset).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: stdout.")
def audit_export(since: datetime, until: datetime, output: Path | None) -> None:
    """Write the rows of a time range as JSON lines, hashes included; the export is itself audited."""
    if until <= since:
        raise click.BadParameter("must be later than --since", param_hint="--until")
    rows = audit.export_range(session=db.session(), actor=_cli_actor(), since=since, until=until)
    lines = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    if output is None:
        click.echo(lines, nl=False)
        return
    output.write_text(lines, encoding="utf-8")
    click.echo(f"{len(rows)} rows written to {output}", err=True)


def init_app(app: Flask) -> None:
    install_audit_keys(app)
    for command in (init_db, create_user, create_token, revoke_token, audit_cli):
        app.cli.add_command(command)
