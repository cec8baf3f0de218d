"""The request queue: FIFO slots, bounded waiting, no slot leaked by cancellation."""

from __future__ import annotations

import asyncio

import pytest

from prism.http.queue import QueueFull, RequestQueue


async def test_fifo_and_bounds():
    q = RequestQueue(workers=2, max_waiting=2)
    order: list[int] = []
    gate = asyncio.Event()

    async def job(i: int) -> None:
        async with q.slot():
            order.append(i)
            await gate.wait()

    tasks = [asyncio.create_task(job(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert (q.active, q.waiting) == (2, 2)
    with pytest.raises(QueueFull):
        await q.acquire()
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert (q.active, q.waiting) == (0, 0)


async def test_cancelled_waiters_do_not_leak_slots():
    q = RequestQueue(workers=1, max_waiting=10)
    await q.acquire()
    waiters = [asyncio.create_task(q.acquire()) for _ in range(5)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    waiters[2].cancel()
    q.release()  # hands the slot to waiter 1
    await asyncio.sleep(0)
    for w in waiters[3:]:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert q.active == 1 and q.waiting == 0
    q.release()
    assert q.active == 0
    await q.acquire()
    assert q.active == 1


def test_size_must_be_positive():
    with pytest.raises(ValueError, match="--request-queue-size"):
        RequestQueue(0)
