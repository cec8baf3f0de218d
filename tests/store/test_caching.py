"""CachingStore, SingleFlightStore, FallbackStore and the memory cache (reflector.md §3.3)."""

from __future__ import annotations

import asyncio

import pytest

from prism.store import (
    BlobNotFound,
    DiskStore,
    Lister,
    MemoryStore,
    ReadOnlyStoreError,
    StoreError,
    find_capability,
)
from prism.store.caching import CachingStore, CorruptBlobError
from prism.store.disk import scan_blobs
from prism.store.disk_cache import DiskCacheStore
from prism.store.eviction import LRUPolicy
from prism.store.fallback import FallbackStore
from prism.store.mem_cache import MemoryCacheStore
from prism.store.singleflight import SingleFlightStore
from tests.helpers import BrokenStore, CountingStore, make_blob, until

# -- CachingStore ---------------------------------------------------------------------------


async def test_caching_miss_fills_cache_then_hits() -> None:
    origin, cache = CountingStore("origin"), CountingStore("cache")
    h, data = make_blob(1)
    await origin.put(h, data)
    store = CachingStore(origin, cache)
    with await store.get(h) as ref:
        assert ref.read() == data
        assert [s.origin_name for s in ref.trace.stacks] == ["origin", "caching"]
    await store.drain()  # written behind the answer
    assert h in cache.blobs and origin.gets == 1 and store.misses == 1
    with await store.get(h) as ref:
        assert ref.read() == data
        assert [s.origin_name for s in ref.trace.stacks] == ["cache", "caching"]
    assert origin.gets == 1 and store.hits == 1


async def test_caching_missing_everywhere_is_not_found() -> None:
    store = CachingStore(CountingStore("origin"), CountingStore("origin"))
    h, _ = make_blob(2)
    with pytest.raises(BlobNotFound) as exc:
        await store.get(h)
    assert str(exc.value) == "blob not found"
    assert not await store.has(h)


async def test_caching_cache_error_is_returned_not_masked() -> None:
    origin = CountingStore("origin")
    h, data = make_blob(3)
    await origin.put(h, data)
    store = CachingStore(origin, BrokenStore("cache", fail=("get", "has")))
    with pytest.raises(StoreError, match="cache: get failed"):
        await store.get(h)
    assert origin.gets == 0  # the origin is not asked when the cache fails
    with pytest.raises(StoreError, match="cache: has failed"):
        await store.has(h)
    assert origin.hass == 0


async def test_caching_fill_error_only_logged() -> None:
    origin = CountingStore("origin")
    h, data = make_blob(4)
    await origin.put(h, data)
    store = CachingStore(origin, BrokenStore("cache", fail=("put",)))
    with await store.get(h) as ref:
        assert ref.read() == data
    await store.drain()
    assert store.fill_errors == 1


async def test_caching_origin_error_propagates() -> None:
    store = CachingStore(BrokenStore("origin", fail=("get",)), CountingStore("cache"))
    h, _ = make_blob(5)
    with pytest.raises(StoreError, match="origin: get failed"):
        await store.get(h)


async def test_caching_rejects_corrupt_origin_blob() -> None:
    origin, cache = CountingStore("origin"), CountingStore("cache")
    h, _ = make_blob(6)
    origin.blobs[h] = b"not the bytes of this hash"
    store = CachingStore(origin, cache)
    with pytest.raises(CorruptBlobError, match="corrupt"):
        await store.get(h)
    assert h not in cache.blobs
    # verify=False (a layer whose origin is a verified cache) passes it through.
    assert (await CachingStore(origin, cache, verify=False).get(h)).read() == origin.blobs[h]


async def test_caching_writes_origin_then_cache() -> None:
    origin, cache = CountingStore("origin"), CountingStore("cache")
    store = CachingStore(origin, cache)
    h, data = make_blob(7)
    await store.put(h, data)
    assert h in origin.blobs and h in cache.blobs
    h2, data2 = make_blob(8)
    await store.put_sd(h2, data2)
    assert h2 in origin.blobs and h2 in cache.blobs
    assert await store.has(h)
    await store.delete(h)
    assert h not in origin.blobs and h not in cache.blobs


