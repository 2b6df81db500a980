"""Who may call what: the expected outcome of every route and /live event, per role and object (design "Roles").

One entry per route and method of `app.url_map`, plus the Socket.IO events of `/live`, and a few uses of a
route that need their own rule (`… #lower-tlp`: a PATCH that lowers the TLP is the desk's):
`"METHOD /rule": (scope, roles allowed)`. A signed-in role not listed is refused with 403 (`forbidden`); an
anonymous caller gets 401 or the web login redirect (`unauthenticated`). The scope says which objects the
route acts on:

- `incident`: the route names an incident (or something of one: a comment, a page, a task). Each role is tried
  on four incidents: `own` (its organisation's; for intake, one it filed), `other` (another organisation's),
  `red_named` (TLP:RED, the caller a named participant) and `red_unnamed` (TLP:RED, its organisation taking
  part but the caller not named). An allowed role gets `hidden` (404) on an incident it may not see; a role
  without the capability is refused on every one, and on one it may not see it must answer exactly as for an
  incident that does not exist (nothing tells it the incident is there).
- `collection`: a TAXII collection; each role is tried on `public`, `national` and `working-group`, and the
  roles allowed are listed per collection.
- `global`: nothing object-level.
- `public`: anyone, signed in or not.
- `link`: a signed link or secret header is the credential; tried without it, every caller gets `hidden`.
- `step`: a step of signing in, tried without its credential (no password, no first step): every caller,
  signed in or not, is `unauthenticated`.
- `owned`: something one caller made (a TAXII status): the roles listed are the owner and admins; any other
  signed-in caller gets `hidden`.

`python -m tests.authz_matrix --markdown` prints the role × capability table that docs/security.md carries.
"""

import sys

ROLES = ("admin", "operator", "responder", "committee", "intake", "anonymous")
SIGNED_IN = ROLES[:-1]
OBJECTS = ("own", "other", "red_named", "red_unnamed")
COLLECTIONS = ("public", "national", "working-group")

ALLOWED, FORBIDDEN, HIDDEN, UNAUTHENTICATED = "allowed", "forbidden", "hidden", "unauthenticated"

# Which of the four incidents each role may see (design "Visibility"): desk roles every shared TLP, responders
# their organisation's, intake what it filed, and red only the named users.
SEES: dict[str, frozenset[str]] = {
    "admin": frozenset({"own", "other", "red_named"}),
    "operator": frozenset({"own", "other", "red_named"}),
    "committee": frozenset({"own", "other", "red_named"}),
    "responder": frozenset({"own", "red_named"}),
    "intake": frozenset({"own", "red_named"}),
    "anonymous": frozenset(),
}

ALL = "admin operator responder committee intake"
PEOPLE = "admin operator responder committee"  # every signed-in person; intake is a machine that files
EDITORS = "admin operator responder"  # change incidents
DESK = "admin operator"  # the standing body: manages participants, the directory, pages, playbooks
# Intake reads back the record it filed (the incident, its timeline, its class, deadlines, techniques and STIX
# export); the working group's discussion, people, evidence, reports, pages and runs are not its to read.
READERS = PEOPLE
TAXII_READ = f"public:{PEOPLE}|national:admin operator committee|working-group:{PEOPLE}"
TAXII_WRITE = f"public:{DESK}|national:{DESK}|working-group:{EDITORS}"

