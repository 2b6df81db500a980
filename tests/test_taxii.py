"""TAXII 2.1 over a real loopback socket (gunicorn), driven by clients nobody here wrote: taxii2-client and stix2."""

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import stix2
from taxii2client.v21 import Collection, Server, as_pages

from app.taxii import collection_ids
from incidents.stix.mapping import TLP_MARKING_IDS
from tests.conftest import incident_payload
from tests.live import free_port

TAXII = "application/taxii+json;version=2.1"
GREEN = TLP_MARKING_IDS["green"]
RED = TLP_MARKING_IDS["red"]


def _indicator(i: int, tag: str = "bulk") -> dict:
    """Templated JSON: volume inputs are not built object by object with stix2."""
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{i:08x}-{abs(hash(tag)) % 65536:04x}-4222-8333-444455556666",
        "created": "2026-11-01T00:00:00.000Z",
        "modified": "2026-11-01T00:00:00.000Z",
        "name": f"{tag} {i}",
        "description": f"{tag} {i}",
        "pattern": f"[ipv4-addr:value = '10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}']",
        "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00Z",
        "object_marking_refs": [GREEN],
    }


def _token(headers: dict) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _import(client, headers, objects: list[dict]) -> None:
    bundle = {"type": "bundle", "id": "bundle--6f3c1d9e-5b7a-4c2e-9d8f-1a2b3c4d5e6f", "objects": objects}
    response = client.post("/api/v1/stix/bundles", json=bundle, headers=headers)
    assert response.status_code == 200, response.json


@pytest.fixture
def live_server(app, database_url: str, tmp_path: Path):
    """conftest's gunicorn, killed at the end instead of stopped: a graceful stop waited 1.5-3.5 s for the
    clients' keep-alive connections, and nothing here needs it (each test has a database of its own)."""
    from tests.live import LiveServer

    server = LiveServer(database_url, tmp_path / "gunicorn.log").start()
    yield server
    server.kill()


@pytest.fixture
def national(live_server) -> str:
    return f"{live_server.url}/taxii2/ucsc/collections/{collection_ids()['national']}/"


