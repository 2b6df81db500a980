"""STIX/TAXII benchmark: export, import, one TAXII page and the projector, each against a baseline of the same run.

What it measures (its targets and figures are in docs/benchmarks.md):
- export of one incident with 10,000 indicators (50,000+ stored objects: SCOs, indicators, relationships,
  sightings) through `GET /api/v1/incidents/{id}/stix`, against `json.dumps` of the same stored bodies
  already in memory as dicts (ratio target ≤ 1.5×, p99 ≤ 1 s);
- import of a 10,000-object bundle through `POST /api/v1/stix/bundles` (validation, de-duplication,
  storage in one transaction), against bare `stix2.parse` of each object plus stix2-validator on the bundle
  (ratio target ≤ 1.5×);
- one TAXII page of 1,000 objects (`GET …/objects/?limit=1000`, following `next`), p99 ≤ 200 ms;
- projector throughput: incidents filed in bulk (3 observables each), then projected from their events;
- intake under gunicorn with the worker's projector running beside it, against the same run without it.

All in-process except the last (gunicorn and `flask worker` subprocesses) on SQLite in a temporary
directory. `UCSC_BENCH_SCALE` (default 1.0) scales the sizes; CI runs 0.1 only to prove the bench runs, and
targets are enforced (exit status 1 when missed) only at full scale. Figures go to stdout and to
bench/results-stix.json (`UCSC_BENCH_OUTPUT` overrides the path).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from _common import SCALE, percentile, scaled
from _common import env as _env
from _common import flask as _flask

ROOT = Path(__file__).resolve().parent.parent
# The project's packages, not the benches beside this file, must answer imports (bench/telegram.py would
# shadow python-telegram-bot, this file the STIX 1 `stix` package).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
OUTPUT = Path(os.environ.get("UCSC_BENCH_OUTPUT", ROOT / "bench" / "results-stix.json"))
TARGETS = {"export_ratio": 1.5, "export_p99_s": 1.0, "import_ratio": 1.5, "taxii_page_p99_ms": 200.0}
GREEN = "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"


def _indicator(i: int) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{i:08x}-7777-4222-8333-444455556666",
        "created": "2026-11-01T00:00:00.000Z",
        "modified": "2026-11-01T00:00:00.000Z",
        "name": f"bench {i}",
        "description": f"bench {i}",
        "pattern": f"[ipv4-addr:value = '10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}']",
        "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00Z",
        "object_marking_refs": [GREEN],
    }


def _app(url: str, observables: int) -> Any:
    from app import create_app

    return create_app(
        {
            "DATABASE_URL": url,
            "SECRET_KEY": "bench",
            "INTAKE_RATE_LIMIT": "",
            "LIMIT_OBSERVABLES": observables,
            "LIMIT_BULK": 5000,
        }
    )


def _token(app: Any, role: str = "operator", name: str = "bench") -> dict[str, str]:
    from app import db
    from app.auth import new_token
    from incidents import accounts
    from incidents.enums import Role

    token, digest = new_token()
    with app.app_context():
        s = db.session()
        with s.begin():
            accounts.create_user(session=s, username=name, role=Role(role), organisation="dic", password_hash=None)
            accounts.create_token(session=s, name=f"t-{name}", role=Role(role), digest=digest, user=name)
    return {"Authorization": f"Bearer {token}"}


def _timed(fn: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)


def bench_export(app: Any, headers: dict[str, str], errors: list[str]) -> dict[str, Any]:
    from incidents.models import StixObject

    n = scaled(10_000, 100)
    client = app.test_client()
    observables = [
        {"type": "ipv4-addr", "value": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"} for i in range(n)
    ]
    body = {
        "title": "Bench: 10,000 indicators",
        "category": "malware",
        "priority": "P2",
        "tlp": "amber",
        "detected_at": "2026-11-20T08:30:00+07:00",
        "observables": observables,
    }
    filed = client.post("/api/v1/incidents", json=body, headers=headers).json
    started = time.perf_counter()
    first = client.get(f"/api/v1/incidents/{filed['id']}/stix", headers=headers)  # projects, then exports
    projection_s = time.perf_counter() - started
    if first.status_code != 200:
        errors.append(f"export answered {first.status_code}")
        return {}
    bundle = first.get_data()
    objects = len(json.loads(bundle)["objects"])
    from sqlalchemy import select

    from app import db

    with app.app_context():
        bodies = [
            json.loads(b)
            for b in db.session().scalars(
                select(StixObject.body).where(StixObject.incident_id == filed["id"], StixObject.current)
            )
        ]
    repeats = 20 if SCALE >= 1 else 10

    def export() -> None:
        r = client.get(f"/api/v1/incidents/{filed['id']}/stix", headers=headers)
        if r.status_code != 200 or r.get_data() != bundle:
            errors.append("a re-export differed")

    ours = _timed(export, repeats)
    base = _timed(lambda: json.dumps({"type": "bundle", "id": "bundle--x", "objects": bodies}), repeats)
    return {
        "indicators": n,
        "objects": objects,
        "first_export_with_projection_s": round(projection_s, 3),
        "p50_s": round(percentile(ours, 50), 4),
        "p99_s": round(percentile(ours, 99), 4),
        "baseline_p50_s": round(percentile(base, 50), 4),
        "ratio": round(percentile(ours, 50) / percentile(base, 50), 2),
        "bytes": len(bundle),
    }


def bench_import(app: Any, headers: dict[str, str], errors: list[str]) -> dict[str, Any]:
    import stix2
    from stix2validator import ValidationOptions, validate_parsed_json

    n = scaled(10_000, 100)
    objects = [_indicator(i) for i in range(n)]
    bundle = {"type": "bundle", "id": "bundle--6f3c1d9e-5b7a-4c2e-9d8f-1a2b3c4d5e6f", "objects": objects}
    raw = json.dumps(bundle)

    def baseline() -> None:
        parsed = json.loads(raw)
        for obj in parsed["objects"]:
            stix2.parse(obj, allow_custom=True, version="2.1")
        validate_parsed_json(parsed, ValidationOptions(version="2.1"))

    base = _timed(baseline, 1)[0]
    client = app.test_client()
    started = time.perf_counter()
    r = client.post("/api/v1/stix/bundles", data=raw, content_type="application/stix+json", headers=headers)
    ours = time.perf_counter() - started
    if r.status_code != 200 or r.json["stored"] != n:
        errors.append(f"import answered {r.status_code}: {r.get_data(as_text=True)[:300]}")
    return {"objects": n, "seconds": round(ours, 3), "baseline_seconds": round(base, 3), "ratio": round(ours / base, 2)}


def bench_taxii_page(app: Any, headers: dict[str, str], errors: list[str]) -> dict[str, Any]:
    from app.taxii import collection_ids

    client = app.test_client()
    url = f"/taxii2/ucsc/collections/{collection_ids()['working-group']}/objects/"
    h = {**headers, "Accept": "application/taxii+json;version=2.1"}
    times: list[float] = []
    count = 0
    for _ in range(2):
        token = None
        while True:
            started = time.perf_counter()
            r = client.get(url, query_string={"limit": 1000, **({"next": token} if token else {})}, headers=h)
            times.append(time.perf_counter() - started)
            if r.status_code != 200:
                errors.append(f"TAXII page answered {r.status_code}")
                break
            body = r.get_json()
            count += len(body["objects"])
            token = body.get("next")
            if not body.get("more"):
                break
    full = sorted(times)
    return {
        "pages": len(times),
        "objects_read": count,
        "p50_ms": round(percentile(full, 50) * 1000, 1),
        "p99_ms": round(percentile(full, 99) * 1000, 1),
    }


def bench_projector(app: Any, errors: list[str]) -> dict[str, Any]:
    from app import db
    from app.api.stix import stix_settings
    from incidents.access import Actor
    from incidents.enums import Role
    from incidents.filing import FilingSettings, file_incidents
    from incidents.schemas.incidents import IncidentCreate
    from incidents.stix import projector

    n = scaled(1000, 50)
    with app.app_context():
        session = db.session()
        actor = Actor(user_id=1, username="bench", role=Role.OPERATOR, organisation_id=_org(session))
        # The export bench's incident is projected already; bring the cursor past it before timing.
        while projector.project_pending(session, stix_settings(), batch=500):
            pass
        items = [
            IncidentCreate.model_validate(
                {
                    "title": f"Bench {i}",
                    "category": "phishing",
                    "priority": "P3",
                    "detected_at": "2026-11-20T08:30:00+07:00",
                    "observables": [
                        {"type": "domain-name", "value": f"p{i}.example.net"},
                        {"type": "ipv4-addr", "value": f"172.16.{i // 256 % 256}.{i % 256}"},
                        {"type": "url", "value": f"http://p{i}.example.net/login"},
                    ],
                }
            )
            for i in range(n)
        ]
        for start in range(0, n, 500):
            file_incidents(
                session=session, items=items[start : start + 500], actor=actor, settings=FilingSettings(), bulk=True
            )
        started = time.perf_counter()
        while projector.project_pending(session, stix_settings(), batch=200):
            pass
        seconds = time.perf_counter() - started
    return {"incidents": n, "seconds": round(seconds, 3), "incidents_per_s": round(n / seconds, 1)}


def _org(session: Any) -> int:
    from sqlalchemy import select

    from incidents.models import User

    return session.scalar(select(User.organisation_id).where(User.username == "bench"))


def bench_intake_with_projector(errors: list[str]) -> dict[str, Any]:
    """Single POSTs to gunicorn from 8 threads, without and then with a worker projecting beside it."""
    from tests.live import free_port

    results: dict[str, Any] = {}
    n = scaled(1500, 150)
    for mode in ("without_worker", "with_worker"):
        tmp = Path(tempfile.mkdtemp(prefix=f"ucsc-bench-stix-{mode}-"))
        url = f"sqlite:///{tmp / 'ucsc.db'}"
        environment = _env(url)
        _flask(environment, "init-db", "--no-demo")
        token = _flask(environment, "create-token", "bench", "--role", "operator", "--organisation", "dic")
        token = token.strip().splitlines()[-1]
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker = None
        if mode == "with_worker":
            worker = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
                cwd=ROOT,
                env=environment,
                stdout=(tmp / "worker.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if requests.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            latencies: list[float] = []
            lock = threading.Lock()
            counter = iter(range(n))

            def client(
                token: str = token,
                counter: Any = counter,
                mode: str = mode,
                base: str = base,
                lock: Any = lock,
                latencies: list[float] = latencies,
            ) -> None:
                with requests.Session() as s:
                    s.headers["Authorization"] = f"Bearer {token}"
                    for i in counter:
                        body = {
                            "title": f"Bench {mode} {i}",
                            "category": "phishing",
                            "priority": "P3",
                            "detected_at": "2026-11-20T08:30:00+07:00",
                            "observables": [
                                {"type": "domain-name", "value": f"i{i}.example.net"},
                                {"type": "ipv4-addr", "value": f"172.17.{i // 256 % 256}.{i % 256}"},
                                {"type": "url", "value": f"http://i{i}.example.net/x"},
                            ],
                        }
                        started = time.perf_counter()
                        r = s.post(base + "/api/v1/incidents", json=body, timeout=30)
                        with lock:
                            latencies.append(time.perf_counter() - started)
                        if r.status_code != 201:
                            errors.append(f"intake {mode} answered {r.status_code}")

            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - started
            latencies.sort()
            figures: dict[str, Any] = {
                "incidents": n,
                "incidents_per_s": round(n / seconds, 1),
                "p50_ms": round(percentile(latencies, 50) * 1000, 1),
                "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            }
            if worker is not None:
                figures["projector_caught_up_s"] = _wait_projected(url, n)
                if figures["projector_caught_up_s"] is None:
                    errors.append("the projector did not catch up: " + (tmp / "worker.log").read_text()[-1500:])
            results[mode] = figures
        finally:
            for proc in (web, worker):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
            shutil.rmtree(tmp, ignore_errors=True)
    results["throughput_ratio"] = round(
        results["with_worker"]["incidents_per_s"] / results["without_worker"]["incidents_per_s"], 2
    )
    return results


def _wait_projected(url: str, n: int, timeout: float = 120) -> float | None:
    import sqlite3

    path = url.removeprefix("sqlite:///")
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        with sqlite3.connect(path) as conn:
            done = conn.execute(
                "SELECT count(DISTINCT incident_id) FROM stix_objects WHERE type = 'incident'"
            ).fetchone()
        if done[0] >= n:
            return round(time.perf_counter() - started, 2)
        time.sleep(0.2)
    return None


def main() -> int:
    errors: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="ucsc-bench-stix-"))
    url = f"sqlite:///{tmp / 'ucsc.db'}"
    try:
        _flask(_env(url), "init-db", "--no-demo")
        app = _app(url, scaled(10_000, 100))
        headers = _token(app)
        report: dict[str, Any] = {"scale": SCALE, "backend": "sqlite"}
        report["export"] = bench_export(app, headers, errors)
        report["import"] = bench_import(app, headers, errors)
        report["taxii_page"] = bench_taxii_page(app, headers, errors)
        report["projector"] = bench_projector(app, errors)
        report["intake_with_projector"] = bench_intake_with_projector(errors)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    targets = {
        "export_ratio": report["export"].get("ratio", float("inf")),
        "export_p99_s": report["export"].get("p99_s", float("inf")),
        "import_ratio": report["import"].get("ratio", float("inf")),
        "taxii_page_p99_ms": report["taxii_page"].get("p99_ms", float("inf")),
    }
    report["targets"] = {k: {"value": v, "target": TARGETS[k], "pass": v <= TARGETS[k]} for k, v in targets.items()}
    report["passed"] = all(t["pass"] for t in report["targets"].values()) and not errors
    report["errors"] = errors
    OUTPUT.write_text(json.dumps(report, indent=2))
    e, i, p, j, w = (report[k] for k in ("export", "import", "taxii_page", "projector", "intake_with_projector"))
    print(
        f"export: {e.get('objects')} objects, p50 {e.get('p50_s')} s p99 {e.get('p99_s')} s; "
        f"json.dumps baseline {e.get('baseline_p50_s')} s; ratio to baseline {e.get('ratio')}"
    )
    print(
        f"import: {i['objects']} objects in {i['seconds']} s; parse+validate baseline {i['baseline_seconds']} s; "
        f"ratio to baseline {i['ratio']}"
    )
    print(f"taxii page of 1000: p50 {p['p50_ms']} ms p99 {p['p99_ms']} ms over {p['pages']} pages")
    print(f"projector: {j['incidents_per_s']} incidents/s ({j['incidents']} in {j['seconds']} s)")
    print(
        f"intake without worker {w['without_worker']}; with projector {w['with_worker']}; "
        f"throughput ratio {w['throughput_ratio']}"
    )
    print(
        "targets: "
        + ", ".join(
            f"{k} {t['value']} (≤ {t['target']}: {'ok' if t['pass'] else 'MISSED'})"
            for k, t in report["targets"].items()
        )
    )
    if errors:
        print("errors:", errors[:10])
    return 0 if report["passed"] or SCALE < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