ROUTES: dict[str, tuple[str, str]] = {
    # --- REST API: incidents ---
    "POST /api/v1/incidents": ("global", "admin operator responder intake"),
    "POST /api/v1/incidents/bulk": ("global", "admin operator responder intake"),
    "POST /api/v1/sources/<kind>": ("global", "admin operator responder intake"),  # a filing in a sender's format
    "POST /api/v1/sources/thehive/api/v1/alert": ("global", "admin operator responder intake"),
    "GET /api/v1/sources": ("global", DESK),  # sources as data, maintenance windows: the standing body's
    "POST /api/v1/sources": ("global", DESK),
    "GET /api/v1/sources/<int:source_id>": ("global", DESK),
    "PATCH /api/v1/sources/<int:source_id>": ("global", DESK),
    "GET /api/v1/sources/windows": ("global", DESK),
    "POST /api/v1/sources/windows": ("global", DESK),
    "DELETE /api/v1/sources/windows/<int:window_id>": ("global", DESK),
    "GET /api/v1/incidents": ("global", ALL),
    "GET /api/v1/incidents/<incident_id>": ("incident", ALL),
    "PATCH /api/v1/incidents/<incident_id>": ("incident", EDITORS),
    "PATCH /api/v1/incidents/<incident_id> #lower-tlp": ("incident", DESK),  # a PATCH to a lower TLP
    "PATCH /api/v1/incidents/<incident_id> #assign": ("incident", DESK),  # a PATCH that names the owner
    "GET /api/v1/incidents/<incident_id>/events": ("incident", ALL),
    "GET /api/v1/incidents/<incident_id>/classification": ("incident", ALL),
    "POST /api/v1/incidents/<incident_id>/classification": ("incident", PEOPLE),  # committee decides, others propose
    "GET /api/v1/incidents/<incident_id>/deadlines": ("incident", ALL),
    "GET /api/v1/incidents/<incident_id>/attack-techniques": ("incident", ALL),
    "POST /api/v1/incidents/<incident_id>/attack-techniques": ("incident", EDITORS),
    "GET /api/v1/incidents/<incident_id>/stix": ("incident", ALL),
    "POST /api/v1/incidents/<incident_id>/transitions": ("incident", EDITORS),
    "POST /api/v1/incidents/<incident_id>/observables": ("incident", EDITORS),
    "GET /api/v1/incidents/<incident_id>/comments": ("incident", READERS),
    "POST /api/v1/incidents/<incident_id>/comments": ("incident", PEOPLE),
    "PATCH /api/v1/incidents/<incident_id>/comments/<int:comment_id>": ("incident", "admin"),  # or the author
    "GET /api/v1/incidents/<incident_id>/participants": ("incident", READERS),
    "POST /api/v1/incidents/<incident_id>/participants": ("incident", DESK),
    "DELETE /api/v1/incidents/<incident_id>/participants/<int:participant_id>": ("incident", DESK),
    "GET /api/v1/incidents/<incident_id>/evidence": ("incident", READERS),
    "POST /api/v1/incidents/<incident_id>/evidence": ("incident", EDITORS),
    "GET /api/v1/incidents/<incident_id>/evidence/<int:evidence_id>": ("incident", READERS),
    "GET /api/v1/incidents/<incident_id>/evidence/<int:evidence_id>/download": ("incident", READERS),
    "GET /api/v1/incidents/<incident_id>/evidence/<int:evidence_id>/custody": ("incident", READERS),
    "POST /api/v1/incidents/<incident_id>/evidence/<int:evidence_id>/custody": ("incident", EDITORS),
    "GET /api/v1/incidents/<incident_id>/reports": ("incident", READERS),
    "GET /api/v1/incidents/<incident_id>/reports/<kind>": ("incident", READERS),
    "POST /api/v1/incidents/<incident_id>/reports/<kind>": ("incident", EDITORS),
    "GET /api/v1/incidents/<incident_id>/runs": ("incident", READERS),
    "POST /api/v1/incidents/<incident_id>/runs": ("incident", DESK),
    "DELETE /api/v1/runs/<int:run_id>": ("incident", DESK),
    "POST /api/v1/incidents/<incident_id>/pages": ("incident", DESK),
    "GET /api/v1/pages/<int:page_id>": ("incident", READERS),
    "POST /api/v1/pages/<int:page_id>/acks": ("incident", DESK),  # on the paged person's behalf, with a note
    "POST /api/v1/pages/<int:page_id>/support-requests": ("incident", DESK),  # or the person paged
    "POST /api/v1/tasks/<int:task_id>/completion": ("incident", DESK),  # or the task's organisation
    "POST /api/v1/incidents/<incident_id>/direction-requests": ("incident", DESK),
    "POST /api/v1/direction-requests/<int:request_id>/directives": ("incident", "admin committee"),
    "GET /api/v1/direction-requests": ("global", READERS),
    "GET /api/v1/pages": ("global", READERS),
    "GET /api/v1/tasks": ("global", READERS),
    "GET /api/v1/metrics": ("global", PEOPLE),
    "GET /api/v1/reports/periodic": ("global", "admin operator committee"),
    # --- REST API: STIX ---
    "POST /api/v1/stix/bundles": ("global", EDITORS),
    "GET /api/v1/stix/objects": ("global", PEOPLE),
    # --- REST API: directory, registry, playbooks, audit ---
    "GET /api/v1/contacts": ("global", PEOPLE),  # personal data to admins and operators only
    "POST /api/v1/contacts": ("global", DESK),
    "GET /api/v1/contacts.csv": ("global", DESK),
    "POST /api/v1/contacts/imports": ("global", DESK),
    "GET /api/v1/contacts/<int:contact_id>": ("global", PEOPLE),
    "PATCH /api/v1/contacts/<int:contact_id>": ("global", DESK),
    "POST /api/v1/contacts/<int:contact_id>/confirmations": ("global", DESK),  # or the person
    "POST /api/v1/contacts/<int:contact_id>/erasure": ("global", DESK),
    "GET /api/v1/contacts/<int:contact_id>/personal-data": ("global", DESK),
    "POST /api/v1/contacts/<int:contact_id>/telegram-link": ("global", DESK),
    "DELETE /api/v1/contacts/<int:contact_id>/telegram-link": ("global", DESK),
    "GET /api/v1/groups": ("global", PEOPLE),
    "POST /api/v1/groups": ("global", DESK),
    "GET /api/v1/schedules": ("global", PEOPLE),
    "POST /api/v1/schedules": ("global", DESK),
    "POST /api/v1/schedules/<code>/overrides": ("global", DESK),
    "GET /api/v1/on-call": ("global", PEOPLE),
    "GET /api/v1/organisations": ("global", PEOPLE),
    "GET /api/v1/systems": ("global", PEOPLE),
    "POST /api/v1/systems": ("global", DESK),
    "GET /api/v1/systems/<code>": ("global", PEOPLE),
    "GET /api/v1/playbooks": ("global", DESK),
    "POST /api/v1/playbooks": ("global", "admin"),
    "PATCH /api/v1/playbooks/<name>": ("global", "admin"),
    "GET /api/v1/playbooks/<name>/versions": ("global", DESK),
    "GET /api/v1/audit": ("global", "admin"),
    "GET /api/v1/openapi.json": ("public", ""),
    "GET /api/v1/docs": ("public", ""),
    # --- TAXII 2.1 ---
    "GET /taxii2/": ("global", ALL),
    "GET /taxii2/<api_root>/": ("global", ALL),
    "GET /taxii2/<api_root>/collections/": ("global", ALL),
    "GET /taxii2/<api_root>/status/<status_id>/": ("owned", "admin operator"),  # the importer (operator), admins
    "GET /taxii2/<api_root>/collections/<collection_id>/": ("collection", TAXII_READ),
    "GET /taxii2/<api_root>/collections/<collection_id>/objects/": ("collection", TAXII_READ),
    "GET /taxii2/<api_root>/collections/<collection_id>/manifest/": ("collection", TAXII_READ),
    "POST /taxii2/<api_root>/collections/<collection_id>/objects/": ("collection", TAXII_WRITE),
    "GET /taxii2/<api_root>/collections/<collection_id>/objects/<object_id>/": ("incident", PEOPLE),  # in working-group
    "GET /taxii2/<api_root>/collections/<collection_id>/objects/<object_id>/versions/": ("incident", PEOPLE),
    "DELETE /taxii2/<api_root>/collections/<collection_id>/objects/<object_id>/": ("global", "admin"),  # imported only
    # --- web pages ---
    "GET /login": ("public", ""),
    "POST /login": ("step", ""),
    "GET /login/totp": ("step", ""),
    "POST /login/totp": ("step", ""),
    "POST /logout": ("public", ""),
    "POST /account/language": ("public", ""),
    "GET /account/password": ("global", ALL),
    "POST /account/password": ("global", ALL),
    "GET /account/totp": ("global", ALL),
    "POST /account/totp": ("global", ALL),
    "GET /account/sessions": ("global", ALL),
    "POST /account/sessions/<int:session_id>/revocation": ("global", ALL),  # one's own sessions
    "GET /": ("global", ALL),  # a redirect to the role's first page
    "GET /board": ("global", PEOPLE),
    "GET /admin": ("global", "admin"),
    "POST /admin/users": ("global", "admin"),
    "POST /admin/users/<int:user_id>": ("global", "admin"),
    "POST /admin/organisations": ("global", "admin"),
    "GET /directory": ("global", PEOPLE),
    "POST /directory/contacts/<int:contact_id>/telegram-link": ("global", DESK),
    "POST /directory/contacts/<int:contact_id>/telegram-unlink": ("global", DESK),
    "GET /incidents": ("global", PEOPLE),
    "GET /incidents.csv": ("global", PEOPLE),  # what the list shows, as CSV
    "GET /incidents/new": ("global", EDITORS),
    "POST /incidents/new": ("global", EDITORS),
    "GET /incidents/<ref>": ("incident", PEOPLE),
    "GET /incidents/<ref>/stix": ("incident", PEOPLE),
    "POST /incidents/<ref>/transitions": ("incident", EDITORS),
    "POST /incidents/<ref>/classification": ("incident", PEOPLE),
    "POST /incidents/<ref>/comments": ("incident", PEOPLE),
    "POST /incidents/<ref>/participants": ("incident", DESK),
    "POST /incidents/<ref>/evidence": ("incident", EDITORS),
    "GET /incidents/<ref>/evidence/<int:evidence_id>/download": ("incident", PEOPLE),
    "POST /incidents/<ref>/reports/<kind>": ("incident", EDITORS),
    "GET /incidents/<ref>/reports/<kind>/<int:version>.<fmt>": ("incident", PEOPLE),
    "POST /incidents/<ref>/tasks/<int:task_id>/completion": ("incident", DESK),
    "POST /incidents/<ref>/direction-requests": ("incident", DESK),
    "POST /incidents/<ref>/pages/<int:page_id>/acks": ("incident", DESK),  # or the person paged
    "POST /incidents/<ref>/pages/<int:page_id>/waves": ("incident", DESK),  # page again
    "POST /incidents/<ref>/pages/<int:page_id>/support-requests": ("incident", DESK),  # or the person paged
    "POST /incidents/<ref>/assignee": ("incident", DESK),
    "POST /incidents/<ref>/tasks": ("incident", EDITORS),
    "POST /incidents/<ref>/tasks/<int:task_id>/assignee": ("incident", EDITORS),
    "POST /incidents/<ref>/tasks/<int:task_id>/state": ("incident", DESK),  # or its assignee or organisation
    "POST /incidents/<ref>/tasks/<int:task_id>/comments": ("incident", PEOPLE),
    "POST /incidents/<ref>/fields": ("incident", EDITORS),
    "POST /direction-requests/<int:request_id>/directives": ("incident", "admin committee"),
    "GET /sources": ("global", DESK),  # the alert sources page
    "GET /outbox": ("global", DESK),  # pages kept in the local outbox
    "GET /reports/periodic": ("global", "admin operator committee"),  # Form 05 on the web
    "GET /reports/periodic.<fmt>": ("global", "admin operator committee"),
    "POST /sources": ("global", DESK),
    "POST /sources/<int:source_id>": ("global", DESK),
    "POST /sources/windows": ("global", DESK),
    "POST /sources/windows/<int:window_id>/cancel": ("global", DESK),
    "GET /playbooks": ("global", DESK),
    "POST /playbooks": ("global", "admin"),
    "GET /playbooks/<name>": ("global", DESK),
    "POST /playbooks/<name>": ("global", "admin"),
    "POST /playbooks/<name>/enabled": ("global", "admin"),
    # --- links and infrastructure ---
    "GET /ack/<token>": ("link", ""),
    "POST /ack/<token>": ("link", ""),
    "GET /directory/confirm/<token>": ("link", ""),
    "POST /directory/confirm/<token>": ("link", ""),
    "POST /telegram/webhook": ("link", ""),  # the secret header; off unless UCSC_TELEGRAM_MODE=webhook
    "GET /healthz": ("public", ""),
    "GET /metrics": ("public", ""),  # behind UCSC_METRICS_TOKEN when one is set
    "GET /static/<path:filename>": ("public", ""),
    # --- Socket.IO /live: a connect replays what the caller may see; catch_up asks again ---
    "SOCKET /live connect": ("incident", ALL),
    "SOCKET /live catch_up": ("incident", ALL),
    "SOCKET /live disconnect": ("public", ""),
}


