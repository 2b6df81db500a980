"""What each role may do: one declarative table of capabilities, read by every service, route and page."""

from enum import StrEnum

from incidents.enums import Role
from incidents.errors import Forbidden


class Capability(StrEnum):
    """Something a role may do; which incidents it may do it on is the visibility rule in `incidents.access`."""

    FILE_INCIDENT = "file_incident"
    READ_INCIDENTS = "read_incidents"
    READ_RESPONSE = "read_response"
    COMMENT = "comment"
    EDIT_ANY_COMMENT = "edit_any_comment"
    EDIT_INCIDENT = "edit_incident"
    LOWER_TLP = "lower_tlp"
    MOVE_INCIDENT = "move_incident"
    PROPOSE_CLASS = "propose_class"
    DECIDE_CLASS = "decide_class"
    MANAGE_PARTICIPANTS = "manage_participants"
    ADD_EVIDENCE = "add_evidence"
    MAKE_REPORTS = "make_reports"
    READ_PERIODIC_REPORTS = "read_periodic_reports"
    IMPORT_STIX = "import_stix"
    READ_STIX_FEED = "read_stix_feed"
    READ_NATIONAL_STIX = "read_national_stix"
    SHARE_STIX = "share_stix"
    DELETE_TAXII_OBJECTS = "delete_taxii_objects"
    MANAGE_REGISTRY = "manage_registry"
    READ_DIRECTORY = "read_directory"
    READ_PLAYBOOKS = "read_playbooks"
    READ_DIRECTORY_PERSONAL = "read_directory_personal"
    MANAGE_DIRECTORY = "manage_directory"
    PAGE_BY_HAND = "page_by_hand"
    ACT_ON_OTHERS_PAGES = "act_on_others_pages"
    REQUEST_SUPPORT = "request_support"
    RUN_PLAYBOOKS = "run_playbooks"
    EDIT_PLAYBOOKS = "edit_playbooks"
    REQUEST_DIRECTION = "request_direction"
    GIVE_DIRECTIVES = "give_directives"
    VIEW_BOARD = "view_board"
    READ_AUDIT = "read_audit"
    MANAGE_USERS = "manage_users"
    MANAGE_SOURCES = "manage_sources"
    ASSIGN_INCIDENT = "assign_incident"


C = Capability

# Intake clients file and read back their own incidents, nothing else: the working group's discussion, people,
# evidence, reports, pages and runs (READ_RESPONSE) are not theirs. Committee members read and give directives;
# they do not change incidents. Operators and admins run the desk; admins alone govern the system.
# STIX: the board's people read the shared feed and the TAXII public and working-group collections; the national
# coordinator's collection is the desk's and the committee's; the desk alone writes what leaves the board.
_PEOPLE = {C.READ_INCIDENTS, C.READ_RESPONSE, C.COMMENT, C.READ_DIRECTORY, C.REQUEST_SUPPORT, C.VIEW_BOARD,
           C.READ_STIX_FEED}  # fmt: skip
_EDITORS = {C.FILE_INCIDENT, C.EDIT_INCIDENT, C.MOVE_INCIDENT, C.PROPOSE_CLASS, C.ADD_EVIDENCE, C.MAKE_REPORTS,
            C.IMPORT_STIX}  # fmt: skip
_DESK = {C.LOWER_TLP, C.MANAGE_PARTICIPANTS, C.READ_PERIODIC_REPORTS, C.MANAGE_REGISTRY, C.READ_DIRECTORY_PERSONAL,
         C.MANAGE_DIRECTORY, C.PAGE_BY_HAND, C.ACT_ON_OTHERS_PAGES, C.READ_PLAYBOOKS, C.RUN_PLAYBOOKS,
         C.REQUEST_DIRECTION, C.MANAGE_SOURCES, C.ASSIGN_INCIDENT, C.READ_NATIONAL_STIX, C.SHARE_STIX}  # fmt: skip

CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.OPERATOR: frozenset(_PEOPLE | _EDITORS | _DESK),
    Role.RESPONDER: frozenset(_PEOPLE | _EDITORS),
    Role.COMMITTEE: frozenset(
        _PEOPLE | {C.DECIDE_CLASS, C.GIVE_DIRECTIVES, C.READ_PERIODIC_REPORTS, C.READ_NATIONAL_STIX}
    ),
    Role.INTAKE: frozenset({C.FILE_INCIDENT, C.READ_INCIDENTS}),
}


def roles_with(capability: Capability) -> tuple[Role, ...]:
    """The roles holding `capability`, in the table's order (for route guards that take roles)."""
    return tuple(role for role, held in CAPABILITIES.items() if capability in held)


def allows(actor: object, capability: Capability) -> bool:
    """Whether `actor` (anything with a `role`, or None for nobody) holds `capability`."""
    role = getattr(actor, "role", None)
    return role is not None and capability in CAPABILITIES.get(Role(role), frozenset())


def require(actor: object, capability: Capability, detail: str | None = None) -> None:
    """Raise Forbidden unless `actor` holds `capability`."""
    if not allows(actor, capability):
        role = getattr(actor, "role", None)
        raise Forbidden(detail or f"the role {role} may not {capability.value.replace('_', ' ')}")
