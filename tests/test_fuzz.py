"""Schemathesis-generated requests, valid and invalid, against every operation of the real gunicorn server."""

import base64
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests import paging
from tests.conftest import incident_payload

# Per operation: requests that fit the schema (some aimed at rows that exist) and requests that break it.
EXAMPLES = {GenerationMode.POSITIVE: 70, GenerationMode.NEGATIVE: 40}
MIN_GENERATED = 2_000
SENDERS = 4

# Hand-picked values the generator rarely hits: NUL (PostgreSQL text refuses it), a digit int() refuses,
# ids beyond BIGINT, a timestamp UTC cannot hold, a lone surrogate.
HOSTILE_PATH = ["\x00", "TH-\x00", "²", "9" * 25, "-1", "0", "%", ".."]
FAR_CURSOR = base64.urlsafe_b64encode(b"after:" + b"9" * 25).decode()
YEAR_ONE = "0001-01-01T00:00:00+05:00"
HOSTILE: dict[str, list[dict[str, Any]]] = {
    "POST /api/v1/incidents": [
        {"body": incident_payload(detected_at=YEAR_ONE)},
        {"body": incident_payload(title="\ud800")},
        {"body": incident_payload(reporter={"name": "\x00"})},
        {"body": incident_payload(dedup_key="\x00")},
        {"body": incident_payload(observables=[{"type": "file", "value": "x", "hashes": {"MD5": "\x00" * 32}}])},
    ],
    "POST /api/v1/incidents/bulk": [{"body": {"incidents": [incident_payload(detected_at=YEAR_ONE)]}}],
    "GET /api/v1/incidents": [
        {"query": {"q": "\x00"}},
        {"query": {"updated_since": YEAR_ONE}},
        {"query": {"cursor": FAR_CURSOR}},
        {"query": {"limit": "9" * 25}},
        {"query": {"sort": "\x00"}},
    ],
    "GET /api/v1/incidents/{incident_id}/events": [{"query": {"cursor": FAR_CURSOR}}],
    "GET /api/v1/incidents/{incident_id}/comments": [{"query": {"cursor": FAR_CURSOR}}],
    "PATCH /api/v1/incidents/{incident_id}": [{"body": {"detected_at": YEAR_ONE}}, {"body": {"title": "\ud800"}}],
    "POST /api/v1/incidents/{incident_id}/transitions": [
        {"body": {"to": "merged", "merged_into": "9" * 25}},
        {"body": {"to": "merged", "merged_into": "²"}},
    ],
    "POST /api/v1/incidents/{incident_id}/comments": [{"body": {"body": "\ud800"}}, {"body": {"body": "a\x00"}}],
    "POST /api/v1/systems": [{"body": {"code": "x", "name": "\x00", "security_level": 3}}],
}

# Generating ~2,200 cases costs ~15 s of CPU; the first backend's run keeps them and the other backend's
# run (same worker: xdist_group below) replays them, so both databases see the same inputs within budget.
_generated: list[schemathesis.Case] = []


def _seed(url: str, headers: dict[str, str]) -> dict[str, list]:
    """A few real rows, so generated path parameters also reach handlers beyond the 404."""
    incidents: list = []
    for n, tlp in enumerate(["clear", "green", "amber", "amber+strict", "red"]):
        r = requests.post(f"{url}/api/v1/incidents", json=incident_payload(title=f"fuzz seed {n}", tlp=tlp),
                          headers=headers, timeout=10)  # fmt: skip
        assert r.status_code == 201, r.text
        incidents += [str(r.json()["id"]), r.json()["ref"]]
    comments, participants = [], []
    for incident in incidents[::2]:
        r = requests.post(f"{url}/api/v1/incidents/{incident}/comments", json={"body": "seed"},
                          headers=headers, timeout=10)  # fmt: skip
        assert r.status_code == 201, r.text
        comments.append(r.json()["id"])
        r = requests.post(f"{url}/api/v1/incidents/{incident}/participants", json={"organisation": "doh"},
                          headers=headers, timeout=10)  # fmt: skip
        assert r.status_code == 201, r.text
        participants.append(r.json()["id"])
    return {"incident_id": incidents, "comment_id": comments, "participant_id": participants,
            "code": ["cong-dvc", "qlvb"], "kind": ["initial", "end"], "evidence_id": ["1"]}  # fmt: skip


