"""A bounded request queue: at most `workers` requests processed at once, at most
`max_waiting` waiting for a turn; beyond that callers are refused (HTTP 503) instead of
queueing without limit (reflector.md §9.1, with the bound made explicit)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

DEFAULT_MAX_WAITING = 20000
"""reflector.go's per-protocol channel capacity."""


class QueueFull(Exception):
    """Too many requests are already waiting."""


class RequestQueue:
    """FIFO admission with `workers` slots. Use `async with queue.slot(): ...`."""

    def __init__(self, workers: int, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        if workers < 1:
            raise ValueError("--request-queue-size must be at least 1")
        self.workers = workers
        self.max_waiting = max_waiting
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def try_acquire(self) -> bool:
        """Take a slot at once if one is free and nobody waits; False (nothing taken) otherwise."""
        if self.active < self.workers and not self._waiters:
            self.active += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_waiting:
            self.refused += 1
            raise QueueFull(f"{len(self._waiters)} requests already waiting")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # We were handed a slot just as we were cancelled: pass it on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter; `active` is unchanged
                return
        self.active -= 1
