"""gunicorn's access line, written from the atoms its format names: the same line gunicorn writes, keys redacted."""

import logging
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config
from gunicorn.glogging import Logger, SafeAtoms

from app.access_log import RedactingLogger, redact

EVERY_ATOM = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(m)s %(U)s %(q)s %(H)s %(b)s %(B)s "%(f)s" "%(a)s" %(T)s %(D)s %(M)s '
    "%(L)s %(p)s %({X-Request-Id}i)s %({x-forwarded-for}i)s %({Content-Type}o)s %({raw_uri}e)s %({query_string}e)s "
    "%({referer}i)s %({nothing}i)s %(Z)s"
)


def _request(uri: str, query: str) -> tuple[SimpleNamespace, SimpleNamespace, dict[str, str], timedelta]:
    headers = [("HOST", "ucsc.local"), ("X-REQUEST-ID", 'r"1'), ("X-FORWARDED-FOR", "10.0.0.1"),
               ("X-FORWARDED-FOR", "10.0.0.2"), ("REFERER", f"https://siem.local{uri}")]  # fmt: skip
    req = SimpleNamespace(headers=headers)
    resp = SimpleNamespace(status="201 CREATED", sent=512, headers=[("Content-Type", "application/json")])
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "RAW_URI": uri, "PATH_INFO": uri.split("?")[0],
               "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_REFERER": f"https://siem.local{uri}",
               "HTTP_USER_AGENT": 'curl/8 "x"'}  # fmt: skip
    return req, resp, environ, timedelta(seconds=1, microseconds=23456)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _kept(logger: Logger) -> _Kept:
    """What gunicorn's access and error loggers write (they do not propagate to the root logger)."""
    kept = _Kept()
    logger.access_log.addHandler(kept)
    logger.error_log.addHandler(kept)
    return kept


def _lines(uri: str, query: str) -> tuple[str, str]:
    """Our line and the line gunicorn's own Logger writes for the same request (its redacted atoms redacted)."""
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", EVERY_ATOM)
    ours, theirs = RedactingLogger(cfg), Logger(cfg)
    req, resp, environ, took = _request(uri, query)
    ours.now = theirs.now = lambda: "[07/Dec/2026:09:00:00 +0000]"  # type: ignore[method-assign]
    kept = _kept(ours)
    ours.access(resp, req, environ, took)
    atoms = theirs.atoms(resp, req, environ, took)
    for name in ("r", "q", "f", "{raw_uri}e", "{query_string}e", "{referer}i"):
        atoms[name] = redact(atoms[name])
    [record] = kept.records
    return record.getMessage(), EVERY_ATOM % SafeAtoms(atoms)


def test_the_access_line_is_gunicorns_line_for_every_atom():
    line, expected = _lines("/api/v1/sources/wazuh?x=1", "x=1")
    assert line == expected
    assert '"POST /api/v1/sources/wazuh?x=1 HTTP/1.1" 201 POST' in line and ' r\\"1 10.0.0.2 application/json ' in line
    assert " 1 1023456 1023 1.023456 <" in line and line.endswith(" - -")


def test_a_key_in_the_url_is_redacted_in_every_atom_that_carries_it():
    line, expected = _lines("/api/v1/sources/splunk?key=ucsc_s3cr3t&x=1", "key=ucsc_s3cr3t&x=1")
    assert line == expected
    assert "ucsc_s3cr3t" not in line and line.count("key=[redacted]") == 6


def test_nothing_is_formatted_when_the_access_logger_is_off():
    cfg = Config()
    cfg.set("accesslog", "-")
    logger = RedactingLogger(cfg)
    kept = _kept(logger)
    req, resp, environ, took = _request("/healthz", "")
    del environ["RAW_URI"]  # a line formatted would fail on it, and log the failure as an error
    logger.access(resp, req, environ, took)
    assert [r.levelname for r in kept.records] == ["ERROR"]  # on: formatted, and failed
    kept.records.clear()
    logger.access_log.setLevel(logging.WARNING)  # JSON logs: the app writes each request's line itself
    logger.access(resp, req, environ, took)
    assert kept.records == []
