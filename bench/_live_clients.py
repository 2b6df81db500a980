"""The live-feed benchmark's Socket.IO clients: processes of gevent websocket clients, and the parent's view of them.

bench/live.py starts `Clients`; each of its processes runs this file (`--clients SPEC`) under gevent.monkey.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "/live"


def client_process(spec: dict[str, Any]) -> None:
    """In a gevent-patched process: connect `spec['clients']` clients, report deliveries, then the arrivals.

    Each client speaks Socket.IO 5 over Engine.IO 4's websocket transport itself (CONNECT with auth, answer
    pings, read EVENT frames): python-socketio's client starts a thread per message and checks UTF-8 in pure
    Python, which for 500 clients cost more CPU than the server's own fan-out (docs/benchmarks.md).
    Protocol with the parent on stdout, one line each:
    `ready {...}` once connected, `got KEY` when every connected client of this process has KEY (a bare emit's
    `bare:SEQ` or an incident's ref), `result {...}` after "stop" (or EOF) on stdin. Arrival times are
    time.time() as each frame is read, first frame per client and key.
    """
    import gevent
    import gevent.pool
    import gevent.socket
    import websocket

    out = sys.stdout
    n = spec["clients"]
    url = spec["url"].replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
    hello = f"40{NAMESPACE}," + json.dumps({"token": spec["token"]})
    event_prefix = f"42{NAMESPACE},"
    arrivals: dict[str, list[float | None]] = {}
    counts: dict[str, int] = {}
    stats = {"duplicates": 0, "disconnects": 0, "connected": 0}
    failures: list[str] = []
    sockets: list[Any] = []

    def arrived(key: str, index: int, at: float) -> None:
        row = arrivals.setdefault(key, [None] * stats["connected"])
        if row[index] is not None:
            stats["duplicates"] += 1
            return
        row[index] = at
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == stats["connected"]:
            out.write(f"got {key}\n")
            out.flush()

    def connect(index: int) -> None:
        try:
            # websocket-client checks UTF-8 in pure Python unless told not to, which would make an incident
            # frame, many times a bare one's size, cost the clients more than the server they measure.
            ws = websocket.create_connection(url, timeout=30, origin=spec["url"], skip_utf8_validation=True)
            opened = ws.recv()  # 0{"sid": ..., "pingInterval": ...}
            ws.send(hello)
            # The server's connect handler emits `ready` (and any replay) before python-socketio sends the
            # CONNECT answer; Socket.IO clients buffer such events, and this one has no use for them.
            answer = ws.recv()
            while answer.startswith(event_prefix):
                answer = ws.recv()
        except Exception as exc:  # reported to the parent, which counts it as an error
            failures.append(f"client {index}: {type(exc).__name__}: {exc}")
            return
        if not (opened.startswith("0{") and answer.startswith(f"40{NAMESPACE},")):
            failures.append(f"client {index}: refused: {opened[:80]!r} {answer[:200]!r}")
            ws.close()
            return
        ws.settimeout(None)
        sockets.append(ws)

    def listen(index: int, ws: Any) -> None:
        while True:
            try:
                frame = ws.recv()
            except Exception:  # closed by the server or the network: counted, the frames it misses too
                stats["disconnects"] += 1
                return
            at = time.time()
            if frame == "2":  # Engine.IO ping
                ws.send("3")
            elif frame.startswith(event_prefix):
                name, data = json.loads(frame[len(event_prefix) :])[:2]
                if name == "incident.created":
                    arrived(str(data.get("ref")), index, at)
                elif name == "bench.bare":
                    arrived(f"bare:{data.get('seq')}", index, at)
            elif frame.startswith(("1", f"41{NAMESPACE}", f"44{NAMESPACE}")):  # close, disconnect, error
                stats["disconnects"] += 1
                return

    pool = gevent.pool.Pool(20)
    for i in range(n):
        pool.spawn(connect, i)
    pool.join()
    stats["connected"] = len(sockets)
    for index, ws in enumerate(sockets):
        gevent.spawn(listen, index, ws)
    out.write("ready " + json.dumps({"connected": len(sockets), "failures": failures[:5]}) + "\n")
    out.flush()
    cpu_ready = time.process_time()

    fd = sys.stdin.fileno()
    while True:
        gevent.socket.wait_read(fd)
        data = os.read(fd, 4096)
        if not data or b"stop" in data:
            break
    result = {"arrivals": arrivals, **stats, "failures": failures, "cpu": time.process_time() - cpu_ready}
    out.write("result " + json.dumps(result) + "\n")
    out.flush()
    os._exit(0)  # no close handshakes: the server sees the sockets close


class Clients:
    """The client processes: started, waited on per delivery, and asked for their arrivals at the end."""

    def __init__(self, url: str, token: str, total: int, processes: int) -> None:
        base, extra = divmod(total, processes)
        self.sizes = [base + (1 if i < extra else 0) for i in range(processes)]
        self.sizes = [s for s in self.sizes if s > 0]
        self.got: dict[str, int] = {}
        self.ready: list[dict[str, Any]] = []
        self.results: list[dict[str, Any] | None] = [None] * len(self.sizes)
        self.stderr: list[str] = [""] * len(self.sizes)
        self.eof = [False] * len(self.sizes)
        self.cond = threading.Condition()
        self.procs: list[subprocess.Popen] = []
        for i, size in enumerate(self.sizes):
            spec = json.dumps({"url": url, "token": token, "clients": size})
            proc = subprocess.Popen(
                [sys.executable, "-m", "gevent.monkey", str(Path(__file__).resolve()), "--clients", spec],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()
            threading.Thread(target=self._read_stderr, args=(i, proc), daemon=True).start()

    def _read(self, i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            with self.cond:
                if kind == "got":
                    self.got[rest] = self.got.get(rest, 0) + 1
                elif kind == "ready":
                    self.ready.append(json.loads(rest))
                elif kind == "result":
                    self.results[i] = json.loads(rest)
                self.cond.notify_all()
        with self.cond:
            self.eof[i] = True
            self.cond.notify_all()

    def _read_stderr(self, i: int, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.stderr[i] = (self.stderr[i] + line)[-4000:]

    def _dead(self) -> str | None:
        for i, proc in enumerate(self.procs):
            if self.eof[i] and self.results[i] is None:  # all its output read, and no result in it
                return f"client process {i} exited with {proc.wait()}: {self.stderr[i]}"
        return None

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.ready) < len(self.procs):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"clients did not connect within {timeout:.0f} s")
                if (dead := self._dead()) is not None:
                    raise RuntimeError(dead)
                self.cond.wait(min(left, 0.5))
            return {
                "connected": sum(r["connected"] for r in self.ready),
                "failures": [f for r in self.ready for f in r["failures"]][:5],
            }

    def wait_for(self, key: str, timeout: float) -> bool:
        """True once every process reported that all of its clients have `key`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.got.get(key, 0) < len(self.procs):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def collect(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        for proc in self.procs:
            proc.stdin.write("stop\n")
            proc.stdin.close()
        deadline = time.monotonic() + timeout
        with self.cond:
            while any(r is None for r in self.results):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("client processes did not report their arrivals")
                if (dead := self._dead()) is not None:
                    raise RuntimeError(dead)
                self.cond.wait(min(left, 0.5))
        return [r for r in self.results if r is not None]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


if __name__ == "__main__":
    client_process(json.loads(sys.argv[2]))  # argv: --clients SPEC
