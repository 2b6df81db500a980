"""Demo directory (contacts, groups, weekly on-call rotations) and the shipped playbooks, for `init-db`."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.base import utcnow
from incidents.models import Organisation
from playbooks import focal, service
from playbooks.models import Contact, Group, GroupMember, Schedule, ScheduleMember

# Fictitious people at example.vn (RFC 2606-style reserved names): a deployment replaces them through the API/CSV.
DEMO_CONTACTS: list[dict[str, Any]] = [
    {
        "org": "dic",
        "name": "Trực ban Sở TT&TT (ca 1)",
        "title": "Cán bộ trực",
        "email": "truc1@dic.example.vn",
        "phone": "0237000101",
        "roles": ["standing_body.duty"],
    },
    {
        "org": "dic",
        "name": "Trực ban Sở TT&TT (ca 2)",
        "title": "Cán bộ trực",
        "email": "truc2@dic.example.vn",
        "phone": "0237000102",
        "roles": ["standing_body.duty"],
    },
    {
        "org": "dic",
        "name": "Tổ trưởng Tổ công tác",
        "title": "Phó Giám đốc Sở TT&TT",
        "email": "totruong@dic.example.vn",
        "phone": "0237000103",
        "roles": ["working_group.leader"],
    },
    {
        "org": "dic",
        "name": "Giám đốc Sở TT&TT",
        "title": "Phó Trưởng Ban",
        "email": "giamdoc@dic.example.vn",
        "phone": "0237000104",
        "roles": ["board.deputy_head"],
    },
    {
        "org": "ppc",
        "name": "Chủ tịch UBND tỉnh",
        "title": "Trưởng Ban",
        "email": "chutich@ppc.example.vn",
        "phone": "0237000201",
        "roles": ["board.head"],
    },
    {
        "org": "ppc",
        "name": "Phó Chủ tịch UBND tỉnh",
        "title": "Phó Trưởng Ban",
        "email": "phochutich@ppc.example.vn",
        "phone": "0237000202",
        "roles": ["board.deputy_head"],
    },
    {
        "org": "police",
        "name": "Trực PA05 (ca 1)",
        "title": "Phòng An ninh mạng và PCTP sử dụng CNC",
        "email": "pa05-1@police.example.vn",
        "phone": "0237000301",
        "roles": [],
    },
    {
        "org": "police",
        "name": "Trực PA05 (ca 2)",
        "title": "Phòng An ninh mạng và PCTP sử dụng CNC",
        "email": "pa05-2@police.example.vn",
        "phone": "0237000302",
        "roles": [],
    },
    {
        "org": "vnpt",
        "name": "Trực 24/7 VNPT Thanh Hóa (ca 1)",
        "title": "Trung tâm điều hành mạng",
        "email": "noc1@vnpt.example.vn",
        "phone": "0237000401",
        "roles": [],
    },
    {
        "org": "vnpt",
        "name": "Trực 24/7 VNPT Thanh Hóa (ca 2)",
        "title": "Trung tâm điều hành mạng",
        "email": "noc2@vnpt.example.vn",
        "phone": "0237000402",
        "roles": [],
    },
    {
        "org": "viettel",
        "name": "Trực 24/7 Viettel Thanh Hóa (ca 1)",
        "title": "Trung tâm điều hành",
        "email": "noc1@viettel.example.vn",
        "phone": "0237000501",
        "roles": [],
    },
    {
        "org": "viettel",
        "name": "Trực 24/7 Viettel Thanh Hóa (ca 2)",
        "title": "Trung tâm điều hành",
        "email": "noc2@viettel.example.vn",
        "phone": "0237000502",
        "roles": [],
    },
]
DEMO_GROUPS = [
    ("dic-duty", "Trực ban Cơ quan thường trực", "Standing body duty desk", "dic"),
    ("police-cyber", "Công an tỉnh — PA05", "Police cyber unit", "police"),
    ("vnpt-247", "Trực 24/7 VNPT Thanh Hóa", "VNPT 24/7 desk", "vnpt"),
    ("viettel-247", "Trực 24/7 Viettel Thanh Hóa", "Viettel 24/7 desk", "viettel"),
]
# A weekly rotation of each desk, starting on a Monday 08:00 local time (01:00 UTC).
ROTATION_START = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)


def load_demo_directory(session: Session) -> dict[str, int]:
    """Insert the demo contacts, groups and rotations that are missing; safe to run twice."""
    counts = {"contacts": 0, "groups": 0, "schedules": 0}
    orgs = {o.code: o.id for o in session.scalars(select(Organisation))}
    have = {c.email: c for c in session.scalars(select(Contact))}
    now = utcnow()
    for data in DEMO_CONTACTS:
        if data["email"] in have or data["org"] not in orgs:
            continue
        contact = Contact(
            organisation_id=orgs[data["org"]],
            name=data["name"],
            title=data["title"],
            email=data["email"],
            phone=data["phone"],
            roles=data["roles"],
            channels=["telegram", "email", "sms"],
            language="vi",
            active=True,
            confirmed_at=now,
            details_changed_at=now,
        )
        session.add(contact)
        have[data["email"]] = contact
        counts["contacts"] += 1
    session.flush()
    groups = set(session.scalars(select(Group.code)))
    schedules = set(session.scalars(select(Schedule.code)))
    for code, name_vi, name_en, org in DEMO_GROUPS:
        if org not in orgs:
            continue
        members = [
            c
            for c in have.values()
            if c.organisation_id == orgs[org]
            and c.title != "Phó Trưởng Ban"
            and not set(c.roles or []) & {"working_group.leader", "board.deputy_head", "board.head"}
        ]
        if code not in groups:
            group = Group(code=code, name_vi=name_vi, name_en=name_en, organisation_id=orgs[org])
            group.members = [GroupMember(contact_id=c.id, position=n) for n, c in enumerate(members)]
            session.add(group)
            counts["groups"] += 1
        if code not in schedules and members:
            schedule = Schedule(
                code=code, name=name_vi, organisation_id=orgs[org], starts_at=ROTATION_START, shift_hours=168
            )
            schedule.members = [ScheduleMember(contact_id=c.id, position=n) for n, c in enumerate(members)]
            session.add(schedule)
            counts["schedules"] += 1
    session.flush()
    return counts


def load_playbooks(session: Session) -> tuple[list[str], list[str]]:
    """The shipped definitions as versions (a changed file adds a version); the names added and the errors."""
    added, errors = service.seed_definitions(session)
    focal.schedule_focal_check(session)
    return added, [str(e) for e in errors]
