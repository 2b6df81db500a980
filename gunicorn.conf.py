"""gunicorn settings: one gevent worker (it patches the standard library itself, before our imports)."""

import os

bind = os.environ.get("UCSC_BIND", "127.0.0.1:5000")
worker_class = "gevent"
workers = 1
worker_connections = 1000
timeout = 30
graceful_timeout = 10
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("UCSC_LOG_LEVEL", "info")
