"""The asset registry: organisations and systems, and which system an incident's observables point at."""

from collections.abc import Iterable, Sequence
from datetime import date
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from incidents.access import Actor
from incidents.enums import ObservableType
from incidents.errors import FieldError, NotFound, ValidationFailed
from incidents.events import record_event
from incidents.models import Observable, Organisation, System, SystemAddress
from incidents.policy import Capability, require
from incidents.schemas.observables import ObservableIn
from incidents.schemas.registry import SystemCreate
from incidents.uow import in_transaction


@cache
def _systems_by_address() -> Any:
    """Plain columns, not System objects: most filings match nothing, and a winner is loaded by id."""
    systems, addresses = System.__table__, SystemAddress.__table__
    return (
        select(addresses.c.system_id, addresses.c.kind, addresses.c.value, systems.c.security_level)
        .join_from(addresses, systems, addresses.c.system_id == systems.c.id)
        .where(
            systems.c.active.is_(True),
            ((addresses.c.kind == "domain") & addresses.c.value.in_(bindparam("domains", expanding=True)))
            | ((addresses.c.kind == "ip") & addresses.c.value.in_(bindparam("ips", expanding=True))),
        )
    )


def organisation_by_code(session: Session, code: str, field_name: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.code == code))
    if org is None:
        raise ValidationFailed("unknown organisation", errors=[FieldError(field_name, f"no organisation {code!r}")])
    return org


def system_by_code(session: Session, code: str, field_name: str = "affected_system") -> System:
    system = session.scalar(select(System).where(System.code == code))
    if system is None:
        raise ValidationFailed("unknown system", errors=[FieldError(field_name, f"no system {code!r} in the registry")])
    return system


def _addresses_of(observables: Iterable[ObservableIn | Observable]) -> tuple[set[str], set[str]]:
    """Domains (with their parent domains) and IPs an incident's observables point at."""
    domains: set[str] = set()
    ips: set[str] = set()
    for obs in observables:
        host = None
        if obs.type == ObservableType.DOMAIN:
            host = obs.value
        elif obs.type == ObservableType.URL:
            host = urlsplit(obs.value).hostname
        elif obs.type in (ObservableType.IPV4, ObservableType.IPV6):
            ips.add(obs.value)
        if host:
            labels = host.lower().rstrip(".").split(".")
            domains.update(".".join(labels[i:]) for i in range(len(labels) - 1))
    return domains, ips


def match_system(session: Session, observables: Sequence[ObservableIn]) -> System | None:
    """The registry system the observables name: the most specific address wins, then the higher level."""
    return match_systems(session, [observables])[0]


def match_systems(session: Session, batch: Sequence[Sequence[ObservableIn]]) -> list[System | None]:
    """`match_system` for each list of observables in `batch`, with one registry query for all of them."""
    wanted = [_addresses_of(observables) for observables in batch]
    all_domains = set().union(*(domains for domains, _ in wanted))
    all_ips = set().union(*(ips for _, ips in wanted))
    if not all_domains and not all_ips:
        return [None] * len(batch)
    candidates = session.execute(_systems_by_address(), {"domains": list(all_domains), "ips": list(all_ips)}).all()
    matched: list[System | None] = []
    for domains, ips in wanted:
        mine = [row for row in candidates if row.value in (ips if row.kind == "ip" else domains)]
        best = min(mine, key=lambda row: (-len(row.value), -row.security_level, row.system_id), default=None)
        matched.append(session.get_one(System, best.system_id) if best else None)
    return matched


def save_system(*, session: Session, data: SystemCreate, actor: Actor) -> System:
    """Create or replace a system in the asset registry (keyed by code)."""
    require(actor, Capability.MANAGE_REGISTRY, "only operators and admins edit the registry")

    def work() -> System:
        system = session.scalar(select(System).where(System.code == data.code)) or System(code=data.code)
        system.name = data.name
        system.owner = organisation_by_code(session, data.owner, "owner") if data.owner else None
        system.operator = organisation_by_code(session, data.operator, "operator") if data.operator else None
        system.security_level = data.security_level
        system.national_important = data.national_important
        system.domains = data.domains
        system.public_ips = data.public_ips
        for name in ("security_provider", "connectivity_provider", "os", "services"):
            setattr(system, name, getattr(data, name))
        session.add(system)
        if system.id is not None:
            session.execute(delete(SystemAddress).where(SystemAddress.system_id == system.id))
            session.expire(system, ["addresses"])
        session.flush()
        addresses = [{"system_id": system.id, "kind": "domain", "value": d} for d in dict.fromkeys(data.domains)]
        addresses += [{"system_id": system.id, "kind": "ip", "value": ip} for ip in dict.fromkeys(data.public_ips)]
        if addresses:
            session.execute(insert(SystemAddress), addresses)
        record_event(
            session,
            kind="system.saved",
            actor=actor,
            data={"code": system.code, "security_level": system.security_level},
        )
        return system

    return in_transaction(session, work)


def list_systems(session: Session) -> list[System]:
    return list(session.scalars(select(System).order_by(System.code)))


def get_system(session: Session, code: str) -> System:
    system = session.scalar(select(System).where(System.code == code))
    if system is None:
        raise NotFound(f"no system {code}")
    return system


def list_organisations(session: Session, *, on: date | None = None) -> list[Organisation]:
    orgs = session.scalars(select(Organisation).order_by(Organisation.code))
    return [o for o in orgs if on is None or o.is_valid_on(on)]