def route_of(key: str) -> str:
    """`METHOD /rule` of an entry; an entry may name a variant of a route's use after ` #`."""
    return key.split(" #", 1)[0]


def allowed_roles(key: str, collection: str | None = None) -> frozenset[str]:
    """The roles a route allows (on `collection` for TAXII collection routes)."""
    scope, spec = ROUTES[key]
    if scope == "collection":
        spec = dict(part.split(":", 1) for part in spec.split("|"))[collection or ""]
    return frozenset(spec.split())


def expected(key: str, role: str, obj: str | None = None) -> str:
    """The outcome class for `role` calling `key` on `obj` (an incident or a collection, per the scope).

    For a role without the capability on an incident it may not see this returns `forbidden`; the test also
    accepts `hidden` there, as long as the answer is the same as for an incident that does not exist.
    """
    scope = ROUTES[key][0]
    if scope == "public":
        return ALLOWED
    if scope == "link":
        return HIDDEN
    if scope == "step":
        return UNAUTHENTICATED
    if role == "anonymous":
        return UNAUTHENTICATED
    if role not in allowed_roles(key, obj if scope == "collection" else None):
        return HIDDEN if scope == "owned" else FORBIDDEN
    if scope == "incident" and obj not in SEES[role]:
        return HIDDEN
    return ALLOWED


