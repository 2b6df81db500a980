"""Every route and /live event × every role × own, another organisation's, red named and red unnamed incidents.

The expected outcomes are tests/authz_matrix.py; this builds one world per backend, calls everything through the
real API, web (signed in through the login form) and TAXII, and a real Socket.IO client against gunicorn, and
reports every mismatch together.
"""

import contextlib
import io
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import socketio
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import create_app, db
from app.auth import new_token
from app.taxii import collection_ids
from incidents import accounts
from incidents.enums import Role
from incidents.models import BrowserSession, Organisation, User
from incidents.stix.mapping import TLP_MARKING_IDS
from playbooks import service as playbook_service
from playbooks.models import Task
from tests import authz_matrix as M
from tests.conftest import incident_payload
from tests.sockets import LiveClient
from tests.web import PASSWORD, csrf, make_user, sign_in, text_of

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1"
TAXII = "application/taxii+json;version=2.1"
MISSING = 999_999_999
MISSING_REF = "TH-2099-99999"
MISSING_STIX = "incident--00000000-0000-4000-8000-000000000000"
GREEN = TLP_MARKING_IDS["green"]
ORGS = {"admin": "dic", "operator": "dic", "responder": "police", "committee": "ppc", "intake": "vnpt"}
# The web answers a refused form with a redirect and a flashed "Refused: <why>": a domain Forbidden says what
# only someone else may do ("only …", "… may not …"), a NotFound names what is missing ("no incident …").
FORBIDDEN_FLASH = re.compile(r"^Refused: (only |.*\bmay not\b)")
HIDDEN_FLASH = re.compile(r"^Refused: no ")


def _routes(app: Flask) -> set[str]:
    """`METHOD /rule` of every route, and `SOCKET /live EVENT` of every Socket.IO handler."""
    keys = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            keys.add(f"{method} {rule.rule}")
    for namespace, handlers in app.extensions["ucsc.socketio"].server.handlers.items():
        keys |= {f"SOCKET {namespace} {event}" for event in handlers}
    return keys


def test_every_route_and_live_event_has_an_expected_outcome_in_the_matrix(tmp_path: Path) -> None:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'routes.db'}", "TESTING": True, "SECRET_KEY": "t"})
    present = _routes(app)
    declared = {M.route_of(key) for key in M.ROUTES}
    undeclared = sorted(present - declared)
    stale = sorted(declared - present)
    assert not undeclared, f"routes without an entry in tests/authz_matrix.py: {undeclared}"
    assert not stale, f"entries in tests/authz_matrix.py for routes that no longer exist: {stale}"


def test_docs_security_carries_the_table_the_matrix_generates() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    begin, end = "<!-- authz-matrix:begin -->\n", "<!-- authz-matrix:end -->"
    assert begin in text and end in text, "docs/security.md lost its generated-table markers"
    carried = text.split(begin, 1)[1].split(end, 1)[0]
    assert carried == M.markdown(), "docs/security.md is stale: paste `python -m tests.authz_matrix --markdown`"


# --- the world ------------------------------------------------------------------------------------------------


@dataclass
class Obj:
    """An incident of the world and the things hanging off it."""

    id: int
    ref: str
    comment_id: int = 0
    evidence_id: int = 0
    request_id: int = 0
    page_id: int = 0
    run_id: int = 0
    task_id: int = 0
    stix_id: str = ""


@dataclass
class World:
    api: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> Authorization headers
    web: dict[str, FlaskClient] = field(default_factory=dict)  # role -> signed-in test client
    csrf: dict[str, str] = field(default_factory=dict)
    objects: dict[str, Obj] = field(default_factory=dict)
    filer: dict[str, str] = field(default_factory=dict)
    contact_id: int = 0
    schedule: str = ""
    system: str = ""
    user_id: int = 0
    spare_sessions: dict[str, int] = field(default_factory=dict)
    status_id: str = ""
    taxii_object: str = ""


def _token_for(app: Flask, username: str, role: str) -> dict[str, str]:
    token, digest = new_token()
    with app.app_context():
        s = db.session()
        with s.begin():
            accounts.create_token(session=s, name=f"t-{username}", role=Role(role), digest=digest, user=username)
    return {"Authorization": f"Bearer {token}"}


def _ok(response: Any, *codes: int) -> Any:
    assert response.status_code in (codes or (200, 201)), (response.status_code, response.get_data(as_text=True))
    return response


