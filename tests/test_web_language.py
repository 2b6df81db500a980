"""Every page and every event kind in both languages: no raw key, no string of the other language."""

import ast
import html as html_module
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import db
from app.web import labels
from incidents.models import Event, Incident, Organisation, System, User
from playbooks.models import Contact, Group, PlaybookVersion
from tests import paging
from tests.test_web import _catalogue, file_as
from tests.web import csrf, make_user, sign_in, text_of, user_row

ROOT = Path(__file__).resolve().parent.parent
KEY = re.compile(r"^[a-z]+(?:_[a-z]+)*\.[a-z]+(?:_[a-z]+)*$")
# Words no Vietnamese sentence contains; one of them on a Vietnamese page is an English string.
ENGLISH = {
    "the", "is", "are", "was", "were", "has", "have", "this", "that", "with", "from", "not", "for", "and", "of",
    "by", "cannot", "must", "nobody", "reaches", "failed", "unknown", "none", "error", "should", "page", "paged",
    "channel", "configured", "deployment", "person", "acknowledged", "escalated", "delivered", "field", "required",
}  # fmt: skip
VIETNAMESE = re.compile(r"[ăâđêôơưĂÂĐÊÔƠƯàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ]", re.I)
# Acronyms and names that read the same in both languages.
NEUTRAL = {"TLP", "CLEAR", "GREEN", "AMBER", "STRICT", "RED", "ATT&CK", "STIX", "TAXII", "API", "IOC", "SIEM", "SOC"}


def _constants(node: ast.AST) -> list[str]:
    return [
        c.value
        for c in ast.walk(node)
        if isinstance(c, ast.Constant) and isinstance(c.value, str) and KEY.match(c.value)
    ]


def event_kinds() -> set[str]:
    """Every event kind the code records: the kind given to a call that writes an event, as a literal or a name."""
    kinds: set[str] = set()
    for package in ("incidents", "playbooks", "app"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            named: dict[str, list[str]] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            named.setdefault(target.id, []).extend(_constants(node.value))
                        elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                            for name, value in zip(target.elts, node.value.elts, strict=False):
                                if isinstance(name, ast.Name):
                                    named.setdefault(name.id, []).extend(_constants(value))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                given = [kw.value for kw in node.keywords if kw.arg == "kind"]
                if "event" in func.lower() or func == "record":  # record_event(s), run_event, timeline.record
                    given += node.args
                for sub in given:
                    kinds.update(_constants(sub))
                    for n in ast.walk(sub):
                        if isinstance(n, ast.Name):
                            kinds.update(named.get(n.id, []))
    return kinds


def test_the_code_records_the_event_kinds_this_test_knows_and_each_has_a_label() -> None:
    kinds = event_kinds()
    assert {"incident.created", "page.failed", "deadline.breached", "report.created", "source.silent"} <= kinds
    assert not kinds - set(labels.EVENT), f"event kinds without a label: {sorted(kinds - set(labels.EVENT))}"


def _english_vietnamese_pairs() -> list[tuple[str, str]]:
    return [
        (m.id, m.string)
        for m in _catalogue("vi")
        if m.string and m.string != m.id and "%(" not in m.id and len(m.id) >= 4 and m.id not in NEUTRAL
    ]


def _words(text: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text) is not None


def _scenario(app: Flask) -> tuple[str, str]:
    """An incident worked through the shipped playbooks with no channel configured, and one event of every kind."""
    paging.load_shipped(app)
    ref = file_as(
        app, "op", title="Mã độc trên máy chủ", category="malware", priority="P1", tlp="amber",
        description="Phát hiện mã độc.",
    )  # fmt: skip
    paging.run_jobs(app)
    with app.app_context():
        s = db.session()
        incident = s.scalar(select(Incident).where(Incident.ref == ref))
        version = s.scalars(select(PlaybookVersion)).first()
        for kind in sorted(event_kinds()):
            s.add(
                Event(
                    incident_id=incident.id, kind=kind, actor=f"playbook:{version.name}" if version else "system",
                    data={"from": "new", "to": "triage", "channel": "email", "role": "working_group.leader"},
                    tlp=incident.tlp,
                )
            )  # fmt: skip
        s.commit()
        name = version.name if version else ""
    return ref, name


def _data_names(app: Flask) -> list[str]:
    """Names that are data (the registry's, the directory's, the playbooks'), in either language, longest first."""
    with app.app_context():
        s = db.session()
        names: list[str] = []
        for org in s.scalars(select(Organisation)):
            names += [org.name_vi, org.name_en or ""]
        names += [x.name for x in s.scalars(select(System))]
        for contact in s.scalars(select(Contact)):
            names += [contact.name, contact.title or ""]
        for group in s.scalars(select(Group)):
            names += [group.name_vi, group.name_en or ""]
        names += [u.display_name or "" for u in s.scalars(select(User))]
    return sorted({n for n in names if n}, key=len, reverse=True)


def _raw_keys(app: Flask, kinds: set[str], playbook: str) -> set[str]:
    with app.app_context():
        codes = {o.code for o in db.session().scalars(select(Organisation)) if len(o.code) >= 4}
    vocab = {
        key
        for table in (labels.STATUS, labels.CATEGORY, labels.DETECTION, labels.NOTIFIED, labels.CONDITION, labels.ROLE)
        for key in table
        if "_" in key
    }
    contact_roles = {"board.head", "board.deputy_head", "working_group.leader", "standing_body.duty"}
    return kinds | contact_roles | vocab | codes | {f"playbook:{playbook}", "unknown"}


def _pages(app: Flask, ref: str, playbook: str) -> list[str]:
    urls = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("web.") and "GET" in rule.methods and not rule.arguments
    }
    urls -= {"/", "/login", "/login/totp", "/account/totp"}
    return [*sorted(urls), f"/incidents/{ref}", f"/playbooks/{playbook}"]