_MARK = {ALLOWED: "✓", FORBIDDEN: "403", HIDDEN: "404", UNAUTHENTICATED: "401"}


def _cell(key: str, role: str) -> str:
    scope = ROUTES[key][0]
    if scope == "collection":
        return " ".join(f"{c}:{_MARK[expected(key, role, c)]}" for c in COLLECTIONS)
    if scope == "incident" and role != "anonymous" and expected(key, role, "own") == ALLOWED:
        return "✓ (seen)"
    return _MARK[expected(key, role, "own")]


_OBJECT_NAMES = {
    "own": "own (its organisation's; intake: one it filed)",
    "other": "another organisation's (TLP:AMBER)",
    "red_named": "TLP:RED, caller named",
    "red_unnamed": "TLP:RED, caller's organisation takes part, caller not named",
}


def markdown() -> str:
    """The tables of docs/security.md: which incidents each role sees, then one row per route and method."""
    lines = [
        "| Incident | " + " | ".join(ROLES) + " |",
        "|---|" + "---|" * len(ROLES),
        *(
            f"| {_OBJECT_NAMES[o]} | " + " | ".join("sees" if o in SEES[r] else "—" for r in ROLES) + " |"
            for o in OBJECTS
        ),
        "",
        "| Route | " + " | ".join(ROLES) + " |",
        "|---|" + "---|" * len(ROLES),
    ]
    for key in ROUTES:
        method, _, rule = key.partition(" ")
        lines.append(f"| `{method} {rule}` | " + " | ".join(_cell(key, r) for r in ROLES) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m tests.authz_matrix --markdown")
    sys.stdout.write(markdown())