def _build(app: Flask) -> World:
    w = World()
    with app.app_context():
        s = db.session()
        with s.begin():
            playbook_service.seed_definitions(s)
    secrets: dict[str, str | None] = {}
    for role in M.SIGNED_IN:
        secrets[role] = make_user(app, f"m-{role}", role, ORGS[role], totp=role == "admin", language="en")
        w.api[role] = _token_for(app, f"m-{role}", role)
    make_user(app, "m-filer", "operator", "dic", language="en")
    make_user(app, "m-doh", "responder", "doh", language="en")
    w.filer = f = _token_for(app, "m-filer", "operator")
    doh = _token_for(app, "m-doh", "responder")
    c = app.test_client()

    def file(headers: dict[str, str], title: str) -> Obj:
        body = _ok(c.post(f"{API}/incidents", json=incident_payload(title=title, tlp="amber"), headers=headers)).json
        return Obj(body["id"], body["ref"])

    def take_part(obj: Obj, **who: str) -> None:
        _ok(c.post(f"{API}/incidents/{obj.id}/participants", json=who, headers=f), 201)

    duty = {
        "name": "Trực ban KHCN",
        "organisation": "dost",
        "email": "duty@dost.example.vn",
        "telegram_chat_id": "700001",
    }
    contact = _ok(c.post(f"{API}/contacts", headers=f, json=duty), 201).json
    w.contact_id = contact["id"]
    w.schedule = "m-duty"
    _ok(c.post(f"{API}/schedules", headers=f, json={"code": w.schedule, "name": "Trực", "organisation": "dost",
                                                     "starts_at": "2026-01-01T00:00:00+07:00",
                                                     "members": [w.contact_id]}), 201)  # fmt: skip
    w.system = _ok(c.get(f"{API}/systems", headers=f)).json["items"][0]["code"]

    own = file(w.api["intake"], "Sự cố của đơn vị")
    take_part(own, organisation="police")
    take_part(own, organisation="ppc")
    other = file(doh, "Sự cố của Sở Y tế")
    red_named = file(w.api["intake"], "Sự cố mật, có tên")
    for user in ("m-filer", "m-admin", "m-operator", "m-responder", "m-committee"):
        take_part(red_named, user=user)
    for org in ("police", "ppc"):
        take_part(red_named, organisation=org)
    red_unnamed = file(f, "Sự cố mật, không tên")
    for org in ("police", "ppc", "vnpt"):
        take_part(red_unnamed, organisation=org)
    w.objects = {"own": own, "other": other, "red_named": red_named, "red_unnamed": red_unnamed}

    with app.app_context():
        s = db.session()
        with s.begin():
            doh_org = s.scalar(select(Organisation.id).where(Organisation.code == "doh"))
            tasks = [Task(incident_id=o.id, organisation_id=doh_org, title_vi="Kiểm tra", key=f"m:{o.id}")
                     for o in w.objects.values()]  # fmt: skip
            s.add_all(tasks)
        task_ids = [t.id for t in tasks]
        w.user_id = s.scalar(select(User.id).where(User.username == "m-doh"))
    for obj, task_id in zip(w.objects.values(), task_ids, strict=True):
        base = f"{API}/incidents/{obj.id}"
        obj.task_id = task_id
        obj.comment_id = _ok(c.post(f"{base}/comments", json={"body": "Ghi chú"}, headers=f), 201).json["id"]
        obj.evidence_id = _ok(c.post(f"{base}/evidence", headers=f, content_type="multipart/form-data",
                                     data={"file": (io.BytesIO(b"log line\n"), "log.txt"), "kind": "log"}),
                              201).json["id"]  # fmt: skip
        _ok(c.post(f"{base}/reports/initial", json={}, headers=f), 200, 201)
        obj.request_id = _ok(c.post(f"{base}/direction-requests", json={"question_vi": "Xin ý kiến?"}, headers=f),
                             201).json["id"]  # fmt: skip
        obj.page_id = _ok(c.post(f"{base}/pages", json={"organisation": "dost", "pick": "all"}, headers=f),
                          201).json["id"]  # fmt: skip
        obj.run_id = _ok(c.post(f"{base}/runs", json={"playbook": "drill-ack-timer"}, headers=f), 201).json["id"]
    for name in ("red_named", "red_unnamed"):
        _ok(c.patch(f"{API}/incidents/{w.objects[name].id}", json={"tlp": "red"}, headers=f))
    for obj in w.objects.values():
        bundle = _ok(c.get(f"{API}/incidents/{obj.id}/stix", headers=f)).json
        obj.stix_id = next(o["id"] for o in bundle["objects"] if o["type"] == "incident")

    wg = collection_ids()["working-group"]
    added = _ok(c.post(f"/taxii2/ucsc/collections/{wg}/objects/", data=_envelope("setup"),
                       headers={**w.api["operator"], "Content-Type": TAXII, "Accept": TAXII}), 202).json  # fmt: skip
    w.status_id = added["id"]
    w.taxii_object = _indicator("setup")["id"]

    for role in M.SIGNED_IN:
        client = app.test_client()
        response = sign_in(client, f"m-{role}", totp=secrets[role])
        assert response.status_code == 302 and "/login" not in response.headers["Location"], (role, response.text)
        w.web[role] = client
        w.csrf[role] = csrf(client.get("/account/password").text)
        spare = app.test_client()
        response = _sign_in_with_code(spare, f"m-{role}", _next_code(secrets[role]))
        assert response.status_code == 302 and "/login" not in response.headers["Location"], (role, response.text)
        with app.app_context():
            user = select(User.id).where(User.username == f"m-{role}").scalar_subquery()
            w.spare_sessions[role] = db.session().scalar(
                select(BrowserSession.id).where(BrowserSession.user_id == user).order_by(BrowserSession.id.desc())
            )
    w.web["anonymous"] = anonymous = app.test_client()
    w.csrf["anonymous"] = csrf(anonymous.get("/login").text)
    return w


