"""The receiver over real TCP on 127.0.0.1: uploads from an lbry-sdk-style client, bad input, capabilities."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os

import pytest

from prism.reflector.receiver import ReflectorReceiver
from prism.store.base import BlobNotFound, BlobStore, WrappingStore, put_borrows_data
from prism.store.caching import CachingStore
from prism.store.db_backed import DBBackedStore
from prism.store.disk import DiskStore
from prism.store.fallback import FallbackStore
from prism.store.mem_cache import MemoryCacheStore
from prism.store.memory import MemoryStore
from prism.store.singleflight import SingleFlightStore
from tests.reflector.helpers import BLOB0, BLOB0_BYTES, SD_BYTES, SD_HASH, RawClient, sdk


async def upload_like_lbry_sdk(port: int) -> bytes:
    """Exactly lbry-sdk's client bytes (lbry-wire.md §4.2, §6.4), each request in one write."""
    c = await RawClient.connect(port)
    try:
        await c.send(b'{"version": 1}')
        await c.answer()
        await c.send(sdk({"sd_blob_hash": SD_HASH, "sd_blob_size": 536}))
        first = await c.answer()
        if first == b'{"send_sd_blob":true}':
            await c.send(SD_BYTES)
            assert await c.answer() == b'{"received_sd_blob":true}'
            await c.send(sdk({"blob_hash": BLOB0, "blob_size": 16}))
            if await c.answer() == b'{"send_blob":true}':
                await c.send(BLOB0_BYTES)
                await c.answer()
        return c.received
    finally:
        await c.close()


async def test_lbry_sdk_client_uploads_stream(memory_receiver) -> None:
    receiver, store = memory_receiver
    got = await upload_like_lbry_sdk(receiver.port)
    assert (
        got
        == b'{"version":1}{"send_sd_blob":true}{"received_sd_blob":true}{"send_blob":true}{"received_blob":true}'
    )
    assert store.blobs == {SD_HASH: SD_BYTES, BLOB0: BLOB0_BYTES}
    # A second upload of the complete stream: "already have all of it" in reflector.go's form.
    again = await upload_like_lbry_sdk(receiver.port)
    assert again == b'{"version":1}{"send_sd_blob":false}'


async def test_needed_blobs_from_stored_sd_blob(memory_receiver) -> None:
    """Without a NeededBlobChecker the receiver reads the stored sd blob and asks `has` per blob."""
    receiver, store = memory_receiver
    await store.put_sd(SD_HASH, SD_BYTES)
    c = await RawClient.connect(receiver.port)
    await c.send(b'{"version": 1}')
    await c.answer()
    await c.send(sdk({"sd_blob_hash": SD_HASH, "sd_blob_size": 536}))
    assert await c.answer() == ('{"send_sd_blob":false,"needed_blobs":["' + BLOB0 + '"]}').encode()
    await c.send(sdk({"blob_hash": BLOB0, "blob_size": 16}))
    assert await c.answer() == b'{"send_blob":true}'
    await c.send(BLOB0_BYTES)
    assert await c.answer() == b'{"received_blob":true}'
    await c.close()
    assert store.blobs[BLOB0] == BLOB0_BYTES


async def test_unreadable_stored_sd_blob_is_requested_again(memory_receiver) -> None:
    receiver, store = memory_receiver
    await store.put_sd(SD_HASH, b"not an sd blob")  # e.g. damaged
    c = await RawClient.connect(receiver.port)
    await c.send(b'{"version": 1}')
    await c.answer()
    await c.send(sdk({"sd_blob_hash": SD_HASH, "sd_blob_size": 536}))
    assert await c.answer() == b'{"send_sd_blob":true}'
    await c.close()


class CapableStore(MemoryStore):
    """A store that knows streams and blocked hashes (as the DB-backed store does)."""

    def __init__(self) -> None:
        super().__init__("capable")
        self.blocked: set[str] = set()
        self.missing: dict[str, list[str]] = {}
        self.asked: list[str] = []

    async def block(self, blob_hash: str) -> None:
        self.blocked.add(blob_hash)

    async def wants(self, blob_hash: str) -> bool:
        self.asked.append(blob_hash)
        return blob_hash not in self.blocked and blob_hash not in self.blobs

    async def missing_blobs_for_known_stream(self, sd_hash: str) -> list[str]:
        return self.missing.get(sd_hash, [])


