"""`BlobArrival` (sans-IO) and the waits over it."""

from __future__ import annotations

import asyncio

import pytest

from prism.store.arrival import BlobArrival, sendable_pieces, until_changed, until_verified
from prism.store.base import BlobRef, StoreError, arrived


def test_the_last_byte_is_held_back_until_the_blob_is_verified() -> None:
    arrival = BlobArrival(bytearray(10))
    assert arrival.sendable == 0 and not arrival.done
    arrival.arrived(4)
    assert arrival.sendable == 4
    arrival.arrived(10)
    assert arrival.sendable == 9  # all in, not verified: one byte short
    arrival.verified()
    assert arrival.sendable == 10 and arrival.done


def test_progress_never_goes_back_and_never_past_the_buffer() -> None:
    arrival = BlobArrival(bytearray(10))
    arrival.arrived(6)
    arrival.arrived(3)
    assert arrival.received == 6
    with pytest.raises(ValueError):
        arrival.arrived(11)
    with pytest.raises(ValueError):
        arrival.verified()  # not all in


def test_a_failure_is_final_and_listeners_hear_every_change_then_are_dropped() -> None:
    arrival = BlobArrival(bytearray(10))
    heard: list[int] = []
    arrival.listen(lambda: heard.append(arrival.received))
    arrival.arrived(5)
    arrival.failed(StoreError("upstream went away"))
    arrival.arrived(10)  # too late: nothing changes
    arrival.verified()
    assert heard == [5, 5] and arrival.received == 5 and not arrival.is_verified
    assert arrival.sendable == 5 and isinstance(arrival.error, StoreError)
    assert arrival._listeners == []  # a done arrival holds nothing (no cycle keeps its buffer)


async def test_waits_wake_on_change_and_raise_the_failure() -> None:
    arrival = BlobArrival(bytearray(4))
    waiter = asyncio.create_task(until_changed(arrival))
    await asyncio.sleep(0)
    assert not waiter.done()
    arrival.arrived(2)
    await asyncio.wait_for(waiter, 1)
    verified = asyncio.create_task(until_verified(arrival))
    arrival.arrived(4)
    await asyncio.sleep(0)
    assert not verified.done()
    arrival.verified()
    await asyncio.wait_for(verified, 1)
    failing = BlobArrival(bytearray(4))
    waiter = asyncio.create_task(until_verified(failing))
    await asyncio.sleep(0)
    failing.failed(StoreError("bad bytes"))
    with pytest.raises(StoreError, match="bad bytes"):
        await asyncio.wait_for(waiter, 1)


async def test_arrived_hands_over_a_whole_ref_and_reading_early_is_refused() -> None:
    arrival = BlobArrival(bytearray(b"abcd"))
    ref = BlobRef("h", 4, data=bytes(arrival.buffer), arrival=arrival)
    with pytest.raises(StoreError, match="still arriving"):
        ref.read()
    arrival.arrived(4)
    arrival.verified()
    whole = await arrived(ref)
    assert whole is ref and ref.arrival is None and ref.read() == b"abcd"


async def test_sendable_pieces_follow_the_arrival_and_end_with_the_verdict() -> None:
    arrival = BlobArrival(bytearray(10))
    pieces: list[tuple[int, int]] = []

    async def walk() -> None:
        async for piece in sendable_pieces(arrival):
            pieces.append(piece)

    walker = asyncio.create_task(walk())
    for received in (3, 7, 10):
        arrival.arrived(received)
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert pieces == [(0, 3), (3, 7), (7, 9)] and not walker.done()  # the last byte waits
    arrival.verified()
    await asyncio.wait_for(walker, 1)
    assert pieces[-1] == (9, 10)
    failing = BlobArrival(bytearray(10))
    failing.arrived(10)
    failing.failed(StoreError("bad bytes"))
    with pytest.raises(StoreError, match="bad bytes"):
        async for piece in sendable_pieces(failing):
            assert piece == (0, 9)