async def test_caching_origin_write_error_aborts_before_cache() -> None:
    cache = CountingStore("cache")
    store = CachingStore(BrokenStore("origin", fail=("put", "delete")), cache)
    h, data = make_blob(9)
    with pytest.raises(StoreError):
        await store.put(h, data)
    with pytest.raises(StoreError):
        await store.put_sd(h, data)
    assert cache.puts == 0
    await cache.put(h, data)
    with pytest.raises(StoreError):
        await store.delete(h)
    assert h in cache.blobs


async def test_caching_read_only_origin_put_fails() -> None:
    # An upstream origin refuses writes (reflector.go's ErrNotImplemented): the put fails.
    ro = FallbackStore(MemoryStore("a"), MemoryStore("b"))
    cache = CountingStore("cache")
    with pytest.raises(ReadOnlyStoreError):
        await CachingStore(ro, cache).put(*make_blob(10))
    assert cache.puts == 0


async def test_caching_has_asks_origin_only_on_cache_miss() -> None:
    origin, cache = CountingStore("origin"), CountingStore("cache")
    h, data = make_blob(11)
    await cache.put(h, data)
    store = CachingStore(origin, cache)
    assert await store.has(h) and origin.hass == 0
    h2, data2 = make_blob(12)
    await origin.put(h2, data2)
    assert await store.has(h2) and origin.hass == 1


async def test_capabilities_are_found_through_wrappers(tmp_path) -> None:
    disk_cache = DiskCacheStore(DiskStore(tmp_path), 10_000, LRUPolicy())
    chain = SingleFlightStore(CachingStore(CountingStore("origin"), disk_cache))
    # CountingStore (a MemoryStore) is a Lister on the origin side.
    assert find_capability(chain, Lister) is chain.inner.origin
    assert chain.inner.cache is disk_cache and disk_cache.inner.root == str(tmp_path)


# -- SingleFlightStore ----------------------------------------------------------------------


async def test_hundred_concurrent_gets_reach_origin_once(tmp_path) -> None:
    origin = CountingStore("origin", held=True)
    h, data = make_blob(20, 100_000)
    await origin.put(h, data)
    disk_cache = DiskCacheStore(DiskStore(tmp_path), 10 << 20, LRUPolicy())
    await disk_cache.start()
    caching = CachingStore(origin, disk_cache)
    store = SingleFlightStore(caching)
    gets = asyncio.gather(*(store.get(h) for _ in range(100)))
    await origin.until_parked()
    origin.release.set()
    refs = await gets
    assert origin.gets == 1
    assert store.origin_calls == 1
    assert all(r.read() == data for r in refs)
    assert len({id(r) for r in refs}) == 100  # each caller owns its ref
    assert refs[0].trace.stacks[-1].origin_name == "sf_caching"
    for r in refs:
        r.close()
    # Also without the outer single-flight: CachingStore collapses its own misses.
    h2, data2 = make_blob(21, 100_000)
    await origin.put(h2, data2)
    origin.release.clear()
    gets = asyncio.gather(*(caching.get(h2) for _ in range(100)))
    await origin.until_parked()
    origin.release.set()
    refs = await gets
    assert origin.gets == 2 and all(r.read() == data2 for r in refs)
    await caching.drain()
    assert len(disk_cache) == 2
    await disk_cache.stop()


async def test_singleflight_shares_errors_and_forgets_them() -> None:
    origin = CountingStore("origin", held=True)
    store = SingleFlightStore(origin)
    h, data = make_blob(22)
    gets = asyncio.gather(*(store.get(h) for _ in range(10)), return_exceptions=True)
    await origin.until_parked()
    origin.release.set()
    results = await gets
    assert all(isinstance(r, BlobNotFound) for r in results)
    assert origin.gets == 1
    await origin.put(h, data)
    assert (await store.get(h)).read() == data  # a later get is a new flight
    assert origin.gets == 2


