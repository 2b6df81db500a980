"""The REST API under /api/v1: a module of routes per noun, each adding its routes to `operations.bp`."""

from flask import Flask

from app.api import (
    audit,
    directory,
    evidence,
    incidents,
    meta,
    operations,
    playbooks,
    registry,
    reports,
    sources,
    stix,
)

ROUTES = (audit, directory, evidence, incidents, meta, playbooks, registry, reports, sources, stix)


def init_app(app: Flask) -> None:
    """Serve the API: every route module above has added its routes to the blueprint."""
    app.register_blueprint(operations.bp)
