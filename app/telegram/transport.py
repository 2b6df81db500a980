"""Telegram's limits and the Bot's HTTP connections: a sliding-window limiter and a few small pools."""

import asyncio
from collections import deque
from typing import Any

from telegram.request import BaseRequest, HTTPXRequest

OVERALL_PER_SECOND = 30
POOLS, POOL_SIZE = 4, 16  # connections for sends, edits and answers (PooledRequest)
PRIVATE_SPACING = 1.0
GROUP_SPACING = 3.0  # 20 in any minute: one every three seconds never breaks it


class SlidingLimiter:
    """At most `rate` calls received in any `period`, in the order they asked (first come, first served).

    The receiver stamps a call somewhere between its start and its completion, so a call may start once the call
    `rate` places before it completed at least `period` ago: its receipt lay before its completion. That is the
    tightest bound known without the receiver's clock, and it costs one round trip per window, nothing more: a
    waiting call is woken by a timer at the exact moment its slot opens (or by a completion), never by polling.
    """

    def __init__(self, rate: int, period: float) -> None:
        self.rate, self.period = rate, period
        self.done: deque[float] = deque()  # completion times (loop clock) of the last `rate` calls at most
        self.inflight = 0
        self.waiters: deque[asyncio.Future] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def _take(self, now: float) -> bool:
        while self.done and self.done[0] + self.period <= now:
            self.done.popleft()
        if len(self.done) + self.inflight < self.rate:
            self.inflight += 1
            return True
        return False

    def _dispatch(self) -> None:
        """Grant the slots open now, first waiter first; arm one timer for the next slot to open."""
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiters:
            head = self.waiters[0]
            if head.done():  # its caller was cancelled while it waited
                self.waiters.popleft()
                continue
            if not self._take(loop.time()):
                break
            self.waiters.popleft()
            head.set_result(None)
        if self.waiters and self.done and len(self.done) + self.inflight >= self.rate:
            self._timer = loop.call_at(self.done[0] + self.period, self._dispatch)

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.waiters and self._take(loop.time()):
            return
        waiter = loop.create_future()
        self.waiters.append(waiter)
        self._dispatch()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, but its caller is gone: the slot goes back
                self.inflight -= 1
                self._dispatch()
            raise

    def give_back(self) -> None:
        """A slot taken but not used (no call was made): free again at once, with nothing to count."""
        self.inflight -= 1
        self._dispatch()

    async def release(self) -> None:
        """The call completed (whatever its outcome): its slot counts from now."""
        self.inflight -= 1
        self.done.append(asyncio.get_running_loop().time())
        self._dispatch()


_DEFAULT = BaseRequest.DEFAULT_NONE


class PooledRequest(BaseRequest):
    """The Bot's requests (all but getUpdates) over a few small HTTPX pools, each call on the least busy one.

    httpcore's pool spends time quadratic in its connections on every request and every response
    (`_assign_requests_to_connections`, encode/httpcore#1035), in the leader's loop: with a window of sends in
    flight, one large pool made that most of a send's CPU, and a few small ones cost less (docs/benchmarks.md).
    The loop's CPU is what a burst waits for: a slot opens a second after a completion the loop sees.
    """

    def __init__(self, pools: int, size: int) -> None:
        self.pools = [HTTPXRequest(connection_pool_size=size, pool_timeout=10, connect_timeout=5, read_timeout=10,
                                   write_timeout=10) for _ in range(pools)]  # fmt: skip
        self.busy = [0] * pools

    @property
    def read_timeout(self) -> float | None:
        return self.pools[0].read_timeout

    async def initialize(self) -> None:
        for pool in self.pools:
            await pool.initialize()

    async def shutdown(self) -> None:
        for pool in self.pools:
            await pool.shutdown()

    async def do_request(self, url: str, method: str, request_data: Any = None, read_timeout: Any = _DEFAULT,
                         write_timeout: Any = _DEFAULT, connect_timeout: Any = _DEFAULT,
                         pool_timeout: Any = _DEFAULT) -> tuple[int, bytes]:  # fmt: skip
        index = self.busy.index(min(self.busy))
        self.busy[index] += 1
        try:
            return await self.pools[index].do_request(url, method, request_data, read_timeout, write_timeout,
                                                      connect_timeout, pool_timeout)  # fmt: skip
        finally:
            self.busy[index] -= 1