def test_taxii2_client_discovers_pages_2500_objects_filters_adds_and_errors_follow_the_spec_over_gunicorn(
    live_server, client, operator, national
):
    _errors_use_the_spec_s_bodies_and_media_type(live_server, operator, national)
    # One incident with 500 observables projects to 2,500+ objects (SCO, indicator, two relationships, sighting).
    observables = [{"type": "ipv4-addr", "value": f"10.0.{i // 256}.{i % 256}"} for i in range(500)]
    filed = client.post("/api/v1/incidents", json=incident_payload(observables=observables), headers=operator).json
    bundle = client.get(f"/api/v1/incidents/{filed['id']}/stix", headers=operator).json
    expected = {o["id"] for o in bundle["objects"]} | set(TLP_MARKING_IDS.values())
    assert len(expected) >= 2500
    server = Server(f"{live_server.url}/taxii2/", user="soc", password=_token(operator))
    assert server.title == "UCSC TAXII 2.1"
    assert [r.url for r in server.api_roots] == [f"{live_server.url}/taxii2/ucsc/"]
    api = server.api_roots[0]
    assert api.versions == [TAXII]
    aliases = {c.alias: c for c in api.collections}
    assert set(aliases) == {"public", "national", "working-group"}
    col = aliases["national"]
    assert col.can_read and col.can_write and col.url == national

    seen: list[str] = []
    pages = 0
    for page in as_pages(col.get_objects, per_request=1000):
        pages += 1
        seen += [o["id"] for o in page.get("objects", [])]
    assert pages == 3
    assert len(seen) == len(set(seen)), "duplicated objects while paging"
    assert set(seen) == expected, "lost objects while paging"
    indicators = [
        o["id"]
        for page in as_pages(col.get_objects, per_request=1000, type="indicator")
        for o in page.get("objects", [])
    ]
    assert len(indicators) == 500 and all(i.startswith("indicator--") for i in indicators)

    first = requests.get(
        national + "objects/",
        params={"limit": 200, "match[type]": "indicator"},
        headers={"Accept": TAXII},
        auth=("soc", _token(operator)),
        timeout=10,
    )
    assert first.headers["Content-Type"] == TAXII
    last_added = first.headers["X-TAXII-Date-Added-Last"]
    after = col.get_objects(added_after=last_added, type="indicator", limit=1000)
    assert len(after["objects"]) == 300 and {o["id"] for o in after["objects"]}.isdisjoint(
        o["id"] for o in first.json()["objects"]
    )
    assert col.get_objects(type="marking-definition")["objects"][0]["type"] == "marking-definition"

    mal = stix2.Malware(name="Taxii-added", is_family=True, object_marking_refs=[GREEN])
    status = col.add_objects(json.dumps({"objects": [json.loads(mal.serialize())]}))
    assert status.status == "complete" and status.success_count == 1 and status.failure_count == 0
    assert api.get_status(status.id).status == "complete"
    assert col.get_object(mal.id)["objects"][0]["name"] == "Taxii-added"
    assert col.object_versions(mal.id)["versions"] == [mal.modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    assert col.get_object(mal.id, version="all")["objects"][0]["id"] == mal.id
    newer = mal.new_version(name="Taxii-added v2")
    col.add_objects(json.dumps({"objects": [json.loads(newer.serialize())]}))
    assert col.get_object(mal.id)["objects"][0]["name"] == "Taxii-added v2"
    assert col.get_object(mal.id, version="first")["objects"][0]["name"] == "Taxii-added"
    assert len(col.get_object(mal.id, version="all")["objects"]) == 2
    stamp = mal.modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert [o["name"] for o in col.get_object(mal.id, version=stamp)["objects"]] == ["Taxii-added"]
    assert len(col.object_versions(mal.id)["versions"]) == 2
    manifest = col.get_manifest(type="malware")
    assert [m["id"] for m in manifest["objects"]] == [mal.id]
    # Re-adding the same version is an idempotent success, friendlier to clients that retry.
    again = col.add_objects(json.dumps({"objects": [json.loads(newer.serialize())]}))
    assert again.success_count == 1 and again.failure_count == 0

    # stix2's own TAXII data source and sink, over the same socket.
    source_col = Collection(national, user="soc", password=_token(operator))
    source = stix2.TAXIICollectionSource(source_col)
    assert source.get(mal.id).name == "Taxii-added v2"
    assert len(source.query([stix2.Filter("type", "=", "malware")])) == 1
    sink = stix2.TAXIICollectionSink(source_col)
    tool = stix2.Tool(name="sink-added", object_marking_refs=[GREEN])
    sink.add(tool)
    assert source.get(tool.id).name == "sink-added"


def test_a_reader_without_the_right_never_sees_a_red_object_in_any_collection(
    live_server, client, operator, make_token
):
    red = client.post(
        "/api/v1/incidents",
        json=incident_payload(tlp="red", title="đỏ", observables=[{"type": "domain-name", "value": "red.example.org"}]),
        headers=operator,
    ).json
    amber = client.post("/api/v1/incidents", json=incident_payload(title="vàng"), headers=operator).json
    for incident in (red, amber):
        assert client.get(f"/api/v1/incidents/{incident['id']}/stix", headers=operator).status_code == 200
    named = Server(f"{live_server.url}/taxii2/", user="op1", password=_token(operator)).api_roots[0]
    wg = next(c for c in named.collections if c.alias == "working-group")
    named_red = [o for o in wg.get_objects(limit=1000)["objects"] if RED in o.get("object_marking_refs", [])]
    assert {o["type"] for o in named_red} >= {"incident", "domain-name", "indicator"}, "the named user sees red"

    for role in ("committee", "responder", "operator"):
        reader = make_token(role)
        api = Server(f"{live_server.url}/taxii2/", user=role, password=_token(reader)).api_roots[0]
        for col in api.collections:
            if not col.can_read:
                continue
            got = [o for page in as_pages(col.get_objects, per_request=1000) for o in page.get("objects", [])]
            assert all(RED not in o.get("object_marking_refs", []) for o in got), (role, col.alias)
            assert not {o["id"] for o in named_red} & {o["id"] for o in got}, (role, col.alias)


def test_a_replay_of_opencti_s_polling_loop_misses_nothing_while_objects_are_added(
    live_server, client, operator, national
):
    auth = ("soc", _token(operator))
    headers = {"Accept": TAXII, "Content-Type": TAXII}
    _import(client, operator, [_indicator(i, "seed") for i in range(60)])
    added: list[str] = []
    done = threading.Event()

    def add() -> None:
        for batch in range(8):
            objs = [_indicator(batch * 20 + i, "live") for i in range(20)]
            r = requests.post(
                national + "objects/", data=json.dumps({"objects": objs}), headers=headers, auth=auth, timeout=30
            )
            assert r.status_code == 202, r.text
            added.extend(o["id"] for o in objs)
            time.sleep(0.05)
        done.set()

    adder = threading.Thread(target=add)
    adder.start()
    # OpenCTI's ingestionManager: keep `next` while more && next, else resume from X-TAXII-Date-Added-Last
    # (falling back to now() when the header is missing, which is exactly what would lose data).
    seen: list[str] = []
    added_after: str | None = None
    cursor: str | None = None
    quiet_after_done = 0
    deadline = time.monotonic() + 90
    while quiet_after_done < 2 and time.monotonic() < deadline:
        params = {"limit": 25, "match[type]": "indicator"}
        if added_after:
            params["added_after"] = added_after
        if cursor:
            params["next"] = cursor
        r = requests.get(national + "objects/", params=params, headers={"Accept": TAXII}, auth=auth, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [o["id"] for o in body.get("objects", [])]
        if body.get("more") and body.get("next"):
            cursor = body["next"]
        else:
            cursor = None
            added_after = r.headers.get("X-TAXII-Date-Added-Last") or added_after or datetime.now(UTC).isoformat()
            if done.is_set() and not body.get("objects"):
                quiet_after_done += 1
        time.sleep(0.02)
    adder.join()
    expected = {_indicator(i, "seed")["id"] for i in range(60)} | set(added)
    assert len(seen) == len(set(seen)), "an object came twice"
    assert set(seen) == expected, f"missed {len(expected - set(seen))}"


def _errors_use_the_spec_s_bodies_and_media_type(live_server, operator, national) -> None:
    auth = ("soc", _token(operator))
    cases = [
        (requests.get(national + "objects/", headers={"Accept": TAXII}, timeout=10), 401),
        (requests.get(national + "objects/", headers={"Accept": "text/html"}, auth=auth, timeout=10), 406),
        (
            requests.post(
                national + "objects/",
                data="{}",
                headers={"Accept": TAXII, "Content-Type": "application/json"},
                auth=auth,
                timeout=10,
            ),
            415,
        ),
        (
            requests.get(
                national.replace("collections/", "collections/nope-") + "objects/",
                headers={"Accept": TAXII},
                auth=auth,
                timeout=10,
            ),
            404,
        ),
        (
            requests.get(
                national + "objects/", params={"next": "forged"}, headers={"Accept": TAXII}, auth=auth, timeout=10
            ),
            400,
        ),
        (
            requests.post(
                national + "objects/",
                data=json.dumps({"objects": [_indicator(1, "x") | {"pattern": "[bad"}]}),
                headers={"Accept": TAXII, "Content-Type": TAXII},
                auth=auth,
                timeout=10,
            ),
            422,
        ),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        assert response.headers["Content-Type"] == TAXII
        body = response.json()
        assert body["http_status"] == str(status) and body["title"]
    plain = requests.get(
        f"{live_server.url}/taxii2/", headers={"Accept": "application/taxii+json"}, auth=auth, timeout=10
    )
    assert plain.status_code == 200 and plain.json()["api_roots"] == [f"{live_server.url}/taxii2/ucsc/"]
    bearer = requests.get(
        f"{live_server.url}/taxii2/ucsc/collections/", timeout=10, headers={"Accept": TAXII, **operator}
    )
    assert bearer.status_code == 200 and len(bearer.json()["collections"]) == 3


MEDALLION_COLLECTION = "0b0d3f4e-2b4c-4c1a-9a77-2a1f6a0e6c11"


@pytest.fixture
def medallion(tmp_path: Path):
    """medallion 3.0.0, the OASIS reference TAXII server, on loopback: the national coordinator's stand-in."""
    port = free_port()
    data = {
        "/discovery": {
            "title": "national (medallion)",
            "api_roots": [f"http://127.0.0.1:{port}/national/"],
            "default": f"http://127.0.0.1:{port}/national/",
        },
        "national": {
            "information": {"title": "national", "versions": [TAXII], "max_content_length": 10485760},
            "status": [],
            "collections": [
                {
                    "id": MEDALLION_COLLECTION,
                    "title": "province feeds",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
            ],
        },
    }
    (tmp_path / "data.json").write_text(json.dumps(data))
    config = {
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(tmp_path / "data.json"),
        },
        "users": {"ucsc": "push-pass"},
        "taxii": {"max_page_size": 1000},
    }
    (tmp_path / "medallion.json").write_text(json.dumps(config))
    log = (tmp_path / "medallion.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medallion.scripts.run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            str(tmp_path / "medallion.json"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "medallion.log").read_text()
        try:
            requests.get(url + "/taxii2/", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def test_medallion_receives_the_pushed_feed_and_never_a_red_object(client, operator, start_worker, medallion):
    amber = client.post("/api/v1/incidents", json=incident_payload(title="đẩy lên"), headers=operator).json
    red = client.post("/api/v1/incidents", json=incident_payload(tlp="red", title="giữ lại"), headers=operator).json
    collection_url = f"{medallion}/national/collections/{MEDALLION_COLLECTION}/"
    start_worker(
        env={
            "UCSC_STIX_PUSH_URL": collection_url,
            "UCSC_STIX_PUSH_USER": "ucsc",
            "UCSC_STIX_PUSH_PASSWORD": "push-pass",
        }
    )
    remote = Collection(collection_url, user="ucsc", password="push-pass")
    names: set[str] = set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        objects = remote.get_objects(type="incident").get("objects", [])
        names = {o["name"] for o in objects}
        if any(amber["ref"] in n for n in names):
            break
        time.sleep(0.3)
    assert any(amber["ref"] in n for n in names), names
    everything = [o for page in as_pages(remote.get_objects, per_request=1000) for o in page.get("objects", [])]
    assert all(RED not in o.get("object_marking_refs", []) for o in everything)
    assert not any(red["ref"] in o.get("name", "") for o in everything)
    assert {"indicator", "relationship", "report", "ipv4-addr"} <= {o["type"] for o in everything}
