"""Test doubles shared across the suite: blobs, instrumented stores, a steppable sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ManualSleep:
    """Stands in for `asyncio.sleep` in a periodic loop: each call waits until the test releases it.

    `await calls.get()` tells the test the loop is waiting again (so whatever the loop does between
    two sleeps has finished); `release()` lets one sleep return.
    """

    def __init__(self) -> None:
        self.calls: asyncio.Queue[float] = asyncio.Queue()
        self._releases: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.calls.put_nowait(seconds)
        await self._releases.get()

    def release(self) -> None:
        self._releases.put_nowait(None)


async def eventually(condition: Callable[[], bool], limit: float = 5.0, what: str = "condition") -> None:
    """Wait until `condition()` holds (checked every few ms), failing after `limit` seconds.

    For state another task or process changes without an event to wait on; never a fixed sleep.
    """
    try:
        async with asyncio.timeout(limit):
            while not condition():  # noqa: ASYNC110 - no event exists for such state
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {limit} s") from None