async def test_singleflight_file_refs_are_independent(tmp_path) -> None:
    disk = DiskStore(tmp_path)
    h, data = make_blob(23, 5000)
    await disk.put(h, data)
    store = SingleFlightStore(disk)
    refs = await asyncio.gather(*(store.get(h) for _ in range(5)))
    refs[0].close()  # closing one never breaks the others (own descriptors, or holds on a shared one)
    assert all(r.read() == data for r in refs[1:])


async def test_singleflight_leader_cancelled_waiters_still_served() -> None:
    origin = CountingStore("origin", held=True)
    h, data = make_blob(24)
    await origin.put(h, data)
    store = SingleFlightStore(origin)
    leader = asyncio.create_task(store.get(h))
    await origin.until_parked()
    waiters = [asyncio.create_task(store.get(h)) for _ in range(3)]
    await until(lambda: store.flights.waiting == 3)
    leader.cancel()
    await until(lambda: leader.done() and origin.gets == 2)  # a waiter took over
    origin.release.set()
    refs = await asyncio.gather(*waiters)
    assert all(r.read() == data for r in refs)
    assert origin.gets == 2  # one cancelled call, one call by the new leader


async def test_singleflight_never_folds_puts_into_gets() -> None:
    origin = CountingStore("origin", held=True)
    store = SingleFlightStore(origin)
    h, data = make_blob(25)
    get = asyncio.create_task(store.get(h))
    await origin.until_parked()
    await store.put(h, data)  # reflector.go would have joined the get's flight instead
    assert origin.puts == 1 and h in origin.blobs
    assert not get.done()  # the put neither waited for nor shared the get in flight
    origin.release.set()
    assert (await get).read() == data
    assert await store.has(h)
    await store.put_sd(h, data)
    await store.delete(h)
    assert not await store.has(h)


# -- FallbackStore --------------------------------------------------------------------------


async def test_fallback_reads_first_then_second() -> None:
    first, second = CountingStore("cf"), CountingStore("cf-fallback")
    store = FallbackStore(first, second)
    h1, d1 = make_blob(30)
    h2, d2 = make_blob(31)
    await first.put(h1, d1)
    await second.put(h2, d2)
    assert (await store.get(h1)).read() == d1 and second.gets == 0
    ref = await store.get(h2)
    assert ref.read() == d2
    assert [s.origin_name for s in ref.trace.stacks] == ["cf-fallback", "ittt"]
    assert store.first_hits == 1 and store.second_hits == 1
    assert await store.has(h1) and await store.has(h2)
    with pytest.raises(BlobNotFound):
        await store.get(make_blob(32)[0])


async def test_fallback_any_error_tries_second() -> None:
    second = CountingStore("second")
    h, data = make_blob(33)
    await second.put(h, data)
    store = FallbackStore(BrokenStore("first", fail=("get", "has")), second)
    assert (await store.get(h)).read() == data
    assert await store.has(h)
    both_broken = FallbackStore(BrokenStore("a"), BrokenStore("b"))
    with pytest.raises(StoreError, match="b: get failed"):
        await both_broken.get(h)


async def test_fallback_is_read_only() -> None:
    store = FallbackStore(MemoryStore(), MemoryStore())
    h, data = make_blob(34)
    for call in (store.put(h, data), store.put_sd(h, data), store.delete(h)):
        with pytest.raises(ReadOnlyStoreError, match="does not implement this method"):
            await call


# -- memory cache ---------------------------------------------------------------------------


async def test_memory_cache_lru_order_and_capacity() -> None:
    mem = MemoryCacheStore(3)
    blobs = [make_blob(40 + i) for i in range(4)]
    for h, d in blobs[:3]:
        await mem.put(h, d)
    await mem.get(blobs[0][0])  # 0 is now most recent; 1 is the LRU
    assert await mem.has(blobs[1][0])  # has() is not a use
    await mem.put(*blobs[3])
    assert len(mem) == 3 and not await mem.has(blobs[1][0]) and mem.evictions == 1
    ref = await mem.get(blobs[0][0])
    assert ref.read() == blobs[0][1]
    assert [s.origin_name for s in ref.trace.stacks] == ["mem", "gcache"]
    with pytest.raises(BlobNotFound):
        await mem.get(blobs[1][0])
    await mem.delete(blobs[0][0])
    assert not await mem.has(blobs[0][0])
    with pytest.raises(ValueError, match="positive"):
        MemoryCacheStore(0)


