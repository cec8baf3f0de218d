"""The Announcer shell over a fake node: concurrency cap, rounds, removal (no sockets)."""

from __future__ import annotations

import asyncio
import os

from prism.dht.schedule import AnnounceSchedule
from prism.dht.workers import Announcer


class FakeNode:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.started: list[bytes] = []
        self.two_started = asyncio.Event()

    def routing_size(self) -> int:
        return 8

    async def announce_hash(self, key: bytes) -> int:
        self.started.append(key)
        if len(self.started) == 2:
            self.two_started.set()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return 3


async def test_announcer_runs_at_most_concurrency_at_once_and_counts_rounds():
    loop = asyncio.get_running_loop()
    node = FakeNode()
    announcer = Announcer(node, AnnounceSchedule(1000.0, 3600.0, loop.time()), concurrency=2)
    task = loop.create_task(announcer.run())
    keys = [os.urandom(48) for _ in range(5)]
    try:
        announcer.add(keys)
        async with asyncio.timeout(5):
            await node.two_started.wait()
        for _ in range(10):  # let the announcer loop go round: it must not start a third
            await asyncio.sleep(0)
        assert node.running == 2 and node.started == keys[:2]
        node.release.set()
        async with asyncio.timeout(5):
            for k in keys:
                await announcer.wait_rounds(k, 1)
        assert node.peak == 2 and node.started == keys
        assert all(announcer.stored[k] == 3 and announcer.rounds[k] == 1 for k in keys)
        announcer.remove(keys[:2])
        assert len(announcer) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
