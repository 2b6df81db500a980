"""The kinds of step a playbook has, one handler each, and how steps are addressed.

`STEPS` is the one table of step kinds: the runner (`runs.advance`) looks a step's handler up in it and the
loader (`spec`) accepts exactly its kinds. A path names a step: "2" is the third, "2.e.0" the first step of
the third step's escalation.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents import jobs
from incidents.base import utcnow
from incidents.models import Incident, Organisation
from playbooks import oncall, paging, timeline
from playbooks.models import RUN_WAITING, DirectionRequest, PlaybookRun, RunStep, Task
from playbooks.settings import Settings

# Job kind: a wait_for_ack's timer.
WAIT = "playbooks.wait"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float | None:
    """Seconds of "3s", "15m", "2h", "1d" or a plain number of seconds; None when malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    match = _DURATION.match(str(value))
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


@dataclass(frozen=True)
class StepCall:
    """One step being carried out, inside its run's transaction; `record` is its `RunStep` row."""

    session: Session
    run: PlaybookRun
    incident: Incident
    kind: str
    body: dict[str, Any]
    path: str
    record: RunStep
    settings: Settings


def _page(step: StepCall) -> bool:
    if step.body.get("repage"):
        paging.repage(step.session, step.run, step.incident, step.settings)
    else:
        paging.create_page(
            step.session,
            incident=step.incident,
            body=step.body,
            run=step.run,
            path=step.path,
            settings=step.settings,
            requires_ack=step.kind == "page",
            escalation=".e." in step.path,
        )
    return False


def _task(step: StepCall) -> bool:
    session, run, incident, body, path = step.session, step.run, step.incident, step.body, step.path
    org_id = None
    if body.get("organisation"):
        org_id = session.scalar(select(Organisation.id).where(Organisation.code == body["organisation"]))
    elif body.get("system_operator"):
        org_id = oncall.system_operator_id(incident)
    due = parse_duration(body["due"]) if "due" in body else None
    task = Task(
        incident_id=incident.id,
        run_id=run.id,
        step_path=path,
        organisation_id=org_id,
        title_vi=body["title_vi"],
        title_en=body.get("title_en"),
        due_at=utcnow() + timedelta(seconds=due) if due is not None else None,
        key=f"{run.id}:{path}",
    )
    session.add(task)
    session.flush()
    org = session.get(Organisation, org_id) if org_id else None
    timeline.record(
        session,
        "task.created",
        incident,
        None,
        task_id=task.id,
        title=task.title_vi,
        organisation=org.code if org else None,
        due_at=task.due_at.isoformat() if task.due_at else None,
    )
    return False


def _request_direction(step: StepCall) -> bool:
    session, run, body = step.session, step.run, step.body
    request = DirectionRequest(
        incident_id=step.incident.id,
        run_id=run.id,
        step_path=step.path,
        question_vi=body["question_vi"],
        question_en=body.get("question_en"),
        requested_by=f"playbook:{run.name}",
        key=f"{run.id}:{step.path}",
    )
    session.add(request)
    session.flush()
    timeline.record(
        session, "direction.requested", step.incident, None, request_id=request.id, question=request.question_vi
    )
    return False


def _wait_for_ack(step: StepCall) -> bool:
    step.record.outcome = "waiting"
    step.run.state = RUN_WAITING
    timeout = parse_duration(step.body["timeout"]) or 0
    jobs.enqueue(
        step.session,
        WAIT,
        {"run_id": step.run.id, "path": step.path},
        run_at=utcnow() + timedelta(seconds=timeout),
        key=f"{WAIT}:{step.run.id}:{step.path}",
        incident_id=step.incident.id,
    )
    return True


# Each handler carries out its step and says whether the run now waits (True) or goes on to the next step.
STEPS: dict[str, Callable[[StepCall], bool]] = {
    "page": _page,
    "notify": _page,
    "task": _task,
    "request_direction": _request_direction,
    "wait_for_ack": _wait_for_ack,
}


def step_at(definition: dict[str, Any], path: str) -> dict[str, Any] | None:
    parts = path.split(".")
    steps = definition["steps"]
    step = None
    i = 0
    while i < len(parts):
        index = int(parts[i])
        if index >= len(steps):
            return None
        step = steps[index]
        if i + 1 < len(parts):
            steps = step["wait_for_ack"]["escalate"]
            i += 2
        else:
            i += 1
    return step


def next_path(definition: dict[str, Any], path: str) -> str | None:
    """The step after `path`; after the last step of an escalation, the step after its wait_for_ack."""
    parts = path.split(".")
    sibling = ".".join([*parts[:-1], str(int(parts[-1]) + 1)])
    if step_at(definition, sibling) is not None:
        return sibling
    if len(parts) == 1:
        return None
    return next_path(definition, ".".join(parts[:-2]))


def step_kind(step: dict[str, Any]) -> str:
    return next(k for k in STEPS if k in step)
