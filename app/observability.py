"""Prometheus metrics at /metrics and structured JSON logs that carry the request id."""

import hmac
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, current_app, g, has_request_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.base import Base
from incidents.models import Incident

INTAKE_ENDPOINTS = {"api.create_incident", "api.create_incidents_bulk", "api.post_source_alert",
                    "api.post_thehive_alert"}  # fmt: skip
# The standard library's LogRecord attributes: everything else on a record was passed as `extra`.
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def init_app(app: Flask) -> None:
    """Count requests and intake outcomes in a registry of this app's own, served at /metrics."""
    registry = CollectorRegistry(auto_describe=True)
    requests_total = Counter(
        "ucsc_http_requests", "HTTP requests answered", ["method", "endpoint", "status"], registry=registry
    )
    duration = Histogram(
        "ucsc_http_request_duration_seconds", "Time to answer an HTTP request", ["endpoint"], registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    )  # fmt: skip
    intake = Counter("ucsc_intake", "Incident filings by outcome", ["outcome"], registry=registry)
    registry.register(StateCollector(app))
    app.extensions["ucsc.metrics"] = registry
    access = logging.getLogger("ucsc.access")
    # In JSON mode the app writes the access line itself, with the request id; in text mode gunicorn does.
    log_requests = app.config.get("LOG_FORMAT") == "json"

    # Each label set's child, kept: prometheus_client's labels() checks and locks at every call (a third of this
    # hook's cost in a request's floor). As many children as the metrics hold themselves.
    counted: dict[tuple[str, str, int], Any] = {}
    timed: dict[str, Any] = {}

    @app.after_request
    def _count(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        key = (request.method, endpoint, response.status_code)
        if (child := counted.get(key)) is None:
            child = counted.setdefault(key, requests_total.labels(key[0], endpoint, str(key[2])))
        child.inc()
        started = g.get("started")
        elapsed = time.perf_counter() - started if started is not None else 0.0
        if (timer := timed.get(endpoint)) is None:
            timer = timed.setdefault(endpoint, duration.labels(endpoint))
        timer.observe(elapsed)
        if endpoint in INTAKE_ENDPOINTS and request.method == "POST":
            intake.labels(intake_outcome(response)).inc()
        if log_requests:
            access.info(
                "%s %s %s", request.method, request.path, response.status_code,
                extra={"method": request.method, "path": request.path, "status": response.status_code,
                       "duration_ms": round(elapsed * 1000, 2), "remote_addr": request.remote_addr},
            )  # fmt: skip
        return response

    app.add_url_rule("/metrics", "metrics", metrics)


def intake_outcome(response: Response) -> str:
    """replayed (Idempotency-Key), created (201), deduplicated (200 on a dedup_key match), noticed (202), or
    refused."""
    if response.headers.get("Idempotent-Replayed") == "true":
        return "replayed"
    if response.status_code == 201:
        return "created"
    if response.status_code == 200:
        return "deduplicated"
    if response.status_code == 202:
        return "noticed"  # an alert source's notice (resolved) applied to an open incident
    if response.status_code == 429:
        return "rate_limited"
    return "refused" if response.status_code < 500 else "failed"


def metrics() -> Response:
    """The Prometheus text exposition; behind `UCSC_METRICS_TOKEN` (Bearer) when one is configured."""
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), str(token).encode()):
            abort(401)
    return Response(generate_latest(current_app.extensions["ucsc.metrics"]), mimetype=CONTENT_TYPE_LATEST)


class StateCollector(Collector):
    """Gauges read at scrape time: jobs, pages and incidents by state, lags, heartbeat, socket clients."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def describe(self) -> list:
        return []  # collected on demand only: registering must not touch the database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self.app.extensions["ucsc.engine"]
        health = jobs.health(engine)
        yield _gauge("ucsc_worker_heartbeat_age_seconds", "Age of the newest running worker's heartbeat",
                     health["worker_heartbeat_age"])  # fmt: skip
        yield _gauge("ucsc_job_lag_seconds", "How long the oldest due job has waited", health["job_lag"])
        feed = self.app.extensions["ucsc.feed"].health()
        yield _gauge("ucsc_feed_lag_seconds", "Commit-to-emit lag of this process's change-feed tailer",
                     feed["feed_lag"])  # fmt: skip
        yield _gauge("ucsc_feed_cursor", "Last event id this process's tailer emitted", feed["feed_cursor"])
        yield _gauge("ucsc_socket_clients", "Socket.IO clients connected to /live on this process",
                     socket_clients(self.app))  # fmt: skip
        with Session(engine) as session:
            yield _by_state(session, "ucsc_jobs", "Jobs by state", Base.metadata.tables["jobs"])
            for table_name, doc in (("pages", "Pages by state"), ("deliveries", "Deliveries by state")):
                table = Base.metadata.tables.get(table_name)
                if table is not None and "state" in table.c:
                    yield _by_state(session, f"ucsc_{table_name}", doc, table)
            open_incidents = GaugeMetricFamily("ucsc_incidents", "Incidents by status", labels=["status"])
            for status, count in session.execute(select(Incident.status, func.count()).group_by(Incident.status)):
                open_incidents.add_metric([str(status)], count)
            yield open_incidents


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float("nan") if value is None else float(value))


def _by_state(session: Session, name: str, doc: str, table: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["state"])
    for state, count in session.execute(select(table.c.state, func.count()).group_by(table.c.state)):
        family.add_metric([str(state)], count)
    return family


def socket_clients(app: Flask) -> int:
    """Connected sids in the /live namespace of this process (python-socketio keeps them in room None)."""
    socketio = app.extensions.get("ucsc.socketio")
    server = getattr(socketio, "server", None)
    if server is None:
        return 0
    return len(server.manager.rooms.get("/live", {}).get(None, {}))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or _current_request_id()
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and k != "request_id"})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _current_request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


def log_config(fmt: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the web (gunicorn's `logconfig_dict`) and the worker process."""
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"level": level.upper(), "handlers": ["main"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["main"], "propagate": False},
            # JSON mode logs each request from the app (with its request id) instead of gunicorn's access line.
            "gunicorn.access": {"level": "WARNING" if fmt == "json" else "INFO", "handlers": ["main"],
                                "propagate": False},
        },
    }  # fmt: skip
