"""The receiver under cheap attacks (issue 18, items 1, 2, 9): memory, stalls, idle sockets."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

import pytest

from prism.admission import Admission
from prism.reflector.receiver import TRIM_DELAY, ReflectorReceiver
from prism.store.base import StoreUnavailable
from prism.store.disk import DiskStore
from prism.store.memory import MemoryStore
from tests.reflector.helpers import RawClient, sdk
from tests.reflector.test_receiver import upload_like_lbry_sdk


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _offer(port: int, blob_hash: str, size: int) -> RawClient:
    """Handshake and offer a blob; the client, its offer answered `send_blob: true`."""
    c = await RawClient.connect(port)
    await c.send(b'{"version": 1}')
    await c.answer()
    await c.send(sdk({"blob_hash": blob_hash, "blob_size": size}))
    assert await c.answer() == b'{"send_blob":true}'
    return c


async def _offer_and_stall(port: int) -> RawClient:
    """Offer a 2 MiB blob, send one byte of it, and keep the connection open."""
    c = await _offer(port, hashlib.sha384(os.urandom(8)).hexdigest(), 2097152)
    await c.send(b"x")
    return c


async def test_a_stalled_offer_holds_no_blob_buffer() -> None:
    """150 connections that offer 2 MiB and send one byte cost far less than 150 x 2 MiB."""
    receiver = ReflectorReceiver(MemoryStore(), host="127.0.0.1", port=0)
    await receiver.start()
    clients: list[RawClient] = []
    try:
        before = _rss()
        for _ in range(150):
            clients.append(await _offer_and_stall(receiver.port))
        await asyncio.sleep(0.2)
        assert receiver.pool.in_use == 0
        assert _rss() - before < 40 * 2**20  # taking a buffer at offer time: about 300 MiB
        assert await upload_like_lbry_sdk(receiver.port)  # and others still upload
    finally:
        for c in clients:
            await c.close()
        await receiver.stop()


async def test_a_large_upload_uses_the_pool_and_gives_the_buffer_back() -> None:
    store = MemoryStore()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0)
    await receiver.start()
    data = os.urandom(2097152)
    blob_hash = hashlib.sha384(data).hexdigest()
    try:
        c = await _offer(receiver.port, blob_hash, len(data))
        for i in range(0, len(data), 100_000):  # arrives in pieces: small buffer first, then the pool
            await c.send(data[i : i + 100_000])
        assert await c.answer() == b'{"received_blob":true}'
        assert (await store.get(blob_hash)).read() == data
        assert receiver.pool.in_use == 0 and receiver.pool.pooled == 1
        await c.close()
    finally:
        await receiver.stop()


async def test_a_read_without_progress_ends_the_upload_long_before_the_transfer_bound() -> None:
    receiver = ReflectorReceiver(MemoryStore(), host="127.0.0.1", port=0, timeout=60.0, read_timeout=0.5)
    await receiver.start()
    try:
        started = time.monotonic()
        c = await _offer_and_stall(receiver.port)
        assert await c.answer(wait=5) == b'{"received_blob":false}'
        assert await c.closed()
        assert time.monotonic() - started < 3
        await c.close()
    finally:
        await receiver.stop()


async def test_a_connection_without_a_handshake_is_closed_after_the_first_request_timeout() -> None:
    admission: Admission[object] = Admission(100, first_request_timeout=0.5)
    receiver = ReflectorReceiver(MemoryStore(), host="127.0.0.1", port=0, admission=admission)
    await receiver.start()
    try:
        started = time.monotonic()
        c = await RawClient.connect(receiver.port)
        assert await c.closed(wait=5)  # reflector.go's 180 s would apply before the handshake
        assert time.monotonic() - started < 3
        await c.close()
    finally:
        await receiver.stop()


async def test_idle_sockets_at_the_cap_make_room_for_an_upload() -> None:
    """The cap is full of sockets that never spoke: a real upload sheds the oldest, not refused."""
    admission: Admission[object] = Admission(20, min_idle=0.1)
    receiver = ReflectorReceiver(MemoryStore(), host="127.0.0.1", port=0, admission=admission)
    await receiver.start()
    idle = [await RawClient.connect(receiver.port) for _ in range(20)]
    try:
        await asyncio.sleep(0.3)
        assert await upload_like_lbry_sdk(receiver.port)
        assert await idle[0].closed()
        assert admission.shed_total >= 1
    finally:
        for c in idle:
            await c.close()
        await receiver.stop()


class _DownStore(MemoryStore):
    """Takes nothing: its database is down."""

    async def put(self, blob_hash: str, data: bytes) -> None:
        raise StoreUnavailable(f"database MySQL root@127.0.0.1:1/reflector is unreachable ({blob_hash[:8]})")


async def test_uploads_failing_alike_log_one_line_not_a_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = ReflectorReceiver(_DownStore(), host="127.0.0.1", port=0)
    await receiver.start()
    try:
        caplog.set_level(logging.INFO, logger="prism.reflector")
        for i in range(5):
            data = os.urandom(100 + i)
            c = await _offer(receiver.port, hashlib.sha384(data).hexdigest(), len(data))
            await c.send(data)
            assert await c.answer() == b'{"received_blob":false}'
            await c.close()
    finally:
        await receiver.stop()
    lines = [r for r in caplog.records if r.name == "prism.reflector" and r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)


async def test_memory_goes_back_down_after_a_burst_of_uploads(tmp_path) -> None:
    """24 concurrent 2 MiB uploads take pooled buffers; afterwards the pool shrinks and the heap is trimmed."""
    receiver = ReflectorReceiver(DiskStore(tmp_path / "blobs"), host="127.0.0.1", port=0)
    await receiver.start()
    try:
        blob = os.urandom(2097152)

        async def upload(i: int) -> None:
            data = i.to_bytes(4, "big") + blob[4:]
            c = await _offer(receiver.port, hashlib.sha384(data).hexdigest(), len(data))
            for at in range(0, len(data), 262144):
                await c.send(data[at : at + 262144])
            assert await c.answer(wait=30) == b'{"received_blob":true}'
            await c.close()

        before = _rss()
        await asyncio.gather(*(upload(i) for i in range(24)))
        peak = _rss()
        assert receiver.pool.in_use == 0 and receiver.pool.pooled == 1  # shrunk once the burst ended
        assert receiver._trim is not None  # the heap is handed back shortly
        await asyncio.sleep(TRIM_DELAY + 1.0)  # real time: malloc_trim runs on a timer of its own
        assert receiver._trim is None
        assert _rss() - before < max(16 * 2**20, (peak - before) // 2), (before, peak, _rss())
    finally:
        await receiver.stop()


class _DownDatabase(MemoryStore):
    """Cannot say whether it has a blob: its database is down."""

    async def has(self, blob_hash: str) -> bool:
        raise StoreUnavailable("database MySQL root@127.0.0.1:1/reflector is unreachable")


async def test_offers_failing_on_a_down_database_log_one_line(caplog: pytest.LogCaptureFixture) -> None:
    receiver = ReflectorReceiver(_DownDatabase(), host="127.0.0.1", port=0)
    await receiver.start()
    try:
        caplog.set_level(logging.INFO, logger="prism.reflector")
        for _ in range(5):
            c = await RawClient.connect(receiver.port)
            await c.send(b'{"version": 1}')
            await c.answer()
            await c.send(sdk({"blob_hash": "ab" * 48, "blob_size": 10}))
            assert await c.closed()
            await c.close()
    finally:
        await receiver.stop()
    lines = [r for r in caplog.records if r.name == "prism.reflector" and r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "StoreUnavailable" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.INFO)
