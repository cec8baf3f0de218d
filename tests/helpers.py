"""Test doubles shared across the suite: blobs, instrumented stores, a steppable sleep."""

from __future__ import annotations

import asyncio


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