def _seed_paging(app: Any, real: dict[str, list]) -> None:
    """The directory's and the engine's rows the seed filings made (their playbooks started by their jobs)."""
    from sqlalchemy import select

    from app import db
    from playbooks.models import Contact, DirectionRequest, Page, PlaybookRun, PlaybookVersion, Schedule, Task

    with app.app_context():
        session = db.session()
        found = {
            "contact_id": session.scalars(select(Contact.id).order_by(Contact.id).limit(3)).all(),
            "page_id": session.scalars(select(Page.id).order_by(Page.id).limit(3)).all(),
            "run_id": session.scalars(select(PlaybookRun.id).order_by(PlaybookRun.id).limit(3)).all(),
            "task_id": session.scalars(select(Task.id).order_by(Task.id).limit(3)).all(),
            "request_id": session.scalars(select(DirectionRequest.id).order_by(DirectionRequest.id).limit(3)).all(),
            "name": session.scalars(select(PlaybookVersion.name).distinct().order_by(PlaybookVersion.name)).all(),
        }
        real["code"] += session.scalars(select(Schedule.code).order_by(Schedule.code).limit(2)).all()
    for name, values in found.items():
        real[name] = [str(v) for v in values] or ["1"]  # a row the fuzz may at least look for


def _hostile_cases(operation: schemathesis.APIOperation, real: dict[str, list]) -> list[schemathesis.Case]:
    params = [p.name for p in operation.path_parameters]
    # A parameter no seed row stands for still gets a well-formed id, so the handler is reached, not the router.
    real_path = {name: str(real.get(name, ["1"])[0]) for name in params}
    empty = {"body": {}} if operation.get_request_payload_content_types() else {}
    cases = [
        operation.Case(path_parameters={**real_path, name: value}, **empty) for name in params for value in HOSTILE_PATH
    ]
    return cases + [operation.Case(path_parameters=real_path, **kwargs) for kwargs in HOSTILE.get(operation.label, [])]


def _generate(operation: schemathesis.APIOperation, mode: GenerationMode, real: dict[str, list], emit: Any) -> None:
    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode), pick=st.integers(0, 12))
    def generate(case: schemathesis.Case, pick: int) -> None:
        if mode is GenerationMode.POSITIVE:
            # Valid cases often name a row that exists, so the handlers behind the 404 run too.
            for name, values in real.items():
                if name in (case.path_parameters or {}) and pick < len(values):
                    case.path_parameters[name] = values[pick]
        emit(case)

    generate()


@pytest.mark.slow
@pytest.mark.xdist_group("fuzz")
def test_generated_requests_to_every_operation_get_no_5xx_and_log_no_traceback(app, live_server, make_token):
    # An admin reaches every operation (operators cannot decide a class, intake clients only file).
    headers = make_token("admin", username="fuzz-admin")
    paging.load_shipped(app, demo=True)  # contacts, schedules and playbooks, so paging routes reach their handlers
    real = _seed(live_server.url, headers)
    paging.run_jobs(app)  # the worker's part: the seed filings' playbooks start and page
    _seed_paging(app, real)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    local = threading.local()
    lock = threading.Lock()
    sent: Counter[str] = Counter()
    failures: list[str] = []

    def send(case: schemathesis.Case, generated: bool = True) -> None:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        try:
            response = case.call(base_url=live_server.url, session=local.http, headers=headers, timeout=30)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
            return  # the client library refused to send it, so the server never saw it
        problem = None
        if response.status_code >= 500:
            problem = f"{response.status_code} {response.text[:500]}"
        elif (response.status_code >= 400 and "x-request-id" in response.headers
              and response.headers.get("content-type") != ["application/problem+json"]):  # fmt: skip
            # Every answer of the app is problem+json; gunicorn's own (414 URI too long) are not the app's.
            problem = f"{response.status_code} is not application/problem+json: {response.headers}"
        with lock:
            sent[case.operation.label] += 1
            sent["generated" if generated else "hand-picked"] += 1
            if problem:
                failures.append(f"{problem}\n{case.as_curl_command(headers, base_url=live_server.url)}")

    started = time.perf_counter()
    # Cases are generated (CPU) here while a few threads send them, so the server also sees concurrency.
    with ThreadPoolExecutor(SENDERS) as pool:
        for operation in operations:
            for case in _hostile_cases(operation, real):
                pool.submit(send, case, False)
        if _generated:
            for case in _generated:
                pool.submit(send, case)
        else:
            for operation in operations:
                for mode in EXAMPLES:
                    _generate(operation, mode, real, lambda case: (_generated.append(case), pool.submit(send, case)))
    elapsed = time.perf_counter() - started

    generated, picked = sent.pop("generated", 0), sent.pop("hand-picked", 0)
    print(f"\nfuzz: {generated + picked} requests ({generated} generated, {picked} hand-picked) "
          f"to {len(sent)} operations in {elapsed:.1f}s")  # fmt: skip
    for label, count in sorted(sent.items()):
        print(f"  {count:5d}  {label}")
    assert not failures, f"{len(failures)} bad answers:\n\n" + "\n\n".join(failures[:20])
    assert generated >= MIN_GENERATED
    assert set(sent) == {op.label for op in operations}, "every operation is exercised"
    log = live_server.log()
    assert "Traceback" not in log, log[-5000:]
