"""The Announcer shell over a fake node: concurrency cap, rounds, removal (no sockets)."""

from __future__ import annotations

import asyncio
import os

from prism.dht.schedule import AnnounceSchedule, StoreBackOff
from prism.dht.workers import Announcer
from tests.helpers import eventually


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


class UnreachableNode:
    """A node whose stores nobody accepts; its routing table starts empty."""

    def __init__(self) -> None:
        self.table = 0
        self.tried: list[bytes] = []

    def routing_size(self) -> int:
        return self.table

    async def announce_hash(self, key: bytes) -> int:
        self.tried.append(key)
        return 0


async def test_announcer_waits_for_a_routing_table_and_backs_off_when_every_store_fails():
    loop = asyncio.get_running_loop()
    node = UnreachableNode()
    backoff = StoreBackOff(initial=60.0, maximum=600.0, threshold=3)
    announcer = Announcer(node, AnnounceSchedule(1000.0, 3600.0, loop.time()), concurrency=1, backoff=backoff)
    task = loop.create_task(announcer.run())
    keys = [os.urandom(48) for _ in range(10)]
    try:
        announcer.add(keys)
        await asyncio.sleep(0.3)
        assert node.tried == []  # no contacts: nothing is sent
        assert announcer.snapshot().backlog == 10
        node.table = 8
        await eventually(lambda: len(node.tried) >= 3, what="three announcements tried")
        await asyncio.sleep(0.3)
        assert len(node.tried) == 3  # three failures in a row: paused for a minute
        snap = announcer.snapshot()
        assert snap.failed == 3 and snap.announced == 0 and snap.hashes == 10 and snap.routing_peers == 8
        assert backoff.ready_at(loop.time()) > loop.time() + 50
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
