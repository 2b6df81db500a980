"""gunicorn's logs with intake keys (`?key=TOKEN`) redacted: the access line, and the error log's request URIs."""

import logging
import os
import re
import traceback
from typing import Any

from gunicorn.glogging import Logger

_SECRET_PARAM = re.compile(r"(?i)((?:^|[?&;])(?:key|token|api_key|apikey)=)[^&;\s\"]*")
# The atoms that may carry a URL, hence a key: the request line, the query string, the referer.
_REDACTED = frozenset({"r", "q", "f", "{raw_uri}e", "{query_string}e", "{referer}i"})


def redact(text: str) -> str:
    """`text` with the value of every key/token query parameter replaced."""
    return _SECRET_PARAM.sub(r"\1[redacted]", text)


class RedactingLogger(Logger):
    """Senders that cannot set a header put their token in the URL: it must not reach the log files.

    The access line is formatted from the atoms its format names, each worked out when the format asks for it:
    gunicorn builds all of them for every request (every request and response header and every environ variable
    as an atom of its own), 7 % of the web's CPU for an alert repeat (py-spy under bench/sources.py).
    """

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled or not self.access_log.isEnabledFor(logging.INFO):
            return  # JSON logs: the app writes each request's line itself (app/observability.py)
        try:
            self.access_log.info(self.cfg.access_log_format, _Atoms(self, resp, req, environ, request_time))
        except Exception:
            self.error(traceback.format_exc())

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().error(msg, *_redacted(args), **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # A request that fails past the app is logged with its full URI ("Error handling request %s").
        super().exception(msg, *_redacted(args), **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().warning(msg, *_redacted(args), **kwargs)


class _Atoms(dict):
    """gunicorn's access-log atoms (see `Logger.atoms`), each made when the format names it, redacted and quoted as
    gunicorn's SafeAtoms quotes them; an atom that does not exist is "-"."""

    def __init__(self, logger: Logger, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        super().__init__(l="-")  # not empty: logging takes a lone non-empty mapping as the format's mapping
        self.logger, self.resp, self.req, self.environ, self.took = logger, resp, req, environ, request_time

    def __missing__(self, name: str) -> Any:
        name = name.lower() if name.startswith("{") else name  # {X-Forwarded-For}i is {x-forwarded-for}i
        value = self._atom(name)
        if isinstance(value, str):
            value = (redact(value) if name in _REDACTED else value).replace('"', '\\"')
        return value

    def _atom(self, name: str) -> Any:
        if name.startswith("{") and len(name) > 3 and name[-2] == "}":
            key, where = name[1:-2], name[-1]
            if where == "i":
                pairs = _items(getattr(self.req, "headers", self.req))
            elif where == "o":
                pairs = _items(self.resp.headers)
            else:
                pairs = self.environ.items() if where == "e" else ()
            found = "-"
            for k, v in pairs:
                if k.lower() == key:
                    found = v  # the last of a repeated header, as gunicorn's atoms keep it
            return found
        made = _SIMPLE.get(name)
        return made(self, self.environ, self.took) if made is not None else "-"


def _status(atoms: _Atoms) -> Any:
    status = atoms.resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(atoms: _Atoms) -> Any:
    return getattr(atoms.resp, "sent", None)


_SIMPLE: dict[str, Any] = {
    "h": lambda a, env, took: env.get("REMOTE_ADDR", "-"),
    "u": lambda a, env, took: a.logger._get_user(env) or "-",
    "t": lambda a, env, took: a.logger.now(),
    "r": lambda a, env, took: f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}",
    "s": lambda a, env, took: _status(a),
    "m": lambda a, env, took: env.get("REQUEST_METHOD"),
    "U": lambda a, env, took: env.get("PATH_INFO"),
    "q": lambda a, env, took: env.get("QUERY_STRING"),
    "H": lambda a, env, took: env.get("SERVER_PROTOCOL"),
    "b": lambda a, env, took: "-" if _sent(a) is None else str(_sent(a)),
    "B": lambda a, env, took: _sent(a),
    "f": lambda a, env, took: env.get("HTTP_REFERER", "-"),
    "a": lambda a, env, took: env.get("HTTP_USER_AGENT", "-"),
    "T": lambda a, env, took: took.seconds,
    "D": lambda a, env, took: took.seconds * 1_000_000 + took.microseconds,
    "M": lambda a, env, took: took.seconds * 1000 + took.microseconds // 1000,
    "L": lambda a, env, took: f"{took.seconds}.{took.microseconds:06d}",
    "p": lambda a, env, took: f"<{os.getpid()}>",
}


def _items(headers: Any) -> Any:
    return headers.items() if hasattr(headers, "items") else headers


def _redacted(args: tuple[Any, ...]) -> list[Any]:
    return [redact(a) if isinstance(a, str) else a for a in args]