def _sign_in_with_code(client: FlaskClient, username: str, code: str | None) -> Any:
    page = client.get("/login")
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf(page.text)})
    if code is not None and response.headers.get("Location", "").endswith("/login/totp"):
        page = client.get("/login/totp")
        response = client.post("/login/totp", data={"code": code, "csrf_token": csrf(page.text)})
    return response


def _next_code(secret: str | None) -> str | None:
    """A second sign-in within the same 30 s window may not reuse the code; the next window's code is valid."""
    if secret is None:
        return None
    return pyotp.TOTP(secret).at(time.time() + 30)


def _indicator(tag: str) -> dict:
    digits = f"{abs(hash(tag)) % 10**12:012d}"
    return {
        "type": "indicator", "spec_version": "2.1", "id": f"indicator--6d1f0a2b-3c4d-4e5f-8a6b-{digits}",
        "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z", "name": tag,
        "pattern": "[ipv4-addr:value = '198.51.100.7']", "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00Z", "object_marking_refs": [GREEN],
    }  # fmt: skip


def _envelope(tag: str) -> str:
    return json.dumps({"objects": [_indicator(tag)]})


# --- one request per route, role and object ---------------------------------------------------------------------


def _params(w: World, key: str, obj: str | None, role: str, client: FlaskClient) -> dict[str, Any]:
    """Path values for `key`: the object's own (or a missing one when `obj` is None) and the world's others."""
    o = w.objects.get(obj or "") if obj not in M.COLLECTIONS else None
    values: dict[str, Any] = {
        "incident_id": o.id if o else MISSING,
        "ref": o.ref if o else MISSING_REF,
        "kind": "wazuh" if "/sources/" in key else "initial",
        "version": 1,
        "fmt": "docx",
        "api_root": "ucsc",
        "status_id": w.status_id,
        "contact_id": w.contact_id,
        "code": w.system if "/systems/" in key else w.schedule,
        "name": "ddos",
        "user_id": w.user_id,
        "session_id": w.spare_sessions.get(role, MISSING),
        "token": "bogus",
        "filename": "api_docs.css",
    }
    for name in ("comment_id", "evidence_id", "request_id", "page_id", "run_id", "task_id"):
        values[name] = getattr(o, name) if o else MISSING
    if obj in M.COLLECTIONS:
        values["collection_id"] = collection_ids()[obj]
    else:
        values["collection_id"] = collection_ids()["working-group"]
    values["object_id"] = w.taxii_object if key.startswith("DELETE /taxii2") else (o.stix_id if o else MISSING_STIX)
    if key.endswith("/erasure"):
        fresh = {"name": "Xoá", "organisation": "dost", "email": "xoa@dost.example.vn"}
        values["contact_id"] = client.post(f"{API}/contacts", json=fresh, headers=w.filer).json["id"]
    if "<int:participant_id>" in key:
        values["participant_id"] = _fresh_participant(w, client, o) if o else MISSING
    if "<int:source_id>" in key or "<int:window_id>" in key:
        values.update(_source_and_window(w, client))
    return values


