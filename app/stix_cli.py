"""`flask --app wsgi stix import FILE…`: import large STIX bundles from files, in batches, with a progress bar."""

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from app import db
from app.api.stix import import_settings
from incidents import strict_json
from incidents.access import Actor
from incidents.enums import Role
from incidents.errors import ValidationFailed
from incidents.models import User
from incidents.stix import importer

BATCH = 2000


@click.group("stix")
def stix_cli() -> None:
    """STIX 2.1 import and export."""


def _admin() -> Actor:
    session = db.session()
    user = session.scalar(select(User).where(User.role == Role.ADMIN, User.active).order_by(User.id).limit(1))
    if user is None:
        raise click.ClickException("create an admin first (flask --app wsgi create-user NAME --role admin)")
    session.commit()
    return Actor(user_id=user.id, username=user.username, role=Role.ADMIN, organisation_id=user.organisation_id)


@stix_cli.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch", default=BATCH, show_default=True, help="Objects per transaction.")
@with_appcontext
def import_command(files: tuple[Path, ...], batch: int) -> None:
    """Import bundles: every file is checked whole first, then stored batch by batch (no size limit)."""
    actor = _admin()
    options = import_settings()
    options["limit"] = max(batch, 1)
    for path in files:
        try:
            bundle = strict_json.loads(path.read_bytes())
        except ValidationFailed as exc:
            raise click.ClickException(f"{path}: {exc.errors[0].message}") from None
        objects = bundle.get("objects") if isinstance(bundle, dict) else None
        if not isinstance(objects, list):
            raise click.ClickException(f"{path}: not a STIX bundle")
        ids = [o.get("id") for o in objects if isinstance(o, dict)]
        stored = duplicates = 0
        with click.progressbar(length=len(objects), label=f"{path.name}", show_pos=True, file=sys.stderr) as bar:
            for start in range(0, len(objects), batch):
                chunk = objects[start : start + batch]
                try:
                    result = importer.import_objects(
                        session=db.session(), objects=chunk, actor=actor, known_ids=ids, **options
                    )
                except ValidationFailed as exc:
                    lines = "\n".join(f"  {e.field}: {e.message}" for e in exc.errors)
                    raise click.ClickException(
                        f"{path}: objects {start}–{start + len(chunk) - 1} refused ({exc.detail}); "
                        f"{stored} stored before them\n{lines}"
                    ) from None
                stored += result.stored
                duplicates += result.duplicates
                bar.update(len(chunk))
        click.echo(f"{path}: {stored} stored, {duplicates} already known")
