"""SIGKILL of gunicorn while several clients file incidents loses nothing that was answered 201."""

# Why it holds. A 201 is written only after the filing transaction's COMMIT has returned (the service's
# `in_transaction` leaves `session.begin()` before the route serialises its answer), and the incident, its
# observables, participants, occurrence, event and idempotency row are one transaction.
# - SQLite (the embedded default; app/db.py, app/config.py): WAL mode, so a commit appends the
#   transaction's pages to `ucsc.db-wal` and COMMIT returns once they are written; `synchronous=FULL`
#   also fsyncs the WAL at every commit. A killed process loses nothing the kernel already holds: the next
#   connection rebuilds the WAL index from `ucsc.db-wal` and sees every committed transaction, while frames
#   of a transaction cut off before its commit frame are ignored. FULL is what keeps the same promise
#   across a power cut, which a test cannot cause.
# - PostgreSQL: COMMIT returns after the server flushed its WAL (synchronous_commit=on); killing the app
#   only drops its connections, whose open transactions the server rolls back whole.
# So after each restart every acknowledged incident must be there, field for field, and every incident
# that is there (acknowledged or cut off mid-answer) must be complete.

import hashlib
import random
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import text

from app import db
from tests.conftest import incident_payload

THREADS = 6
ROUNDS = 3
KILL_RANGE = (100, 400)
CATEGORIES = ["dos", "phishing", "malware", "unauthorized_access", "defacement", "ransomware", "data_theft", "other"]
TLPS = ["clear", "green", "amber", "amber+strict", "red"]
ICT = timezone(timedelta(hours=7))


def _payload(n: int, rng: random.Random) -> dict:
    """A filing unique by title and observables; every third names a registry system."""
    detected = datetime.now(UTC) - timedelta(minutes=rng.randint(1, 10_000), microseconds=rng.randint(0, 999_999))
    body = incident_payload(
        title=f"crash-{n} Tấn công thử nghiệm số {n}",
        description=f"Đà Nẵng — mô tả {n}" + "." * rng.randint(0, 500),
        category=rng.choice(CATEGORIES),
        priority=rng.choice(["P1", "P2", "P3", "P4"]),
        tlp=rng.choice(TLPS),
        exercise=rng.random() < 0.5,
        detected_at=detected.astimezone(ICT).isoformat(),
        detection_method=rng.choice(["ids", "log_review", "notified", "other"]),
        notified_parties=rng.sample(["network_member", "isp", "national_coordinator"], rng.randint(0, 3)),
        reporter={"name": f"Người báo {n}", "organisation": "Sở Y tế", "phone": f"0237{n:06d}"},
        observables=[
            {"type": "ipv4-addr", "value": f"192.0.2.{n % 254 + 1}"},
            {"type": "domain-name", "value": f"h{n}.crash.example.org"},
            {"type": "url", "value": f"https://h{n}.crash.example.org/p?q={n}"},
            {
                "type": "file",
                "value": f"mal{n}.exe",
                "hashes": {"SHA-256": hashlib.sha256(str(n).encode()).hexdigest()},
            },
        ][: rng.randint(1, 4)],
    )
    if n % 3 == 0:
        body["affected_system"] = "qlvb"
    return body


def _assert_matches(got: dict, sent: dict) -> None:
    """The incident as read back is the filing as sent (in the API's canonical form)."""
    expected = {
        "title": sent["title"],
        "description": sent["description"],
        "category": sent["category"],
        "priority": sent["priority"],
        "tlp": sent["tlp"],
        "exercise": sent["exercise"],
        "status": "new",
        "class": "ordinary",
        "detection_method": sent["detection_method"],
        "notified_parties": sent["notified_parties"],
        "reporter": {"address": None, "email": None, **sent["reporter"]},
        "observables": [{"hashes": None, **o} for o in sent["observables"]],
        "affected_system": sent.get("affected_system"),
        "dedup_key": None,
        "occurrence_count": 1,
    }
    actual = {key: got[key] for key in expected}
    actual["observables"] = [{k: v for k, v in o.items() if k != "id"} for o in got["observables"]]
    actual["affected_system"] = got["affected_system"] and got["affected_system"]["code"]
    assert actual == expected
    assert datetime.fromisoformat(got["detected_at"]) == datetime.fromisoformat(sent["detected_at"])