async def test_memory_cache_in_front_of_disk_cache_chain(tmp_path) -> None:
    origin = CountingStore("origin")
    disk_cache = DiskCacheStore(DiskStore(tmp_path), 1 << 20, LRUPolicy())
    await disk_cache.start()
    mem = MemoryCacheStore(2)
    chain = CachingStore(CachingStore(origin, disk_cache), mem, verify=False)
    h, data = make_blob(50, 4000)
    await origin.put(h, data)
    assert (await chain.get(h)).read() == data
    await chain.drain()
    await chain.origin.drain()  # type: ignore[attr-defined]
    assert await mem.has(h) and await disk_cache.has(h)
    ref = await chain.get(h)
    assert ref.data is not None and ref.file is None  # served from memory
    await mem.delete(h)
    ref = await chain.get(h)  # from disk, refilling memory
    assert ref.read() == data and origin.gets == 1
    assert h in {b.hash for b in scan_blobs(str(tmp_path))}
    await disk_cache.stop()


async def test_caller_gone_while_waiting_for_staging_room_loses_nothing() -> None:
    class HeldPutStore(CountingStore):
        started, let_go, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def put(self, blob_hash: str, data: bytes) -> None:
            self.started.set()
            await self.let_go.wait()
            await super().put(blob_hash, data)
            self.done.set()

    origin, cache = CountingStore("origin"), HeldPutStore("cache")
    (h1, d1), (h2, d2) = make_blob(60), make_blob(62)
    await origin.put(h1, d1)
    await origin.put(h2, d2)
    store = CachingStore(origin, cache, staging_bytes=0)
    assert (await store.get(h1)).read() == d1  # answered; its cache write is held
    await cache.started.wait()
    # The staging area is over its bound: the next fill waits for room, and its caller goes away.
    task = asyncio.create_task(store.get(h2))
    await asyncio.sleep(0.01)
    assert origin.gets == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cache.let_go.set()
    await cache.done.wait()
    assert h1 in cache.blobs and h2 not in cache.blobs  # the first write not left half done
    await store.close()


async def test_miss_is_answered_before_the_cache_write_and_staged_meanwhile() -> None:
    class HeldPutStore(CountingStore):
        release = asyncio.Event()

        async def put(self, blob_hash: str, data: bytes) -> None:
            await self.release.wait()
            await super().put(blob_hash, data)

    origin, cache = CountingStore("origin"), HeldPutStore("cache")
    h, data = make_blob(61)
    await origin.put(h, data)
    store = CachingStore(origin, cache)
    assert (await store.get(h)).read() == data  # while the cache write is held
    assert h not in cache.blobs and store.staged_bytes == len(data)
    ref = await store.get(h)  # a second get is served from the staging area
    assert ref.read() == data and origin.gets == 1 and store.hits == 1
    cache.release.set()
    await store.drain()
    assert h in cache.blobs and store.staged_bytes == 0


async def test_full_staging_area_holds_the_next_fill_until_the_writes_before_it_end() -> None:
    class SlowPutStore(CountingStore):
        async def put(self, blob_hash: str, data: bytes) -> None:
            await asyncio.sleep(0.05)
            await super().put(blob_hash, data)

    origin, cache = CountingStore("origin"), SlowPutStore("cache")
    blobs = [make_blob(70 + i) for i in range(3)]
    for h, data in blobs:
        await origin.put(h, data)
    store = CachingStore(origin, cache, staging_bytes=len(blobs[0][1]))
    await store.get(blobs[0][0])  # room: answered at once
    await store.get(blobs[1][0])  # still room (at the bound): answered at once
    assert blobs[0][0] not in cache.blobs and blobs[1][0] not in cache.blobs
    await store.get(blobs[2][0])  # over the bound: fetched once the writes before it are done
    assert blobs[0][0] in cache.blobs and blobs[1][0] in cache.blobs
    await store.close()
    assert all(h in cache.blobs for h, _ in blobs) and store.staged_bytes == 0
