"""`get_now`: the stores that can hand a blob over without waiting, and when they say "ask `get`"."""

from __future__ import annotations

import asyncio

from prism.store import DiskStore
from prism.store.base import immediate_getter
from prism.store.caching import CachingStore
from prism.store.guards import ProtectedGuard
from prism.store.mem_cache import MemoryCacheStore
from prism.store.singleflight import SingleFlightStore
from tests.helpers import CountingStore, make_blob
from tests.store.test_disk_cache import crash, open_cache

KB = 1000


def names(ref) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.origin_name for s in ref.trace.stacks]


async def test_disk_store_opens_the_file_or_says_none(tmp_path) -> None:
    disk = DiskStore(tmp_path)
    h, data = make_blob(1, KB)
    assert disk.get_now(h) is None
    await disk.put(h, data)
    with disk.get_now(h) as ref:  # type: ignore[union-attr]
        assert ref.file is not None and ref.read() == data and names(ref) == ["disk"]


async def test_disk_cache_hands_over_only_verified_blobs(tmp_path) -> None:
    cache = await open_cache(tmp_path, 10 * KB)
    h, data = make_blob(1, KB)
    assert cache.get_now(h) is None
    await cache.put(h, data)
    with cache.get_now(h) as ref:  # type: ignore[union-attr]
        assert ref.read() == data and names(ref) == ["disk", "gcache"]
    assert cache.hits == 1
    crash(cache)
    again = await open_cache(tmp_path, 10 * KB)
    assert not again.is_verified(h)
    assert again.get_now(h) is None  # not trusted yet: `get` hashes it first
    with await again.get(h) as ref:
        assert ref.read() == data
    with again.get_now(h) as ref:  # type: ignore[union-attr]
        assert ref.read() == data
    assert again.hits == 2


async def test_caching_store_hands_over_hits_and_leaves_misses_to_get(tmp_path) -> None:
    origin = CountingStore()
    cache = await open_cache(tmp_path, 10 * KB)
    store = SingleFlightStore(CachingStore(origin, cache))
    h, data = make_blob(2, KB)
    await origin.put(h, data)
    assert store.get_now(h) is None and origin.gets == 0  # a miss: nothing fetched
    with await store.get(h) as ref:
        assert ref.read() == data
    await asyncio.sleep(0.05)  # the write behind the answer lands
    with store.get_now(h) as ref:  # type: ignore[union-attr]
        assert ref.read() == data
        assert names(ref) == ["disk", "gcache", "caching", "sf_caching"]
    assert origin.gets == 1


async def test_single_flight_leaves_a_hash_under_way_to_get() -> None:
    inner = MemoryCacheStore(4)
    store = SingleFlightStore(inner)
    h, data = make_blob(3, KB)
    await inner.put(h, data)
    store.flights._flights[h] = []  # a get of it is under way
    assert store.get_now(h) is None
    del store.flights._flights[h]
    ref = store.get_now(h)
    assert ref is not None and ref.read() == data and names(ref) == ["mem", "gcache", "sf_gcache"]


async def test_a_wrapper_without_get_now_hides_its_inner_stores(tmp_path) -> None:
    async def never(_h: str) -> bool:
        return False

    guard = ProtectedGuard(DiskStore(tmp_path), never)
    assert immediate_getter(guard) is None  # its check would be skipped otherwise
    assert immediate_getter(SingleFlightStore(guard)) is not None
    assert SingleFlightStore(guard).get_now(make_blob(4, KB)[0]) is None
