"""Load and validate playbook YAML; every error names the file or version, the line and the field."""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from incidents.enums import TLP, Category, IncidentClass, Priority
from playbooks.steps import STEPS, parse_duration

DEFINITIONS = Path(__file__).resolve().parent / "definitions"
STEP_KINDS = tuple(STEPS)
TARGET_KEYS = ("contact", "group", "organisation", "role", "system_operator")
PICKS = ("default", "all", "on_call", "round_robin")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_DEPTH = 4


@dataclass(frozen=True)
class Issue:
    line: int | None
    field: str
    message: str


@dataclass
class SpecError(Exception):
    """A definition that cannot be used; `source` is the file name or "version N"."""

    source: str
    issues: list[Issue] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{self.source}, line {i.line or '?'}, field {i.field}: {i.message}" for i in self.issues)


@dataclass(frozen=True)
class Known:
    """What the directory holds, so references can be checked; None skips that check."""

    organisations: frozenset[str] | None = None
    groups: frozenset[str] | None = None


@dataclass(frozen=True)
class Spec:
    name: str
    title_vi: str
    title_en: str | None
    trigger: str
    definition: dict[str, Any]
    source: str
    digest: str


def _to_python(node: yaml.Node, path: str, lines: dict[str, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(yaml.safe_load(yaml.serialize(key_node)))
            child = f"{path}.{key}" if path else key
            lines[child] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, f"{path}[{i}]", lines) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load(text: str, source: str, known: Known | None = None) -> Spec:
    """Parse and validate one definition; SpecError lists everything wrong with it."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(source, [Issue(mark.line + 1 if mark else None, "(yaml)", str(exc).splitlines()[0])]) from None
    lines: dict[str, int] = {}
    data = _to_python(node, "", lines) if node is not None else None
    checker = _Checker(lines, known or Known())
    checker.playbook(data)
    if checker.issues:
        raise SpecError(source, checker.issues)
    return Spec(
        name=data["name"],
        title_vi=data["title_vi"],
        title_en=data.get("title_en"),
        trigger=data.get("trigger", "auto"),
        definition=data,
        source=text,
        digest=hashlib.sha256(text.encode()).hexdigest(),
    )


def load_directory(directory: Path = DEFINITIONS, known: Known | None = None) -> tuple[list[Spec], list[SpecError]]:
    """Every *.yaml under `directory`: the ones that load, and the errors of the others (they do not stop the rest)."""
    specs, errors = [], []
    names: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            spec = load(path.read_text(encoding="utf-8"), path.name, known)
        except SpecError as exc:
            errors.append(exc)
            continue
        if spec.name in names:
            errors.append(
                SpecError(path.name, [Issue(1, "name", f"{spec.name!r} is also defined in {names[spec.name]}")])
            )
            continue
        names[spec.name] = path.name
        specs.append(spec)
    return specs, errors


class _Checker:
    def __init__(self, lines: dict[str, int], known: Known) -> None:
        self.lines, self.known = lines, known
        self.issues: list[Issue] = []

    def bad(self, path: str, message: str) -> None:
        line = self.lines.get(path)
        probe = path
        while line is None and probe:
            probe = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe)
            line = self.lines.get(probe)
        self.issues.append(Issue(line, path or "(document)", message))

    def keys(self, data: dict, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
        allowed = set(allowed)
        for key in data:
            if key not in allowed:
                self.bad(f"{path}.{key}" if path else key, f"unknown field; allowed: {', '.join(sorted(allowed))}")
        for key in required:
            if key not in data:
                self.bad(f"{path}.{key}" if path else key, "required")

    def text(self, data: dict, key: str, path: str, *, required: bool = False, size: int = 500) -> None:
        if key not in data:
            if required:
                self.bad(f"{path}.{key}" if path else key, "required")
            return
        value = data[key]
        if not isinstance(value, str) or not value.strip() or len(value) > size:
            self.bad(f"{path}.{key}" if path else key, f"a non-empty text of at most {size} characters")

    def playbook(self, data: Any) -> None:
        if not isinstance(data, dict):
            self.bad("", "a playbook is a mapping with name, title_vi and steps")
            return
        self.keys(
            data,
            "",
            ("name", "title_vi", "title_en", "description", "trigger", "when", "steps"),
            ("name", "title_vi", "steps"),
        )
        if "name" in data and not (isinstance(data["name"], str) and _NAME.match(data["name"])):
            self.bad("name", "lower-case letters, digits, '-' and '_' (at most 100)")
        self.text(data, "title_vi", "", size=300)
        self.text(data, "title_en", "", size=300)
        self.text(data, "description", "", size=5000)
        if data.get("trigger", "auto") not in ("auto", "manual"):
            self.bad("trigger", "auto (starts on matching incidents) or manual")
        if "when" in data:
            self.when(data["when"], "when")
        steps = data.get("steps")
        if "steps" in data:
            if not isinstance(steps, list) or not steps:
                self.bad("steps", "a non-empty list of steps")
            else:
                self.steps(steps, "steps", 0)

    def when(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.bad(path, "a mapping of conditions")
            return
        vocab = {
            "category": [c.value for c in Category],
            "priority": [p.value for p in Priority],
            "tlp": [t.value for t in TLP],
            "class": [c.value for c in IncidentClass],
        }
        self.keys(value, path, (*vocab, "exercise", "security_level"))
        for key, allowed in vocab.items():
            if key in value:
                items = value[key] if isinstance(value[key], list) else [value[key]]
                for n, item in enumerate(items):
                    if item not in allowed:
                        where = f"{path}.{key}[{n}]" if isinstance(value[key], list) else f"{path}.{key}"
                        self.bad(where, f"{item!r} is not one of {', '.join(allowed)}")
        if "exercise" in value and not isinstance(value["exercise"], bool):
            self.bad(f"{path}.exercise", "true or false")
        if "security_level" in value:
            level = value["security_level"]
            if isinstance(level, dict):
                self.keys(level, f"{path}.security_level", ("min", "max"))
                for bound in ("min", "max"):
                    if bound in level and level[bound] not in (1, 2, 3, 4, 5):
                        self.bad(f"{path}.security_level.{bound}", "a level from 1 to 5")
            elif not (isinstance(level, list) and level and all(x in (1, 2, 3, 4, 5) for x in level)):
                self.bad(f"{path}.security_level", "a list of levels 1–5, or {min, max}")

    def steps(self, steps: list, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.bad(path, f"escalations nest at most {MAX_DEPTH} deep")
            return
        for n, step in enumerate(steps):
            where = f"{path}[{n}]"
            if not isinstance(step, dict):
                self.bad(where, f"a step is a mapping with one of {', '.join(STEP_KINDS)}")
                continue
            kinds = [k for k in step if k in STEP_KINDS]
            if len(kinds) != 1:
                self.bad(where, f"exactly one of {', '.join(STEP_KINDS)}")
                continue
            kind = kinds[0]
            self.keys(step, where, (kind, "when"))
            if "when" in step:
                self.when(step["when"], f"{where}.when")
            body = step[kind]
            here = f"{where}.{kind}"
            if not isinstance(body, dict):
                self.bad(here, "a mapping")
                continue
            getattr(self, f"step_{kind}")(body, here, depth)

    def target(self, body: dict, path: str) -> None:
        given = [k for k in TARGET_KEYS if k in body]
        if len(given) != 1:
            self.bad(path, f"exactly one target: {', '.join(TARGET_KEYS)}")
            return
        key = given[0]
        value = body[key]
        where = f"{path}.{key}"
        if key == "contact" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            self.bad(where, "a contact id")
        elif key == "system_operator" and value is not True:
            self.bad(where, "true: the operator organisation of the affected system")
        elif key in ("group", "organisation", "role") and not (isinstance(value, str) and value.strip()):
            self.bad(where, "a code")
        elif key == "organisation" and self.known.organisations is not None and value not in self.known.organisations:
            self.bad(where, f"no organisation {value!r} in the directory")
        elif key == "group" and self.known.groups is not None and value not in self.known.groups:
            self.bad(where, f"no group {value!r} in the directory")

    def step_page(self, body: dict, path: str, depth: int) -> None:
        self.keys(body, path, (*TARGET_KEYS, "reason_vi", "reason_en", "pick", "repage"))
        if body.get("repage") is True:
            extra = [k for k in TARGET_KEYS if k in body]
            if extra:
                self.bad(f"{path}.{extra[0]}", "repage pages the unacknowledged pages again: no target beside it")
            if depth == 0:
                self.bad(f"{path}.repage", "repage belongs in a wait_for_ack's escalate list")
        else:
            self.target(body, path)
        if "repage" in body and not isinstance(body["repage"], bool):
            self.bad(f"{path}.repage", "true or false")
        if "pick" in body and body["pick"] not in PICKS:
            self.bad(f"{path}.pick", f"one of {', '.join(PICKS)}")
        self.text(body, "reason_vi", path, size=2000)
        self.text(body, "reason_en", path, size=2000)

    def step_notify(self, body: dict, path: str, depth: int) -> None:
        self.keys(body, path, (*TARGET_KEYS, "text_vi", "text_en", "pick"))
        self.target(body, path)
        self.text(body, "text_vi", path, size=2000)
        self.text(body, "text_en", path, size=2000)
        if "pick" in body and body["pick"] not in PICKS:
            self.bad(f"{path}.pick", f"one of {', '.join(PICKS)}")

    def step_task(self, body: dict, path: str, depth: int) -> None:
        self.keys(body, path, ("organisation", "system_operator", "title_vi", "title_en", "due"), ("title_vi",))
        self.text(body, "title_vi", path)
        self.text(body, "title_en", path)
        if "organisation" in body or "system_operator" in body:
            self.target({k: body[k] for k in ("organisation", "system_operator") if k in body}, path)
        if "due" in body and parse_duration(body["due"]) is None:
            self.bad(f"{path}.due", "a duration such as 30m, 2h or 1d")

    def step_request_direction(self, body: dict, path: str, depth: int) -> None:
        self.keys(body, path, ("question_vi", "question_en"), ("question_vi",))
        self.text(body, "question_vi", path, size=5000)
        self.text(body, "question_en", path, size=5000)

    def step_wait_for_ack(self, body: dict, path: str, depth: int) -> None:
        self.keys(body, path, ("timeout", "escalate"), ("timeout",))
        if "timeout" in body:
            seconds = parse_duration(body["timeout"])
            if seconds is None or seconds <= 0:
                self.bad(f"{path}.timeout", "a positive duration such as 3s, 15m or 1h")
        if "escalate" in body:
            if not isinstance(body["escalate"], list) or not body["escalate"]:
                self.bad(f"{path}.escalate", "a non-empty list of steps, run when nobody acknowledged in time")
            else:
                self.steps(body["escalate"], f"{path}.escalate", depth + 1)