def _fresh_participant(w: World, client: FlaskClient, o: Obj) -> int:
    """A participant nobody relies on, so removing it changes no one's view."""
    url = f"{API}/incidents/{o.id}/participants"
    response = client.post(url, json={"organisation": "doet"}, headers=w.filer)
    if response.status_code == 201:
        return response.json["id"]
    return next(p["id"] for p in client.get(url, headers=w.filer).json["items"] if p.get("organisation") == "doet")


def _source_and_window(w: World, client: FlaskClient) -> dict[str, int]:
    """A source and a maintenance window on it, made by the filer (an operator) for the routes that name them."""
    made = client.post(f"{API}/sources", json={"kind": "splunk", "name": f"m-src-{secrets.token_hex(4)}"},
                       headers=w.filer).json  # fmt: skip
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    window = {"source_id": made["id"], "ends_at": ends, "reason": "Bảo trì", "approved_by": "Trưởng ca"}
    return {"source_id": made["id"], "window_id": client.post(f"{API}/sources/windows", json=window,
                                                                headers=w.filer).json["id"]}  # fmt: skip


def _fill(rule: str, values: dict[str, Any]) -> str:
    return re.sub(r"<(?:[\w]+:)?(\w+)>", lambda m: str(values[m.group(1)]), rule)


_API_BODIES: dict[str, Any] = {
    "POST /api/v1/incidents": lambda w: incident_payload(title="Matrix"),
    "POST /api/v1/incidents/bulk": lambda w: {"incidents": [incident_payload(title="Matrix bulk")]},
    "PATCH /api/v1/incidents/<incident_id>": lambda w: {"priority": "P2"},
    "PATCH /api/v1/incidents/<incident_id> #lower-tlp": lambda w: {"tlp": "green"},
    "PATCH /api/v1/incidents/<incident_id> #assign": lambda w: {"assignee": "m-filer"},
    "POST /api/v1/incidents/<incident_id>/attack-techniques": lambda w: {"techniques": ["T1498"]},
    "POST /api/v1/incidents/<incident_id>/transitions": lambda w: {"to": "triage"},
    "POST /api/v1/incidents/<incident_id>/observables": lambda w: {
        "observables": [{"type": "ipv4-addr", "value": "192.0.2.77"}]
    },
    "POST /api/v1/incidents/<incident_id>/comments": lambda w: {"body": "Ý kiến"},
    "PATCH /api/v1/incidents/<incident_id>/comments/<int:comment_id>": lambda w: {"body": "Ghi chú (sửa)"},
    "POST /api/v1/incidents/<incident_id>/participants": lambda w: {"organisation": "dof"},
    "POST /api/v1/incidents/<incident_id>/evidence/<int:evidence_id>/custody": lambda w: {"action": "note"},
    "POST /api/v1/incidents/<incident_id>/reports/<kind>": lambda w: {},
    "POST /api/v1/incidents/<incident_id>/runs": lambda w: {"playbook": "drill-ack-timer"},
    "POST /api/v1/incidents/<incident_id>/pages": lambda w: {"organisation": "dost", "pick": "all"},
    "POST /api/v1/pages/<int:page_id>/acks": lambda w: {"note": "Thay mặt người được gọi"},
    "POST /api/v1/pages/<int:page_id>/support-requests": lambda w: {"note": "Cần hỗ trợ"},
    "POST /api/v1/tasks/<int:task_id>/completion": lambda w: {"note": "Xong"},
    "POST /api/v1/incidents/<incident_id>/direction-requests": lambda w: {"question_vi": "Xin ý kiến?"},
    "POST /api/v1/direction-requests/<int:request_id>/directives": lambda w: {"text": "Đồng ý"},
    "POST /api/v1/stix/bundles": lambda w: {
        "type": "bundle",
        "id": "bundle--6f3c1d9e-5b7a-4c2e-9d8f-1a2b3c4d5e6f",
        "objects": [_indicator("bundle")],
    },
    "POST /api/v1/contacts": lambda w: {"name": "Liên hệ", "organisation": "dost", "email": "x@dost.example.vn"},
    "PATCH /api/v1/contacts/<int:contact_id>": lambda w: {"title": "Trực ban"},
    "POST /api/v1/groups": lambda w: {"code": "m-group", "name_vi": "Nhóm"},
    "POST /api/v1/schedules": lambda w: {
        "code": "m-sched-2",
        "name": "Trực 2",
        "organisation": "dost",
        "starts_at": "2026-01-01T00:00:00+07:00",
        "members": [w.contact_id],
    },
    "POST /api/v1/systems": lambda w: {"code": "m-sys", "name": "Hệ thống", "security_level": 2},
    "PATCH /api/v1/playbooks/<name>": lambda w: {"enabled": True},
}