class Wrapper(MemoryStore):
    """An outer store that only passes capabilities through `wrapped()`."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__("outer")
        self.inner = inner

    def wrapped(self) -> tuple[MemoryStore, ...]:
        return (self.inner,)

    async def has(self, blob_hash: str) -> bool:
        return await self.inner.has(blob_hash)

    async def put(self, blob_hash: str, data: bytes) -> None:
        await super().put(blob_hash, data)
        await self.inner.put(blob_hash, data)


async def test_capabilities_found_through_the_chain() -> None:
    inner = CapableStore()
    outer = Wrapper(inner)
    receiver = ReflectorReceiver(outer, host="127.0.0.1", port=0)
    await receiver.start()
    try:
        inner.blobs[SD_HASH] = SD_BYTES
        inner.missing[SD_HASH] = [BLOB0]
        blocked = hashlib.sha384(b"blocked").hexdigest()
        await inner.block(blocked)
        c = await RawClient.connect(receiver.port)
        await c.send(b'{"version":0}')
        assert await c.answer() == b'{"version":0}'
        await c.send(sdk({"sd_blob_hash": SD_HASH, "sd_blob_size": 536}))
        assert await c.answer() == ('{"send_sd_blob":false,"needed_blobs":["' + BLOB0 + '"]}').encode()
        await c.send(sdk({"blob_hash": blocked, "blob_size": 7}))
        assert await c.answer() == b'{"send_blob":false}'
        await c.send(sdk({"blob_hash": BLOB0, "blob_size": 16}))
        assert await c.answer() == b'{"send_blob":true}'
        await c.send(BLOB0_BYTES)
        assert await c.answer() == b'{"received_blob":true}'
        await c.close()
        assert outer.blobs[BLOB0] == BLOB0_BYTES  # written through the outer store
        assert SD_HASH in inner.asked and blocked in inner.asked
        assert blocked not in outer.blobs
    finally:
        await receiver.stop()


BAD_OFFERS = [
    (sdk({"blob_hash": "abc", "blob_size": 16}), "invalid blob hash"),
    (sdk({"blob_hash": "g" * 96, "blob_size": 16}), "invalid blob hash"),
    (sdk({"blob_hash": BLOB0, "blob_size": 0}), "must be positive"),
    (sdk({"blob_hash": BLOB0, "blob_size": -1}), "must be positive"),
    (sdk({"blob_hash": BLOB0, "blob_size": 3 * 1024 * 1024}), "at most 2097152"),
    (sdk({"blob_hash": BLOB0, "blob_size": 16.0}), "integer"),
    (sdk({"sd_blob_hash": SD_HASH, "sd_blob_size": 0}), "must be positive"),
    (b"garbage", "expected a JSON object"),
]


@pytest.mark.parametrize("offer, reason", BAD_OFFERS)
async def test_bad_offers_are_refused_and_server_keeps_serving(
    memory_receiver, caplog: pytest.LogCaptureFixture, offer: bytes, reason: str
) -> None:
    receiver, store = memory_receiver
    caplog.set_level(logging.WARNING, "prism.reflector")
    c = await RawClient.connect(receiver.port)
    await c.send(b'{"version": 1}')
    await c.answer()
    await c.send(offer)
    assert await c.closed()  # no JSON error message, just closed (as reflector.go)
    await c.close()
    assert store.blobs == {}
    assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert await upload_like_lbry_sdk(receiver.port)
    assert set(store.blobs) == {SD_HASH, BLOB0}


async def test_bytes_not_matching_hash(memory_receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver, store = memory_receiver
    c = await RawClient.connect(receiver.port)
    await c.send(b'{"version": 1}')
    await c.answer()
    await c.send(sdk({"blob_hash": BLOB0, "blob_size": 16}))
    assert await c.answer() == b'{"send_blob":true}'
    await c.send(b"\x00" * 16)
    assert await c.answer() == b'{"received_blob":false}'
    assert await c.closed()
    await c.close()
    assert store.blobs == {}
    assert any("does not match" in r.getMessage() for r in caplog.records)
    assert await upload_like_lbry_sdk(receiver.port)


@pytest.mark.parametrize("close_early", [False, True])
async def test_client_stalling_mid_blob(
    tmp_path, caplog: pytest.LogCaptureFixture, close_early: bool
) -> None:
    store = DiskStore(tmp_path / "blobs")
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=0.5)
    await receiver.start()
    data = os.urandom(2097152)
    blob_hash = hashlib.sha384(data).hexdigest()
    try:
        stalled = await RawClient.connect(receiver.port)
        await stalled.send(b'{"version": 1}')
        await stalled.answer()
        await stalled.send(sdk({"blob_hash": blob_hash, "blob_size": len(data)}))
        await stalled.answer()
        await stalled.send(data[:1_000_000])
        if close_early:
            stalled.writer.write_eof()
        # Another client is served while the first one stalls.
        assert await upload_like_lbry_sdk(receiver.port)
        assert await store.has(BLOB0)
        assert await stalled.answer(wait=3) == b'{"received_blob":false}'
        assert await stalled.closed()
        await stalled.close()
        assert not await store.has(blob_hash)
        assert os.listdir(store.tmp_dir) == []  # nothing partial, not even a temp file
        expected = "connection closed after 1000000 of 2097152" if close_early else "timed out after 0.5 s"
        assert any(expected in r.getMessage() for r in caplog.records)
    finally:
        await receiver.stop()


class FailingStore(MemoryStore):
    async def put(self, blob_hash: str, data: bytes) -> None:
        raise OSError("disk full")


async def test_store_failure_answers_false(caplog: pytest.LogCaptureFixture) -> None:
    receiver = ReflectorReceiver(FailingStore(), host="127.0.0.1", port=0)
    await receiver.start()
    try:
        c = await RawClient.connect(receiver.port)
        await c.send(b'{"version": 1}')
        await c.answer()
        await c.send(sdk({"blob_hash": BLOB0, "blob_size": 16}))
        await c.answer()
        await c.send(BLOB0_BYTES)
        assert await c.answer() == b'{"received_blob":false}'
        assert await c.closed()
        await c.close()
        assert any("disk full" in r.getMessage() for r in caplog.records)
    finally:
        await receiver.stop()


async def test_pipelined_client_and_split_writes(memory_receiver) -> None:
    """A client that does not wait (offer + bytes in one write) and one that writes byte by byte."""
    receiver, store = memory_receiver
    c = await RawClient.connect(receiver.port)
    await c.send(b'{"version": 1}' + sdk({"blob_hash": BLOB0, "blob_size": 16}) + BLOB0_BYTES)
    assert await c.answer() == b'{"version":1}'
    assert await c.answer() == b'{"send_blob":true}'
    assert await c.answer() == b'{"received_blob":true}'
    await c.close()
    c = await RawClient.connect(receiver.port)
    for b in b'{"version": 1}':
        await c.send(bytes([b]))
    assert await c.answer() == b'{"version":1}'
    for b in sdk({"sd_blob_hash": SD_HASH, "sd_blob_size": 536}):
        await c.send(bytes([b]))
    assert await c.answer() == b'{"send_sd_blob":true}'
    for i in range(0, 536, 100):
        await c.send(SD_BYTES[i : i + 100])
        await asyncio.sleep(0)
    assert await c.answer() == b'{"received_sd_blob":true}'
    await c.close()
    assert store.blobs[SD_HASH] == SD_BYTES


async def test_full_size_blobs_into_disk_store_concurrently(tmp_path) -> None:
    store = DiskStore(tmp_path / "blobs")
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0)
    await receiver.start()
    blobs = [os.urandom(2097152) for _ in range(3)] + [os.urandom(1)]

    async def one(data: bytes) -> bytes:
        h = hashlib.sha384(data).hexdigest()
        c = await RawClient.connect(receiver.port)
        await c.send(b'{"version": 1}')
        await c.answer()
        await c.send(sdk({"blob_hash": h, "blob_size": len(data)}))
        await c.answer()
        await c.send(data)
        out = await c.answer()
        await c.close()
        return out

    try:
        results = await asyncio.gather(*(one(b) for b in blobs))
        assert results == [b'{"received_blob":true}'] * len(blobs)
        for data in blobs:
            with await store.get(hashlib.sha384(data).hexdigest()) as ref:
                assert ref.read() == data
        assert os.listdir(store.tmp_dir) == []
        with pytest.raises(BlobNotFound):
            await store.get(BLOB0)
    finally:
        await receiver.stop()


async def test_stop_cuts_idle_connections() -> None:
    receiver = ReflectorReceiver(MemoryStore(), host="127.0.0.1", port=0)
    await receiver.start()
    c = await RawClient.connect(receiver.port)
    await c.send(b'{"version": 1}')
    await c.answer()
    await receiver.stop(grace=0.2)
    assert await c.closed()
    await c.close()


async def test_reflector_go_client_form(memory_receiver) -> None:
    """reflector.go's `send`: version 0, compact JSON, content blobs first, sd blob last."""
    receiver, store = memory_receiver
    c = await RawClient.connect(receiver.port)
    await c.send(b'{"version":0}')
    assert await c.answer() == b'{"version":0}'
    await c.send(b'{"blob_hash":"' + BLOB0.encode() + b'","blob_size":16}')
    assert await c.answer() == b'{"send_blob":true}'
    await c.send(BLOB0_BYTES)
    assert await c.answer() == b'{"received_blob":true}'
    await c.send(b'{"sd_blob_hash":"' + SD_HASH.encode() + b'","sd_blob_size":536}')
    assert await c.answer() == b'{"send_sd_blob":true}'
    await c.send(SD_BYTES)
    assert await c.answer() == b'{"received_sd_blob":true}'
    await c.close()
    assert store.blobs == {SD_HASH: SD_BYTES, BLOB0: BLOB0_BYTES}


