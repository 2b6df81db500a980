"""Commands run as `flask --app wsgi COMMAND`: init-db, create-user, create-token."""

import os
import secrets
import sys
from pathlib import Path

import click
import yaml
from flask import Flask, current_app
from flask.cli import with_appcontext
from werkzeug.security import generate_password_hash

from app import db
from app.auth import new_token
from incidents import accounts, roster
from incidents.enums import Role
from incidents.errors import DomainError

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
    key_file = instance / "secret_key"
    if not os.environ.get("UCSC_SECRET_KEY") and not key_file.exists():
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
        click.echo(f"secret key written to {key_file}")
    migrate()
    session = db.session()
    with session.begin():
        counts = roster.load_roster(session, yaml.safe_load((_HERE / "incidents" / "roster.yaml").read_text()))
        systems = 0
        if not no_demo:
            systems = roster.load_systems(
                session, yaml.safe_load((_HERE / "incidents" / "demo_systems.yaml").read_text())
            )
    click.echo(
        f"database ready ({db.engine().dialect.name}): {counts['organisations']} organisations, "
        f"{counts['positions']} seats, {systems} demo systems added"
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
    try:
        with session.begin():
            accounts.create_user(
                session=session, username=username, role=Role(role), display_name=display_name,
                organisation=organisation or current_app.config["STANDING_BODY"],
                password_hash=generate_password_hash(password),
            )  # fmt: skip
    except DomainError as exc:
        raise click.ClickException(f"{exc.detail}: {', '.join(e.message for e in exc.errors)}") from None
    click.echo(f"user {username} created with role {role}")


@click.command("create-token")
@click.argument("name")
@click.option("--role", type=ROLES, required=True)
@click.option("--user", default=None, help="Act as this user (default: a service account named NAME).")
@click.option("--organisation", default=None, help="The service account's organisation (default: the standing body).")
@with_appcontext
def create_token(name: str, role: str, user: str | None, organisation: str | None) -> None:
    """Create an API token; it is printed once, alone on the last line."""
    token, digest = new_token()
    session = db.session()
    try:
        with session.begin():
            accounts.create_token(
                session=session, name=name, role=Role(role), digest=digest, user=user,
                organisation=organisation or current_app.config["STANDING_BODY"],
            )  # fmt: skip
    except DomainError as exc:
        raise click.ClickException(f"{exc.detail}: {', '.join(e.message for e in exc.errors)}") from None
    click.echo(f"token {name!r} created with role {role}; it is shown once, store it now:")
    click.echo(token)


def init_app(app: Flask) -> None:
    for command in (init_db, create_user, create_token):
        app.cli.add_command(command)
