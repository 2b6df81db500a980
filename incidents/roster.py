"""Load the board's roster (organisations and seats) as editable data; safe to run twice."""

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.models import Organisation, Position, System, SystemAddress


def load_roster(session: Session, roster: dict[str, Any], *, valid_from: date | None = None) -> dict[str, int]:
    """Insert organisations and seats that are missing; rows an admin already edited are left alone."""
    counts = {"organisations": 0, "positions": 0}
    by_code = {o.code: o for o in session.scalars(select(Organisation))}
    for code, data in roster.get("organisations", {}).items():
        if code not in by_code:
            org = Organisation(
                code=code, name_vi=data["vi"], name_en=data.get("en"), note=data.get("note"), valid_from=valid_from
            )
            session.add(org)
            by_code[code] = org
            counts["organisations"] += 1
    session.flush()

    have = {(p.body, p.role, p.organisation_id) for p in session.scalars(select(Position))}

    def seat(body: str, role: str, title: str, holder: str | None, org_code: str) -> None:
        org = by_code.get(org_code)
        if org is None or (body, role, org.id) in have:
            return
        session.add(
            Position(
                body=body, role=role, title_vi=title, holder_vi=holder, organisation_id=org.id, valid_from=valid_from
            )
        )
        have.add((body, role, org.id))
        counts["positions"] += 1

    board = roster.get("board", {})
    for pos in board.get("positions", []):
        for org_code in pos.get("orgs", [pos.get("org")]):
            if org_code:
                seat("board", pos["role"], pos["vi"], pos.get("holder_vi"), org_code)
    if board.get("standing_body"):
        seat("board", "standing_body", "Cơ quan thường trực", None, board["standing_body"])
    group = roster.get("working_group", {})
    for role in ("leader", "deputies", "members", "operators"):
        entry = group.get(role)
        if not entry:
            continue
        for org_code in entry.get("orgs", [entry.get("org")]):
            if org_code:
                seat(
                    "working_group",
                    role.rstrip("s") if role != "deputies" else "deputy",
                    entry["vi"],
                    entry.get("holder_vi"),
                    org_code,
                )
    session.flush()
    return counts


def load_systems(session: Session, systems: list[dict[str, Any]]) -> int:
    """Insert demo systems of the registry that are missing."""
    added = 0
    orgs = {o.code: o.id for o in session.scalars(select(Organisation))}
    have = set(session.scalars(select(System.code)))
    for data in systems:
        if data["code"] in have:
            continue
        system = System(
            code=data["code"],
            name=data["name"],
            owner_id=orgs.get(data.get("owner")),
            operator_id=orgs.get(data.get("operator")),
            security_level=data["security_level"],
            national_important=data.get("national_important", False),
            domains=data.get("domains", []),
            public_ips=data.get("public_ips", []),
            connectivity_provider=data.get("connectivity_provider"),
            os=data.get("os"),
            services=data.get("services"),
        )
        system.addresses = [SystemAddress(kind="domain", value=d) for d in system.domains]
        system.addresses += [SystemAddress(kind="ip", value=ip) for ip in system.public_ips]
        session.add(system)
        added += 1
    session.flush()
    return added
