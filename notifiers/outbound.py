"""Requests to URLs people supply: never to loopback, private, link-local, multicast or reserved addresses.

A URL is checked when it is saved (`check_url`) and again when it is used: `client` resolves the name once,
checks every address, and connects to an address it checked, so a name that resolves elsewhere by then (DNS
rebinding) is refused. TLS still verifies the certificate against the name. `UCSC_OUTBOUND_ALLOW` lists the
internal networks and host names a deployment reaches on purpose.
"""

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

log = logging.getLogger("ucsc.outbound")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: inside someone's network, not the internet
# A NAT64 gateway forwards this prefix to the IPv4 address in its last 32 bits: that is the real target.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(ValueError):
    """The URL is not http(s), or its host is or resolves to an address outbound requests may not reach."""


@dataclass(frozen=True)
class Allowance:
    """Internal targets a deployment reaches on purpose: networks, and host names trusted whatever they resolve to."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: str | Iterable[str] | None) -> "Allowance":
        """`UCSC_OUTBOUND_ALLOW`: CIDRs, addresses and host names separated by commas (or a list of them)."""
        items = value.split(",") if isinstance(value, str) else list(value or [])
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                if "/" in item or ":" in item:
                    raise ValueError(f"OUTBOUND_ALLOW: {item!r} is neither a network nor a host name") from None
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _embedded(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def _kind(address: IPAddress) -> str | None:
    """What kind of internal address `address` is; None for a public unicast address."""
    inner = _embedded(address)
    if inner is not None:
        return _kind(inner)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in _SHARED:
        return "shared (carrier-grade NAT)"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def refusal(address: IPAddress, allow: Allowance) -> str | None:
    """Why a request may not go to `address` ("a loopback address"), or None when it may."""
    kind = _kind(address)
    inner = _embedded(address)
    if kind is None or allow.allows(address) or (inner is not None and allow.allows(inner)):
        return None
    return f"a {kind} address"


def resolve(host: str, port: int, allow: Allowance) -> list[str]:
    """The addresses `host` resolves to now, each checked; OutboundRefused if any of them may not be reached.

    Raises socket.gaierror when the name does not resolve.
    """
    name = host.strip("[]").lower().rstrip(".")
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if name in allow.hosts:
        return addresses
    for text in addresses:
        reason = refusal(ipaddress.ip_address(text), allow)
        if reason is not None:
            shown = f"{name} is" if name == text else f"{name} resolves to {text},"
            raise OutboundRefused(f"{shown} {reason}; UCSC_OUTBOUND_ALLOW lists the internal targets allowed")
    return addresses


def check_url(url: str, allow: Allowance) -> None:
    """Refuse (OutboundRefused) a URL that is not http(s) or whose host is, or resolves now to, an internal address.

    A name that does not resolve now passes: it is checked again each time it is used.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise OutboundRefused(f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise OutboundRefused("an http:// or https:// URL")
    host = parsed.raw_host.decode("ascii")
    try:
        resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80), allow)
    except OSError:
        return


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves each new connection's host once, checks the answers, and connects to a checked address."""

    def __init__(self, allow: Allowance) -> None:
        self.allow = allow

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve(host, port, self.allow)
        except OutboundRefused as exc:
            log.warning("refused a request to %s:%s: %s", host, port, exc)
            raise
        except OSError as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        *others, last = addresses  # getaddrinfo answers at least one address or raises
        for address in others:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        try:
            return super().connect_tcp(last, port, timeout, local_address, socket_options)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            raise type(exc)(f"{host} ({last}): {exc}") from exc


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's transport over a pool whose connections go through `_CheckedBackend`, with no proxy."""

    def __init__(self, allow: Allowance) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is replaced by the same pool with ours. Proxies from
        # the environment are left out (the check must see the address actually connected to); the CA
        # bundle from SSL_CERT_FILE/SSL_CERT_DIR still applies.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=100,  # httpx's default limits
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_CheckedBackend(allow),
        )


def client(allow: Allowance, *, timeout: float, headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client for user-supplied URLs: every connection checked, redirects never followed."""
    return httpx.Client(
        transport=_CheckedTransport(allow), timeout=timeout, headers=headers, follow_redirects=False, trust_env=False
    )
