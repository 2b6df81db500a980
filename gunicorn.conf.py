"""gunicorn settings: one gevent worker (it patches the standard library itself, before our imports)."""

import os

from app.observability import log_config

bind = os.environ.get("UCSC_BIND", "127.0.0.1:5000")
worker_class = "gevent"
workers = 1
worker_connections = 1000
timeout = 30
graceful_timeout = 10
loglevel = os.environ.get("UCSC_LOG_LEVEL", "info")
# UCSC_LOG_FORMAT=json: one JSON object per line; the app then writes each request's line with its request id.
logconfig_dict = log_config(os.environ.get("UCSC_LOG_FORMAT", "text"), loglevel)
accesslog = "-"
logger_class = "app.access_log.RedactingLogger"  # an intake key sent as ?key= never reaches the log
errorlog = "-"
# No control socket: several instances run side by side on one host (production, tests).
control_socket_disable = True


def post_worker_init(worker) -> None:
    """Start this process's change-feed tailer as soon as the worker is ready (not in create_app)."""
    try:
        worker.wsgi.extensions["ucsc.feed"].start()
    except Exception:  # the database may not be up yet: the first /live connect starts it then
        worker.log.exception("the change feed did not start; it will start on the first /live connect")
