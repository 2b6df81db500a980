"""Observables as clients send them: each value checked for its type and put in canonical form."""

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from incidents.enums import ObservableType
from incidents.schemas.base import DEFAULT_LIMITS, Strict

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?$")


_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


_HASH_LENGTHS = {"MD5": 32, "SHA-1": 40, "SHA-256": 64, "SHA-512": 128}


class ObservableIn(Strict):
    """An observable: its STIX cyber-observable type and value (`file` carries hashes)."""

    type: ObservableType
    value: str = Field(min_length=1, max_length=2048)
    hashes: dict[str, str] | None = Field(default=None, description="For `file`: MD5, SHA-1, SHA-256, SHA-512.")

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        return normalise_value(kind, value) if kind else value

    @field_validator("hashes")
    @classmethod
    def _check_hashes(cls, hashes: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        return normalise_hashes(info.data.get("type"), hashes)

    @model_validator(mode="after")
    def _file_has_hash(self) -> "ObservableIn":
        if self.type is ObservableType.FILE and not self.hashes:
            raise ValueError("a file observable needs at least one hash")
        return self


def normalise_value(kind: ObservableType, value: str) -> str:
    """Check an observable's value for its type and return it in canonical form."""
    match kind:
        case ObservableType.IPV4 | ObservableType.IPV6:
            try:
                net = ipaddress.ip_network(value, strict=False) if "/" in value else ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"not an IP address: {value!r}") from None
            if net.version != (4 if kind is ObservableType.IPV4 else 6):
                raise ValueError(f"{value!r} is not an {kind.value} value")
            return str(net)
        case ObservableType.DOMAIN:
            domain = value.lower().rstrip(".")
            try:
                domain = domain.encode("idna").decode("ascii")
            except UnicodeError:
                raise ValueError(f"not a domain name: {value!r}") from None
            if not _DOMAIN_RE.match(domain) or "." not in domain:
                raise ValueError(f"not a domain name: {value!r}")
            return domain
        case ObservableType.URL:
            try:
                parts = urlsplit(value)
                host = parts.hostname
            except ValueError:
                raise ValueError(f"not a URL: {value!r}") from None
            if parts.scheme.lower() not in {"http", "https", "ftp", "ftps", "ws", "wss"} or not host:
                raise ValueError("a URL needs a scheme (http, https, ftp, ws) and a host")
            return value
        case ObservableType.EMAIL:
            if not _EMAIL_RE.match(value):
                raise ValueError(f"not an e-mail address: {value!r}")
            local, _, host = value.rpartition("@")
            return f"{local}@{host.lower()}"
    return value


def normalise_hashes(kind: ObservableType | None, hashes: dict[str, str] | None) -> dict[str, str] | None:
    """Check a file's hashes and spell their algorithms as STIX does (SHA-256)."""
    if not hashes:
        return None
    if kind is not ObservableType.FILE:
        raise ValueError("hashes are only allowed on file observables")
    clean: dict[str, str] = {}
    for algo, digest in hashes.items():
        name = algo.upper().replace("_", "-")
        name = {"SHA1": "SHA-1", "SHA256": "SHA-256", "SHA512": "SHA-512"}.get(name, name)
        if name not in _HASH_LENGTHS:
            raise ValueError(f"unknown hash algorithm {algo!r}; use MD5, SHA-1, SHA-256 or SHA-512")
        if len(digest) != _HASH_LENGTHS[name] or not re.fullmatch(r"[0-9a-fA-F]+", digest):
            raise ValueError(f"{name} must be {_HASH_LENGTHS[name]} hexadecimal characters")
        clean[name] = digest.lower()
    return clean


class ObservablesAdd(Strict):
    observables: list[ObservableIn] = Field(min_length=1, json_schema_extra={"maxItems": DEFAULT_LIMITS.observables})
