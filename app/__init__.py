"""The Flask edge of UCSC: create_app builds and binds everything; nothing happens at import time."""

import hashlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request

from app import config as defaults
from notifiers.outbound import Allowance

VERSION = "0.1.0"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then UCSC_* environment, then `config` (tests pass theirs)."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(defaults.DEFAULTS, VERSION=VERSION)
    app.config.from_prefixed_env("UCSC")
    if config:
        app.config.from_mapping(config)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = defaults.sqlite_url(app.instance_path)
    if not app.config["OUTBOX_FILE"]:
        tag = hashlib.sha256(str(app.config["DATABASE_URL"]).encode()).hexdigest()[:12]
        app.config["OUTBOX_FILE"] = str(Path(app.instance_path) / f"outbox-{tag}.jsonl")
    if not app.config["BASE_URL"]:
        app.config["BASE_URL"] = defaults.base_url_of(app.config["BIND"])
    if not app.config["SECRET_KEY"]:
        # `init-db` writes instance/secret_key on first run; without it sessions last one process.
        app.config["SECRET_KEY"] = defaults.read_secret_key(app.instance_path) or secrets.token_hex(32)
    if not app.config["AUDIT_KEY"]:
        app.config["AUDIT_KEY"] = defaults.read_audit_key(app.instance_path, str(app.config["SECRET_KEY"]))
    if not app.config["AUDIT_ANCHOR_FILE"]:
        # One anchor per database: databases served from one folder (tests, benches, a staging copy) never share one.
        tag = hashlib.sha256(str(app.config["DATABASE_URL"]).encode()).hexdigest()[:12]
        app.config["AUDIT_ANCHOR_FILE"] = str(Path(app.instance_path) / f"audit_anchor-{tag}")
    app.json.ensure_ascii = False
    app.json.sort_keys = False

    # Imported here, not at the top: gunicorn.conf.py imports app.observability in gunicorn's master, which must
    # not load the web's modules (Socket.IO, Redis, ssl) before the gevent worker patches the standard library.
    from werkzeug.middleware.proxy_fix import ProxyFix

    from app import (
        ack,
        api,
        auth,
        backup,
        bench,
        cli,
        db,
        errors,
        observability,
        sockets,
        stix_cli,
        taxii,
        web,
        wiring,
        worker,
    )
    from app.telegram import webhook as telegram_webhook

    db.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    cli.init_app(app)
    app.cli.add_command(worker.worker_command)
    api.init_app(app)
    app.register_blueprint(taxii.bp)
    app.cli.add_command(stix_cli.stix_cli)
    sockets.init_app(app)
    web.init_app(app)
    ack.init_app(app)
    app.register_blueprint(telegram_webhook.bp)  # POST /telegram/webhook (webhook mode)
    if app.config["BENCH_ROUTES"]:
        app.register_blueprint(bench.bp)
    _request_ids(app)
    observability.init_app(app)
    app.cli.add_command(backup.backup_command)
    app.cli.add_command(backup.restore_command)
    app.add_url_rule("/healthz", "healthz", healthz)
    wiring.install(app)
    # A mistyped allowance fails here, at start, not at the first contact saved or webhook sent.
    Allowance.parse(app.config["OUTBOUND_ALLOW"])
    if hops := int(app.config["TRUSTED_PROXIES"]):
        # Outermost, so Socket.IO connects see it too. Behind nginx every peer is the proxy; only hops we run
        # are believed, since a client can write any X-Forwarded-For it likes.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    return app


def _request_ids(app: Flask) -> None:
    log = logging.getLogger("ucsc.access")

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else secrets.token_hex(16)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if response.status_code >= 500:
            log.warning("%s %s -> %s", request.method, request.path, response.status_code,
                        extra={"request_id": g.get("request_id")})  # fmt: skip
        return response


def healthz() -> Response:
    """200 once the database answers, with the worker's heartbeat age, the job lag and the feed's lag."""
    from sqlalchemy import func, select

    from app import db
    from incidents import jobs
    from incidents.models import Event

    last_event = db.session().scalar(select(func.max(Event.id)))
    worker = jobs.health(db.engine())
    stale = worker["worker_heartbeat_age"] is None or worker["worker_heartbeat_age"] > float(
        current_app.config["WORKER_STALE_SECONDS"]
    )
    return jsonify({
        "status": "ok",
        "version": VERSION,
        "database": db.engine().dialect.name,
        "last_event_id": last_event or 0,
        **worker,
        "worker_stale": stale,
        **current_app.extensions["ucsc.feed"].health(),
    })  # fmt: skip


def instance_path(app: Flask) -> Path:
    path = Path(app.instance_path)
    path.mkdir(parents=True, exist_ok=True)
    return path