def _api_request(w: World, key: str, role: str, obj: str | None, client: FlaskClient) -> Any:
    method, _, rule = M.route_of(key).partition(" ")
    path = _fill(rule, _params(w, key, obj, role, client))
    headers = dict(w.api.get(role, {}))
    kwargs: dict[str, Any] = {}
    if key == "POST /api/v1/incidents/<incident_id>/classification":
        kwargs["json"] = {"action": "decide" if role == "committee" else "propose", "class": "serious"}
    elif key == "POST /api/v1/incidents/<incident_id>/evidence":
        kwargs.update(content_type="multipart/form-data", data={"file": (io.BytesIO(b"x"), "x.txt"), "kind": "log"})
    elif key == "POST /api/v1/playbooks":
        source = (ROOT / "playbooks" / "definitions" / "drill-ack-timer.yaml").read_text()
        kwargs.update(data=source.encode(), content_type="application/yaml")
    elif key == "POST /api/v1/contacts/imports":
        kwargs.update(data="name,organisation,email\nNhập,dost,nhap@dost.example.vn\n", content_type="text/csv")
    elif key == "POST /api/v1/schedules/<code>/overrides":
        kwargs["json"] = {"contact_id": w.contact_id, "starts_at": "2026-12-01T00:00:00+07:00",
                          "ends_at": "2026-12-02T00:00:00+07:00"}  # fmt: skip
    elif key in _API_BODIES:
        kwargs["json"] = _API_BODIES[key](w)
    elif method in ("POST", "PATCH"):
        kwargs["json"] = {}
    if rule.startswith("/taxii2"):
        headers["Accept"] = TAXII
        kwargs = {"data": _envelope(f"{role}-{obj}"), "content_type": TAXII} if method == "POST" else {}
    return client.open(path, method=method, headers=headers, query_string=_QUERIES.get(key), **kwargs)