class Filer:
    """Threads that file incidents until told to stop, remembering every 201 and everything attempted."""

    def __init__(self, url: str, headers: dict[str, str], seed: int) -> None:
        self.url, self.headers, self.seed = url, headers, seed
        self.lock = threading.Lock()
        self.next_n = 0
        self.attempted: dict[str, dict] = {}  # title -> payload, answered or not
        self.acknowledged: dict[int, tuple[dict, dict, str | None]] = {}  # id -> (payload, 201 body, key)
        self.round_acks = 0
        self.cut_off = 0
        self.errors: list[str] = []
        self.target = 0
        self.stop = threading.Event()
        self.reached = threading.Event()

    def run_round(self, round_no: int, target: int) -> list[threading.Thread]:
        self.round_acks, self.cut_off, self.target = 0, 0, target
        self.stop.clear()
        self.reached.clear()
        threads = [threading.Thread(target=self._file, args=(round_no, i), daemon=True) for i in range(THREADS)]
        for t in threads:
            t.start()
        return threads

    def _file(self, round_no: int, index: int) -> None:
        rng = random.Random(f"{self.seed}-{round_no}-{index}")
        http = requests.Session()
        while not self.stop.is_set():
            with self.lock:
                n = self.next_n
                self.next_n += 1
            body = _payload(n, rng)
            key = f"crash-key-{n}" if n % 4 == 0 else None
            with self.lock:
                self.attempted[body["title"]] = body
            try:
                r = http.post(f"{self.url}/api/v1/incidents", json=body, timeout=10,
                              headers={**self.headers, **({"Idempotency-Key": key} if key else {})})  # fmt: skip
            except requests.RequestException:
                with self.lock:
                    self.cut_off += 1
                return  # the server died under this request: its outcome is unknown, not acknowledged
            with self.lock:
                if r.status_code != 201:
                    self.errors.append(f"{r.status_code} {r.text[:300]}")
                    self.stop.set()
                    self.reached.set()
                    return
                self.acknowledged[r.json()["id"]] = (body, r.json(), key)
                self.round_acks += 1
                if self.round_acks >= self.target:
                    self.stop.set()
                    self.reached.set()


def _read_all(url: str, headers: dict[str, str]) -> dict[int, dict]:
    items: dict[int, dict] = {}
    cursor = None
    while True:
        params = {"limit": 500, "sort": "created", **({"cursor": cursor} if cursor else {})}
        r = requests.get(f"{url}/api/v1/incidents", params=params, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        items.update({item["id"]: item for item in r.json()["items"]})
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.slow
def test_sigkill_during_intake_loses_no_acknowledged_incident(app, database_url, live_server, make_token):
    seed = random.randrange(1 << 30)
    print(f"\ncrash test seed {seed}")
    rng = random.Random(seed)
    headers = make_token("intake", username="siem")
    if database_url.startswith("sqlite"):
        with app.app_context(), db.engine().connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL, as the server runs it
    filer = Filer(live_server.url, headers, seed)
    snapshots: dict[int, dict] = {}
    http = requests.Session()
    started = time.perf_counter()

    for round_no in range(ROUNDS):
        target = rng.randint(KILL_RANGE[0], KILL_RANGE[1] - THREADS)
        threads = filer.run_round(round_no, target)
        assert filer.reached.wait(60), f"only {filer.round_acks} 201s before the deadline"
        live_server.kill(signal.SIGKILL)
        for t in threads:
            t.join(15)
        assert not filer.errors, filer.errors
        print(f"round {round_no + 1}: killed after {filer.round_acks} 201s (target {target}), "
              f"{filer.cut_off} requests cut off")  # fmt: skip
        assert KILL_RANGE[0] <= filer.round_acks <= KILL_RANGE[1]

        live_server.start()
        if database_url.startswith("sqlite"):
            path = database_url.removeprefix("sqlite:///")
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        stored = _read_all(live_server.url, headers)
        # Every acknowledged incident is there, with the reference it was given and the fields as sent.
        missing = set(filer.acknowledged) - set(stored)
        assert not missing, f"{len(missing)} acknowledged incidents lost: {sorted(missing)[:10]}"
        for incident_id, (_, answer, _) in filer.acknowledged.items():
            assert stored[incident_id]["ref"] == answer["ref"]
        # Every incident there, acknowledged or cut off before its answer, is one filing, whole.
        for item in stored.values():
            assert item["title"] in filer.attempted, item["title"]
            _assert_matches(item, filer.attempted[item["title"]])
        # The full GET body of each new acknowledged incident equals its list entry; older ones are unchanged.
        new = [i for i in filer.acknowledged if i not in snapshots]
        with ThreadPoolExecutor(THREADS) as pool:
            bodies = pool.map(lambda i: requests.get(f"{live_server.url}/api/v1/incidents/{i}", headers=headers,
                                                     timeout=10), new)  # fmt: skip
            for incident_id, r in zip(new, bodies, strict=True):
                assert r.status_code == 200, r.text
                assert r.json() == stored[incident_id]
                snapshots[incident_id] = r.json()
        for incident_id, snapshot in snapshots.items():
            assert stored[incident_id] == snapshot

    # Idempotency rows committed with their incidents: a retry after the crashes replays the first answer.
    keyed = [(body, answer, key) for body, answer, key in filer.acknowledged.values() if key][:25]
    assert keyed
    for body, answer, key in keyed:
        r = http.post(f"{live_server.url}/api/v1/incidents", json=body, headers={**headers, "Idempotency-Key": key},
                      timeout=10)  # fmt: skip
        assert (r.status_code, r.json(), r.headers.get("Idempotent-Replayed")) == (201, answer, "true")
    with app.app_context():
        count = db.session().execute(text("SELECT count(*) FROM incidents")).scalar()
    assert count == len(_read_all(live_server.url, headers)) >= len(filer.acknowledged)
    print(f"{len(filer.acknowledged)} acknowledged, {count} stored, in {time.perf_counter() - started:.1f}s")
    assert "Traceback" not in live_server.log()
