"""JSON as RFC 8259 defines it, for every request body: what a strict reader elsewhere would refuse, we refuse first."""

import json
import logging
import math
import re
from typing import Any

import pydantic_core

from incidents.errors import FieldError, ValidationFailed

log = logging.getLogger("ucsc.input")

# pydantic-core's parser (the one the schemas use) refuses NaN, Infinity, a lone surrogate, invalid UTF-8 and
# nesting deeper than 200, but reads a number beyond a double as infinity: only a literal that can overflow
# (a three-digit exponent, or 309 digits) sends a body through the slower walk that finds one.
_MAY_OVERFLOW = re.compile(rb"[eE]\+?0*[1-9][0-9]{2,}|[0-9]{309,}")
_NON_FINITE = re.compile(rb"NaN|Infinity")
NOT_JSON = "not RFC 8259 JSON (no NaN, Infinity, number beyond a double, lone surrogate or nesting past 200)"


def _refused(why: str) -> ValidationFailed:
    return ValidationFailed("the body is not JSON", errors=[FieldError("body", f"{NOT_JSON}: {why}")])


def _has_non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads(raw: bytes | str) -> Any:
    """Decode a request body, refusing (ValidationFailed on `body`) anything outside RFC 8259."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        value = pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise _refused(str(exc)) from None
    if _MAY_OVERFLOW.search(data) and _has_non_finite(value):
        raise _refused("a number beyond a double")
    return value


def check(raw: bytes | str) -> None:
    """Refuse a body a schema would read as NaN or infinity (the schema's own parser refuses the rest)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _NON_FINITE.search(data) or _MAY_OVERFLOW.search(data):
        loads(data)


def servable(text: str, what: str = "") -> str:
    """Stored JSON as valid JSON: a non-finite number stored before parsing refused it is served as null."""
    if "NaN" not in text and "Infinity" not in text:
        return text
    try:
        pydantic_core.from_json(text, allow_inf_nan=False)
        return text
    except ValueError:
        pass
    log.warning("served %s with its non-finite numbers as null", what or "a stored object")
    return json.dumps(_finite(json.loads(text)), ensure_ascii=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