_QUERIES: dict[str, dict[str, str]] = {
    "GET /api/v1/audit": {"since": "2026-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
    "GET /api/v1/on-call": {"organisation": "dost"},
    "GET /api/v1/incidents/<incident_id>/reports/<kind>": {"format": "docx"},
}

_WEB_FORMS: dict[str, dict[str, Any]] = {
    "POST /incidents/<ref>/transitions": {"to": "triage"},
    "POST /incidents/<ref>/comments": {"body": "Ý kiến"},
    "POST /incidents/<ref>/participants": {"organisation": "dof"},
    "POST /incidents/<ref>/direction-requests": {"question_vi": "Xin ý kiến?"},
    "POST /incidents/<ref>/pages/<int:page_id>/acks": {"note": "Thay mặt người được gọi"},
    "POST /incidents/<ref>/pages/<int:page_id>/waves": {"note": "Gọi lại"},
    "POST /incidents/<ref>/pages/<int:page_id>/support-requests": {"note": "Cần hỗ trợ"},
    "POST /incidents/<ref>/assignee": {"assignee": "m-filer"},
    "POST /incidents/<ref>/tasks": {"title": "Kiểm tra nhật ký"},
    "POST /incidents/<ref>/tasks/<int:task_id>/assignee": {"assignee": "m-filer"},
    "POST /incidents/<ref>/tasks/<int:task_id>/state": {"done": "1"},
    "POST /incidents/<ref>/tasks/<int:task_id>/comments": {"body": "Ghi chú"},
    "POST /incidents/<ref>/fields": {"priority": "P1"},
    "POST /direction-requests/<int:request_id>/directives": {"text": "Đồng ý"},
    "POST /account/language": {"language": "en"},
    "POST /sources": {"kind": "splunk", "name": "Splunk SOC"},
    "POST /sources/<int:source_id>": {"interval_minutes": "10", "active": "1"},
}


def _web_request(w: World, key: str, role: str, obj: str | None, client: FlaskClient) -> Any:
    method, _, rule = M.route_of(key).partition(" ")
    path = _fill(rule, _params(w, key, obj, role, client))
    if method == "GET":
        return client.get(path)
    data = {"csrf_token": w.csrf.get(role, "")}
    if key == "POST /incidents/<ref>/classification":
        data["action"] = "decide" if role == "committee" else "propose"
    elif key == "POST /incidents/<ref>/evidence":
        data.update(file=(io.BytesIO(b"x"), "x.txt"), kind="log")
        return client.post(path, data=data, content_type="multipart/form-data")
    data.update(_WEB_FORMS.get(key, {}))
    return client.post(path, data=data)


def _classify(response: Any, web: bool, client: FlaskClient | None = None) -> str:
    """The outcome class of a response, with its status code after a space."""
    outcome, detail = _outcome(response, web, client)
    return f"{outcome} {response.status_code}{detail}"


def _outcome(response: Any, web: bool, client: FlaskClient | None) -> tuple[str, str]:
    """The class, and what the answer said (a flashed message, a problem's detail) for the report."""
    code = response.status_code
    said = ""
    if response.mimetype == "application/problem+json":
        said = f" ({response.json.get('detail')})"
    elif web and code == 409:
        said = " (" + " ".join(text_of(response.get_data(as_text=True)).split()[-12:]) + ")"
    if code >= 500:
        return "error", said
    if code == 401:
        return M.UNAUTHENTICATED, said
    if code == 403:
        return M.FORBIDDEN, said
    if code == 404:
        return M.HIDDEN, said
    if web and code in (301, 302, 303) and "/login" in response.headers.get("Location", ""):
        return M.UNAUTHENTICATED, said
    if web and client is not None:
        with client.session_transaction() as s:
            flashes = s.pop("_flashes", [])
        said = said or "".join(f" ({message})" for _, message in flashes)
        if any(FORBIDDEN_FLASH.match(str(message)) for _, message in flashes):
            return M.FORBIDDEN, said
        if any(HIDDEN_FLASH.match(str(message)) for _, message in flashes):
            return M.HIDDEN, said
    return M.ALLOWED, said


def _is_web(rule: str) -> bool:
    return not rule.startswith(("/api/", "/taxii2"))


# After each try the filer (named on every incident) puts the TLP back, so every caller starts from the same one.
_RESTORE_TLP = ("PATCH /api/v1/incidents/<incident_id> #lower-tlp",)
# The audit trail names every incident read or exported, for its reader (admins) to judge.
_MAY_NAME_HIDDEN = ("GET /api/v1/audit",)


def _call(w: World, app: Flask, key: str, role: str, obj: str | None) -> tuple[str, list[str]]:
    """The outcome class and status, and the incidents hidden from `role` that the answer names anyway."""
    rule = M.route_of(key).partition(" ")[2]
    web = _is_web(rule)
    client = (w.web.get(role) if web else None) or app.test_client()
    response = _web_request(w, key, role, obj, client) if web else _api_request(w, key, role, obj, client)
    if key in _RESTORE_TLP and obj in w.objects:
        o = w.objects[obj]
        restore = {"tlp": "amber" if obj in ("own", "other") else "red"}
        _ok(client.patch(f"{API}/incidents/{o.id}", json=restore, headers=w.filer))
    try:
        outcome = _classify(response, web, client)
        text = response.get_data().decode("utf-8", "replace") if key not in _MAY_NAME_HIDDEN else ""
    finally:
        response.close()
    # The incident the caller asked about may be echoed back (a 404 naming it, a redirect to it): it sent that.
    hidden = [n for n, o in w.objects.items() if n != obj and n not in M.SEES.get(role, ()) and _names(text, o)]
    return outcome, hidden


def _names(text: str, o: Obj) -> bool:
    return o.ref in text or o.stix_id in text


# Called last: they end or change the caller's own session.
_LAST = ("POST /logout",)


def _http_mismatches(app: Flask, w: World) -> list[str]:
    mismatches: list[str] = []
    keys = [k for k in M.ROUTES if not k.startswith("SOCKET ") and k not in _LAST]
    for key in keys:
        scope = M.ROUTES[key][0]
        roles = ("anonymous",) if scope in ("public", "link") else M.ROLES
        objects: tuple[str | None, ...] = (None,)
        if scope == "incident":
            objects = M.OBJECTS
        elif scope == "collection":
            objects = M.COLLECTIONS
        for role in roles:
            missing = None
            for obj in objects:
                want = M.expected(key, role, obj)
                got_code, named = _call(w, app, key, role, obj)
                got = got_code.split()[0]
                if named:
                    mismatches.append(f"{key} | {role} | {obj or '-'} | names no incident hidden from the caller "
                                      f"| names {', '.join(named)} ({got_code})")  # fmt: skip
                if scope == "incident" and want == M.FORBIDDEN and obj not in M.SEES[role]:
                    # Refused either way; what matters is that it answers as for an incident that does not exist.
                    missing = missing or _call(w, app, key, role, None)[0].split()[0]
                    if got in (M.FORBIDDEN, M.HIDDEN) and got == missing:
                        continue
                    want = f"{M.FORBIDDEN} or {M.HIDDEN}, as for a missing incident ({missing})"
                if got != want:
                    mismatches.append(f"{key} | {role} | {obj or '-'} | expected {want} | got {got_code}")
    return mismatches


def _socket_mismatches(live_url: str, w: World, cookie_name: str) -> list[str]:
    """Each role connects with its API token, and each signed-in role again with its browser session."""
    mismatches: list[str] = []
    callers = [(role, role, {"auth": w.api.get(role)}) for role in M.ROLES]
    for role in M.SIGNED_IN:
        cookie = w.web[role].get_cookie(cookie_name)
        callers.append((role, f"{role} (browser)", {"cookie": f"{cookie_name}={cookie.value}" if cookie else ""}))
    for role, label, credential in callers:
        client = LiveClient(live_url)
        try:
            if "cookie" in credential:
                client.sio.connect(live_url, headers={"Cookie": credential["cookie"]}, auth={"last_event_id": 0},
                                   transports=["websocket"],
                                   namespaces=["/live"], wait_timeout=5)  # fmt: skip
            else:
                client.connect(credential["auth"], last_event_id=0, timeout=5)
        except socketio.exceptions.ConnectionError:
            got = {key: dict.fromkeys(M.OBJECTS, M.UNAUTHENTICATED) for key in ("connect", "catch_up")}
        else:
            got = {"connect": _seen(client, w)}
            client.frames.clear()
            client.sio.emit("catch_up", {"last_event_id": 0}, namespace="/live")
            got["catch_up"] = _seen(client, w)
            client.disconnect()
        for event, outcomes in got.items():
            key = f"SOCKET /live {event}"
            for obj in M.OBJECTS:
                want = M.expected(key, role, obj)
                if outcomes[obj] != want:
                    mismatches.append(f"{key} | {label} | {obj} | expected {want} | got {outcomes[obj]}")
    return mismatches


def _seen(client: LiveClient, w: World) -> dict[str, str]:
    """Which incidents' events the replay carried: each incident the role sees has a dozen, so wait for `own`."""
    own = w.objects["own"]
    with contextlib.suppress(AssertionError):
        client.wait_for(lambda f: f.mentions(own.ref), timeout=10)
    time.sleep(0.3)
    frames = list(client.frames)
    return {name: M.ALLOWED if any(f.mentions(o.ref) for f in frames) else M.HIDDEN for name, o in w.objects.items()}


def test_every_route_role_and_incident_answers_as_the_matrix_says(app: Flask, live_server: Any) -> None:
    started = time.monotonic()
    world = _build(app)
    built = time.monotonic()
    mismatches = _http_mismatches(app, world)
    called = time.monotonic()
    mismatches += _socket_mismatches(live_server.url, world, app.config.get("SESSION_COOKIE_NAME", "session"))
    for role in M.SIGNED_IN:
        # Signing out answers with the login page; what shows it worked is that the session is gone after it.
        client = world.web[role]
        _web_request(world, "POST /logout", role, None, client)
        after = _classify(client.get("/account/password"), True)
        if not after.startswith(M.UNAUTHENTICATED):
            mismatches.append(f"POST /logout | {role} | - | expected signed out | got {after} on /account/password")
    print(f"world {built - started:.1f} s, routes {called - built:.1f} s, /live {time.monotonic() - called:.1f} s")
    if mismatches:
        print("\n".join(["route | role | object | expected | got", *mismatches]), file=sys.stderr)
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches)
