"""gunicorn's logs with intake keys (`?key=TOKEN`) redacted: the access line, and the error log's request URIs."""

import re
from typing import Any

from gunicorn.glogging import Logger

_SECRET_PARAM = re.compile(r"(?i)((?:^|[?&;])(?:key|token|api_key|apikey)=)[^&;\s\"]*")


def redact(text: str) -> str:
    """`text` with the value of every key/token query parameter replaced."""
    return _SECRET_PARAM.sub(r"\1[redacted]", text)


class RedactingLogger(Logger):
    """Senders that cannot set a header put their token in the URL: it must not reach the log files."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q", "f", "{raw_uri}e", "{query_string}e", "{referer}i"):
            if isinstance(atoms.get(name), str):
                atoms[name] = redact(atoms[name])
        return atoms

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().error(msg, *_redacted(args), **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # A request that fails past the app is logged with its full URI ("Error handling request %s").
        super().exception(msg, *_redacted(args), **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().warning(msg, *_redacted(args), **kwargs)


def _redacted(args: tuple[Any, ...]) -> list[Any]:
    return [redact(a) if isinstance(a, str) else a for a in args]
