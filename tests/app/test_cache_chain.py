"""Parsing `--disk-cache SIZE:PATH:MANAGER` (reflector.md §1.3) and stacking the caches."""

from __future__ import annotations

import pytest

from prism.app.cache_chain import (
    MANAGER_POLICY,
    DiskCacheSpec,
    DiskCacheSpecError,
    build_cache_chain,
    parse_disk_cache_spec,
    parse_size,
)
from prism.store.base import arrived
from prism.store.caching import CachingStore, drain_fills
from prism.store.disk_cache import DiskCacheStore
from prism.store.http import HttpStore
from prism.store.mem_cache import MemoryCacheStore
from prism.store.singleflight import SingleFlightStore
from tests.conftest import sql
from tests.helpers import CountingStore, TricklingUpstream, make_blob, random_blob


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100GB", 100 * 2**30),
        ("2GB", 2 * 2**30),
        ("500MB", 500 * 2**20),
        ("500mb", 500 * 2**20),
        ("1TB", 2**40),
        ("64KB", 64 * 1024),
        ("3 G", 3 * 2**30),
        ("7gigabytes", 7 * 2**30),
        ("1024", 1024),
        ("10B", 10),
    ],
)
def test_sizes_are_binary(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_default_flag_value() -> None:
    spec = parse_disk_cache_spec("100GB:/tmp/downloaded_blobs:localdb")
    assert spec == DiskCacheSpec(100 * 2**30, "/tmp/downloaded_blobs", "localdb")
    assert spec.policy == "lru"
    assert parse_disk_cache_spec("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100GB:/tmp/x", "exactly three ':'-separated parts (got 2)"),
        ("100GB:/tmp/x:lru:extra", "exactly three ':'-separated parts (got 4)"),
        ("100GB", "exactly three ':'-separated parts (got 1)"),
        ("100GB:tmp/x:lru", "must be absolute"),
        ("100GB::lru", "must be absolute"),
        ("100GB:/tmp/x:fifo", "cache manager 'fifo' is not supported"),
        ("100GB:/tmp/x:LRU", "cache manager 'LRU' is not supported"),
        (":/tmp/x:lru", "the size is empty"),
        ("0GB:/tmp/x:lru", "must be more than 0"),
        ("0:/tmp/x:lru", "must be more than 0"),
        ("1.5GB:/tmp/x:lru", "only whole numbers"),
        ("-1GB:/tmp/x:lru", "want a whole number"),
        ("GB:/tmp/x:lru", "want a whole number"),
        ("10Gb:/tmp/x:lru", "'Gb' means bits"),
        ("10GiB:/tmp/x:lru", "unknown unit 'GiB'"),
        ("99999999999EB:/tmp/x:lru", "too large"),
    ],
)
def test_malformed_specs_have_clear_errors(text: str, message: str) -> None:
    with pytest.raises(DiskCacheSpecError) as exc:
        parse_disk_cache_spec(text)
    assert message in str(exc.value)


def test_every_reflector_go_manager_is_accepted() -> None:
    for name in ("localdb", "lfu", "arc", "lru", "simple", "lfuda"):
        assert parse_disk_cache_spec(f"1GB:/x:{name}").policy == MANAGER_POLICY[name]  # type: ignore[union-attr]


async def test_chain_is_stacked_like_reflector_go(tmp_path) -> None:
    origin = CountingStore("origin")
    chain = build_cache_chain(
        origin,
        disk_cache=f"10MB:{tmp_path}/main:lfuda",
        optional_disk_cache=f"1MB:{tmp_path}/fast:lru",
        mem_cache=5,
    )
    outer = chain.store
    assert isinstance(outer, CachingStore) and isinstance(outer.cache, MemoryCacheStore)
    fast = outer.origin
    assert isinstance(fast, CachingStore) and isinstance(fast.cache, DiskCacheStore)
    assert fast.cache.capacity == 2**20 and fast.cache.policy.name == "lru"
    main = fast.origin
    assert isinstance(main, CachingStore) and isinstance(main.cache, DiskCacheStore)
    assert main.cache.policy.name == "lfuda" and isinstance(main.origin, SingleFlightStore)
    assert main.verify and not fast.verify and not outer.verify
    await chain.start()
    h, data = make_blob(1, 5000)
    await origin.put(h, data)
    ref = await outer.get(h)
    assert ref.read() == data
    names = [s.origin_name for s in ref.trace.stacks]
    assert names == ["origin", "sf_origin", "caching", "caching", "caching"]
    await drain_fills(outer)
    assert await main.cache.has(h) and await fast.cache.has(h) and await outer.cache.has(h)
    await chain.stop()


def test_chain_flag_errors_before_anything_is_created(tmp_path) -> None:
    with pytest.raises(DiskCacheSpecError):
        build_cache_chain(
            CountingStore("origin"), disk_cache=f"1GB:{tmp_path}/a:lru", optional_disk_cache="bad"
        )
    assert not (tmp_path / "a").exists()


async def test_localdb_manager_uses_mysql_with_local_db_conn(tmp_path, mysql_database) -> None:
    p = mysql_database
    dsn = f"{p.user}:{p.password}@tcp({p.host}:{p.port})/{p.database}"
    origin = CountingStore("origin")
    chain = build_cache_chain(origin, disk_cache=f"1MB:{tmp_path}/c:localdb", local_db_conn=dsn)
    await chain.start()
    h, data = make_blob(1, 3000)
    await origin.put(h, data)
    assert (await chain.store.get(h)).read() == data
    assert chain.store.cache.name == "db-backed"  # type: ignore[attr-defined]
    await chain.stop()
    assert not (tmp_path / "c" / "localdb.sqlite3").exists()
    assert sql(p, "SELECT is_stored, length FROM blob_ WHERE hash = %s", (h,)) == [(1, 3000)]


async def test_localdb_manager_defaults_to_sqlite_in_the_cache_dir(tmp_path) -> None:
    chain = build_cache_chain(CountingStore("origin"), disk_cache=f"1MB:{tmp_path}/c:localdb")
    await chain.start()
    await chain.store.put(*make_blob(2, 100))
    await chain.stop()
    assert (tmp_path / "c" / "localdb.sqlite3").exists()


async def test_every_layer_of_the_chain_caches_a_blob_that_arrived_streaming(tmp_path) -> None:
    h, data = random_blob(1_000_000)
    upstream = TricklingUpstream({h: data})  # stand-in HTTP upstream: the second half waits for the gate
    await upstream.start()
    chain = build_cache_chain(
        HttpStore(f"127.0.0.1:{upstream.port}"),
        disk_cache=f"10MB:{tmp_path}/main:lru",
        optional_disk_cache=f"10MB:{tmp_path}/fast:lfuda",
        mem_cache=10 * 2**20,
        verify_origin=False,
    )
    await chain.start()
    try:
        outer = chain.store
        ref = await outer.get_arriving(h)  # type: ignore[attr-defined]
        assert ref.arrival is not None and not ref.arrival.done  # handed on before it is all in
        upstream.gate.set()
        assert (await arrived(ref)).read() == data
        await drain_fills(outer)
        assert all([await c.has(h) for c in chain.caches])
        assert upstream.requests[h] == 1
    finally:
        await chain.stop()
        await chain.store.close()
        await upstream.stop()