async def test_max_connections(caplog: pytest.LogCaptureFixture) -> None:
    receiver = ReflectorReceiver(MemoryStore(), host="127.0.0.1", port=0, max_connections=1)
    await receiver.start()
    try:
        first = await RawClient.connect(receiver.port)
        await first.send(b'{"version": 1}')
        assert await first.answer() == b'{"version":1}'
        second = await RawClient.connect(receiver.port)
        assert await second.closed()
        await second.close()
        assert any("connection cap 1 reached" in r.getMessage() for r in caplog.records)
        await first.close()
        await asyncio.sleep(0.05)
        third = await RawClient.connect(receiver.port)
        await third.send(b'{"version": 1}')
        assert await third.answer() == b'{"version":1}'
        await third.close()
    finally:
        await receiver.stop()


class KeepingStore(MemoryStore):
    """A store that keeps whatever `put` is given, as is (it must never get a borrowed view)."""

    def __init__(self) -> None:
        super().__init__("keeping")
        self.kept: dict[str, object] = {}

    def borrows_put_data(self) -> bool:
        return False

    async def put(self, blob_hash: str, data: bytes) -> None:
        self.kept[blob_hash] = data
        await super().put(blob_hash, data)


class KeepingWrapper(WrappingStore):
    """Overrides `put` without answering for it: the wrapper must not pass zero-copy through."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.name = "keeping-wrapper"
        self.last: object = None

    async def put(self, blob_hash: str, data: bytes) -> None:
        self.last = data
        await self.inner.put(blob_hash, data)


def test_zero_copy_is_decided_by_the_whole_write_path(tmp_path) -> None:
    disk = DiskStore(tmp_path / "blobs")
    assert put_borrows_data(disk) and put_borrows_data(MemoryStore())
    # `prism reflector`'s chain: a cache in front of a single-flight, DB-backed origin.
    chain = CachingStore(SingleFlightStore(DBBackedStore(disk, db=None)), MemoryCacheStore(4))  # type: ignore[arg-type]
    assert put_borrows_data(chain)
    assert not put_borrows_data(CachingStore(disk, KeepingStore()))  # one keeping side is enough
    assert not put_borrows_data(KeepingWrapper(disk))  # overrides put: does not inherit the inner answer
    assert not put_borrows_data(SingleFlightStore(KeepingWrapper(disk)))
    assert not put_borrows_data(FallbackStore(disk, disk))  # read-only: never asked to borrow
    assert ReflectorReceiver(chain).zero_copy and not ReflectorReceiver(KeepingStore()).zero_copy


async def test_caching_chain_receives_zero_copy_into_origin_and_cache(tmp_path) -> None:
    origin, cache = DiskStore(tmp_path / "blobs"), MemoryCacheStore(4)
    keeping = KeepingStore()
    for store in (CachingStore(SingleFlightStore(origin), cache), keeping):
        receiver = ReflectorReceiver(store, host="127.0.0.1", port=0, timeout=5.0)
        await receiver.start()
        try:
            await upload_like_lbry_sdk(receiver.port)
        finally:
            await receiver.stop(grace=1.0)
    for h, data in ((SD_HASH, SD_BYTES), (BLOB0, BLOB0_BYTES)):
        assert (tmp_path / "blobs" / h[:2] / h).read_bytes() == data
        assert (await cache.get(h)).read() == data
        assert keeping.kept[h] == data and isinstance(keeping.kept[h], bytes)  # its own bytes, not a view


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_random_bytes_offered_as_an_sd_blob_are_refused_without_a_database(
    tmp_path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    store: BlobStore = MemoryStore() if kind == "memory" else DiskStore(tmp_path)
    junk = os.urandom(1000)
    junk_hash = hashlib.sha384(junk).hexdigest()
    receiver = ReflectorReceiver(store, host="127.0.0.1", port=0)
    await receiver.start()
    try:
        c = await RawClient.connect(receiver.port)
        await c.send(b'{"version": 1}')
        await c.answer()
        await c.send(sdk({"sd_blob_hash": junk_hash, "sd_blob_size": len(junk)}))
        assert await c.answer() == b'{"send_sd_blob":true}'
        await c.send(junk)
        assert await c.answer() == b'{"received_sd_blob":false}'
        assert await c.closed()
        await c.close()
        assert not await store.has(junk_hash)
        assert receiver.stats.sd_blobs_received == 0
        assert any("is not a valid sd blob" in r.getMessage() for r in caplog.records)
        assert await upload_like_lbry_sdk(receiver.port)  # a real sd blob still goes in
        assert await store.has(SD_HASH)
    finally:
        await receiver.stop()