def _form_errors(client: FlaskClient, ref: str) -> list[str]:
    """What the intake form and a refused transition say."""
    page = client.get("/incidents/new")
    bad = client.post(
        "/incidents/new",
        data={
            "csrf_token": csrf(page.text),
            "title": "",
            "category": "",
            "reporter.email": "not-an-address",
            "observables[0].type": "ipv4-addr",
            "observables[0].value": "999.1.1.1",
            "detected_at": "2099-01-01T10:00",
            "affected_system": "no-such-system",
        },
    )
    page = client.get(f"/incidents/{ref}")
    client.post(f"/incidents/{ref}/transitions", data={"to": "closed", "csrf_token": csrf(page.text)})
    return [bad.text, client.get(f"/incidents/{ref}").text]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("language", ["vi", "en"])
def test_every_page_and_event_kind_speaks_one_language_with_no_raw_key(app: Flask, language: str) -> None:
    secret = make_user(app, "boss", role="admin", totp=True, language=language)
    make_user(app, "op", language=language)
    make_user(app, "member", role="committee", language=language)
    ref, playbook = _scenario(app)
    names = _data_names(app)
    kinds = event_kinds()
    raw = _raw_keys(app, kinds, playbook)
    if language == "en":  # a code that is an English word ("national") is no raw key in English prose
        raw -= {w for m in _catalogue("vi") for w in re.findall(r"[a-z]+", str(m.id))}
    pairs = _english_vietnamese_pairs()
    incident_title = "Mã độc trên máy chủ"
    failures: list[str] = []

    def check(url: str, html: str) -> None:
        # Identifiers (<code>) and what people type (<textarea>, <pre>: a playbook's source) are not UI strings.
        text = text_of(re.sub(r"<(code|textarea|pre)\b[^>]*>.*?</\1>", " ", html, flags=re.S))
        # The language switch names each language in itself; the Decree's clause letters include (đ).
        text = re.sub(r"\S+@\S+", " ", html_module.unescape(text))  # e-mail addresses are data
        text = text.replace("Tiếng Việt", " ").replace("(đ)", " ").replace("(a)–(đ)", " ")
        for name in (*names, incident_title, "Phát hiện mã độc."):
            text = text.replace(name, " ")
        failures.extend(f"{url}: raw {k!r}" for k in sorted(raw) if _words(text, k))
        if language == "vi":
            failures.extend(f"{url}: English {en!r}" for en, _vi in pairs if _words(text, en))
            words = {w.lower() for w in re.findall(r"[A-Za-z]+", text)}
            failures.extend(f"{url}: English word {w!r}" for w in sorted(words & ENGLISH))
        else:
            failures.extend(f"{url}: Vietnamese {vi!r}" for _en, vi in pairs if _words(text, vi))
            failures.extend(
                f"{url}: Vietnamese text {m!r}" for m in re.findall(r"\S*" + VIETNAMESE.pattern + r"\S*", text)
            )

    for username in ("op", "member", "boss"):
        client = app.test_client()
        sign_in(client, username, totp=secret if username == "boss" else None)
        assert user_row(app, username).language == language
        for url in _pages(app, ref, playbook):
            response = client.get(url)
            if response.status_code == 200 and response.mimetype == "text/html":
                check(f"{username} {url}", response.text)
        if username == "op":
            for n, html in enumerate(_form_errors(client, ref)):
                check(f"op form {n}", html)
    assert not failures, "\n".join(dict.fromkeys(failures))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_status_names_use_the_procedures_words(app: Flask) -> None:
    from flask_babel import force_locale

    with app.test_request_context(), force_locale("vi"):
        assert str(labels.STATUS["new"]) == "Tiếp nhận"
