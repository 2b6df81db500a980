"""A Socket.IO test client for /live: a real python-socketio client over websocket that keeps every frame."""

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import engineio
import socketio

NAMESPACE = "/live"


class _InOrderEngineIO(engineio.Client):
    """Dispatch each message in the read loop, in arrival order (the stock client starts a thread per message)."""

    def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("run_async", None)
        return super()._trigger_event(event, *args, **kwargs)


class _InOrderClient(socketio.Client):
    def _engineio_client_class(self) -> type[engineio.Client]:
        return _InOrderEngineIO


class Frame:
    """One event a client received: its name and its (single) argument."""

    def __init__(self, name: str, data: Any) -> None:
        self.name = name
        self.data = data

    def mentions(self, *needles: object) -> bool:
        """Whether the frame names any of `needles` as an `id` or anywhere in its JSON text (refs, notes)."""
        if isinstance(self.data, dict) and self.data.get("id") in needles:
            return True
        text = json.dumps(self.data, ensure_ascii=False)
        return any(isinstance(n, str) and n in text for n in needles)

    def __repr__(self) -> str:
        return f"Frame({self.name!r}, {self.data!r})"


def token_of(headers: Mapping[str, str]) -> str:
    """The bare token of `Authorization: Bearer TOKEN` headers (what `make_token` returns)."""
    return headers["Authorization"].removeprefix("Bearer ")


class LiveClient:
    """Connects to /live on a live server and records every frame received, through the `*` catch-all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[Frame] = []
        self._changed = threading.Condition()
        self.sio = _InOrderClient(reconnection=False)
        self.sio.on("*", self._record, namespace=NAMESPACE)

    def _record(self, name: str, *args: Any) -> None:
        with self._changed:
            self.frames.append(Frame(name, args[0] if len(args) == 1 else list(args)))
            self._changed.notify_all()

    def connect(
        self,
        auth: Mapping[str, str] | dict[str, Any] | None = None,
        *,
        last_event_id: int | None = None,
        origin: str | None = None,
        timeout: float = 5.0,
    ) -> "LiveClient":
        """Connect with `auth` (headers from `make_token`, or a raw auth dict); raises ConnectionError if refused."""
        payload: dict[str, Any] | None = None
        if auth is not None:
            payload = {"token": token_of(auth)} if "Authorization" in auth else dict(auth)
            if last_event_id is not None:
                payload["last_event_id"] = last_event_id
        # websocket-client sends `Origin: <the server's own origin>` by default (a second Origin header would be
        # joined to it); `origin` replaces it, and "" sends none, as a non-browser client would.
        if origin is not None:
            self.sio.eio.websocket_extra_options.update({"origin": origin} if origin else {"suppress_origin": True})
        self.sio.connect(
            self.url,
            auth=payload,
            transports=["websocket"],
            namespaces=[NAMESPACE],
            wait_timeout=timeout,
        )
        return self

    def disconnect(self) -> None:
        self.sio.disconnect()

    def named(self, name: str) -> list[Any]:
        """The data of every frame called `name`, in arrival order."""
        with self._changed:
            return [f.data for f in self.frames if f.name == name]

    def wait_for(self, match: str | Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        """The first frame (already received or arriving within `timeout`) that `match` names or accepts."""
        accept = (lambda f: f.name == match) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for frame in self.frames:
                    if accept(frame):
                        return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching frame within {timeout}s; got {self.frames}")
                self._changed.wait(left)

    def wait_count(self, name: str, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until at least `count` frames called `name` arrived; their data."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(got := [f.data for f in self.frames if f.name == name]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(got)} of {count} {name!r} frames within {timeout}s; got {self.frames}")
                self._changed.wait(left)
            return got
