"""DiskCacheStore: byte capacity, eviction order, watermark, restart, adoption, reads during eviction."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from prism.store import BlobNotFound, DiskStore, StoreError
from prism.store.caching import CachingStore
from prism.store.disk import scan_blobs
from prism.store.disk_cache import (
    CLEAN_NAME,
    LEGACY_SNAPSHOT_MAGIC,
    LEGACY_SNAPSHOT_NAME,
    SNAPSHOT_NAME,
    DiskCacheStore,
)
from prism.store.eviction import make_policy
from tests.helpers import CountingStore, make_blob

KB = 1000
MB = 1000 * KB


async def open_cache(root, capacity: int, policy: str = "lru", low: float = 1.0) -> DiskCacheStore:
    cache = DiskCacheStore(DiskStore(root), capacity, make_policy(policy, capacity), low_watermark=low)
    await cache.start()
    return cache


def on_disk(cache: DiskCacheStore, h: str) -> bool:
    return os.path.exists(cache.disk.path_of(h))


async def test_disk_cache_semantics(tmp_path) -> None:
    cache = await open_cache(tmp_path, 10 * KB)
    h, data = make_blob(1, KB)
    assert not await cache.has(h)
    with pytest.raises(BlobNotFound):
        await cache.get(h)
    await cache.put(h, data)
    assert await cache.has(h) and cache.stored_bytes == KB
    with await cache.get(h) as ref:
        assert ref.file is not None and ref.read() == data
        assert [s.origin_name for s in ref.trace.stacks] == ["disk", "gcache"]
    await cache.put(h, data)  # same blob again: nothing rewritten, nothing double counted
    assert cache.stored_bytes == KB
    assert await cache.list_hashes() == [h]
    await cache.delete(h)
    await cache.delete(h)
    assert not await cache.has(h) and not on_disk(cache, h) and cache.stored_bytes == 0
    await cache.close()


async def test_disk_cache_put_before_start_fails(tmp_path) -> None:
    cache = DiskCacheStore(DiskStore(tmp_path), 10 * KB, make_policy("lru", 10 * KB))
    with pytest.raises(StoreError, match="not started"):
        await cache.put(*make_blob(1))
    with pytest.raises(ValueError, match="positive"):
        DiskCacheStore(DiskStore(tmp_path), 0, make_policy("lru", 1))


async def test_lru_eviction_order_on_disk(tmp_path) -> None:
    cache = await open_cache(tmp_path, 3 * KB, "lru")
    a, b, c, d = (make_blob(i, KB) for i in range(4))
    for h, data in (a, b, c):
        await cache.put(h, data)
    (await cache.get(a[0])).close()
    await cache.put(*d)
    assert [on_disk(cache, x[0]) for x in (a, b, c, d)] == [True, False, True, True]
    assert not await cache.has(b[0]) and cache.evictions == 1 and cache.stored_bytes == 3 * KB


async def test_lfuda_eviction_order_on_disk(tmp_path) -> None:
    cache = await open_cache(tmp_path, 3 * KB, "lfuda")
    a, b, c, d, e = (make_blob(i, KB) for i in range(5))
    for h, data in (a, b, c):
        await cache.put(h, data)
    for _ in range(3):
        (await cache.get(a[0])).close()
    (await cache.get(b[0])).close()
    await cache.put(*d)  # c has the fewest hits
    assert [on_disk(cache, x[0]) for x in (a, b, c, d)] == [True, True, False, True]
    # c's eviction raised the age L to 1, so d entered at 1 + L = 2, tied with b (1 hit):
    # b was used less recently and goes first.
    await cache.put(*e)
    assert [on_disk(cache, x[0]) for x in (a, b, d, e)] == [True, False, True, True]


async def test_eviction_goes_down_to_low_watermark(tmp_path) -> None:
    cache = await open_cache(tmp_path, 10 * KB, "lru", low=0.5)
    blobs = [make_blob(i, KB) for i in range(11)]
    for h, data in blobs:
        await cache.put(h, data)
    # Passing the capacity brings the cache (new blob included) down to the watermark.
    assert cache.stored_bytes == 5 * KB and len(cache) == 5
    assert [on_disk(cache, h) for h, _ in blobs] == [False] * 6 + [True] * 5
    assert sum(1 for _ in scan_blobs(str(tmp_path))) == 5


async def test_eviction_does_not_break_a_read_in_progress(tmp_path) -> None:
    cache = await open_cache(tmp_path, 3 * 100 * KB, "lru")
    victim, vdata = make_blob(100, 100 * KB)
    await cache.put(victim, vdata)
    ref = await cache.get(victim)  # a server holds this open, about to sendfile it
    first = os.pread(ref.file.fileno(), 10 * KB, 0)
    for i in range(5):  # push the victim out
        await cache.put(*make_blob(200 + i, 100 * KB))
    assert not on_disk(cache, victim) and not await cache.has(victim)
    # The open file still serves every byte: through sendfile to a socket ...
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(True)
        received = bytearray()
        offset = 0
        while offset < ref.size:
            sent = os.sendfile(a.fileno(), ref.file.fileno(), offset, ref.size - offset)
            offset += sent
            while len(received) < offset:
                received += b.recv(1 << 20)
        assert bytes(received) == vdata
    # ... and through read().
    assert first + ref.read()[10 * KB :] == vdata
    with pytest.raises(BlobNotFound):
        await cache.get(victim)


async def test_missing_file_is_forgotten(tmp_path) -> None:
    cache = await open_cache(tmp_path, 10 * KB)
    h, data = make_blob(1, KB)
    await cache.put(h, data)
    os.unlink(cache.disk.path_of(h))  # an operator (or check-integrity) removed it
    with pytest.raises(BlobNotFound):
        await cache.get(h)
    assert not await cache.has(h) and cache.stored_bytes == 0


async def filled_cache(
    root, capacity: int, policy: str, n: int
) -> tuple[DiskCacheStore, list[tuple[str, bytes]]]:
    """A started cache holding `n` blobs of 1 KB; (cache, blobs)."""
    cache = await open_cache(root, capacity, policy)
    blobs = [make_blob(i, KB) for i in range(n)]
    for h, data in blobs:
        await cache.put(h, data)
    return cache, blobs


@pytest.mark.parametrize("policy", ["lru", "lfuda", "tinylfu"])
async def test_restart_keeps_the_index(tmp_path, policy: str) -> None:
    cache, blobs = await filled_cache(tmp_path, 4 * KB, policy, 4)
    for _ in range(3):
        for h, _ in (blobs[0], blobs[2], blobs[3]):
            (await cache.get(h)).close()
    await cache.stop()
    assert SNAPSHOT_NAME in os.listdir(tmp_path)

    again = await open_cache(tmp_path, 4 * KB, policy)
    assert again.rebuild is not None and again.rebuild.blobs == 4 and again.rebuild.adopted == 0
    assert again.stored_bytes == 4 * KB
    for h, data in blobs:
        assert (await again.get(h)).read() == data
    for _ in range(3):
        for h, _ in (blobs[0], blobs[2], blobs[3]):
            (await again.get(h)).close()
    # blob 1 was the coldest before the restart and still is after it.
    new = [make_blob(10, KB)]
    for h, data in new:
        await again.put(h, data)
    assert all([await again.has(h) for h, _ in (blobs[0], blobs[2], blobs[3])])
    if policy == "tinylfu":  # the admission filter prefers blob 1 (2 uses) to a blob seen once
        assert (
            await again.has(blobs[1][0]) and not await again.has(new[0][0]) and not on_disk(again, new[0][0])
        )
    else:
        assert not await again.has(blobs[1][0]) and not on_disk(again, blobs[1][0])
    await again.stop()


def crash(cache: DiskCacheStore) -> None:
    """Leave `cache` as a kill -9 would: no stop(), so no snapshot and no clean-shutdown mark."""
    assert not os.path.exists(os.path.join(cache.root, CLEAN_NAME))


async def test_restart_adopts_unknown_blobs_and_keeps_what_fits(tmp_path) -> None:
    disk = DiskStore(tmp_path)
    blobs = [make_blob(i, KB) for i in range(6)]
    now = time.time()
    for i, (h, data) in enumerate(blobs):  # written by someone else: no index at all
        await disk.put(h, data)
        os.utime(disk.path_of(h), (now - 600 + i, now - 600 + i))
    cache = await open_cache(tmp_path, 4 * KB, "lru", low=1.0)
    assert cache.rebuild is not None and cache.rebuild.evicted == 2 and not cache.rebuild.clean
    # The two oldest files went; nothing else was deleted.
    assert [on_disk(cache, h) for h, _ in blobs] == [False, False, True, True, True, True]
    await cache.stop()
    unclean = await open_cache(tmp_path, 4 * KB, "lru", low=1.0)
    assert unclean.rebuild is not None and unclean.rebuild.clean
    crash(unclean)

    # After the crash: a blob written after the snapshot is adopted as recent, one with an old
    # time as the coldest; a blob gone from disk is forgotten.
    late, late_data = make_blob(50, KB)
    old, old_data = make_blob(51, KB)
    await disk.put(late, late_data)
    await disk.put(old, old_data)
    os.utime(disk.path_of(old), (now - 3600, now - 3600))
    os.unlink(disk.path_of(blobs[5][0]))
    again = await open_cache(tmp_path, 5 * KB, "lru", low=1.0)
    assert again.rebuild is not None and not again.rebuild.clean
    assert again.rebuild.forgotten == 1 and again.rebuild.adopted == 2 and again.rebuild.evicted == 0
    await again.put(*make_blob(60, KB))
    assert not await again.has(old) and await again.has(late)


@pytest.mark.parametrize("policy", ["lru", "lfuda", "tinylfu"])
async def test_warm_start_reads_no_directory_and_adopts_in_the_background(tmp_path, policy: str) -> None:
    cache, blobs = await filled_cache(tmp_path, 10 * KB, policy, 4)
    await cache.stop()
    assert {SNAPSHOT_NAME, CLEAN_NAME} <= set(os.listdir(tmp_path))
    # Copied in while prism was stopped, and one blob removed by hand.
    stranger, sdata = make_blob(40, KB)
    await DiskStore(tmp_path).put(stranger, sdata)
    os.unlink(cache.disk.path_of(blobs[3][0]))

    again = await open_cache(tmp_path, 10 * KB, policy)
    assert again.rebuild is not None and again.rebuild.clean and again.rebuild.unverified == 0
    assert not os.path.exists(tmp_path / CLEAN_NAME)  # taken at start: a crash now means unclean
    # The index is the snapshot's: the stranger is not known yet, the removed blob still is.
    assert len(again) == 4 and not await again.has(stranger) and await again.has(blobs[3][0])
    # The background pass adopts the stranger (unverified) and forgets the removed blob.
    assert again.adoption is not None and await again.adoption == 2
    assert (again.rebuild.adopted, again.rebuild.forgotten) == (1, 1)
    assert await again.has(stranger) and not again.is_verified(stranger)
    assert not await again.has(blobs[3][0])
    assert len(again) == 4 and again.stored_bytes == 4 * KB
    if policy != "tinylfu":  # (whose admission duel decides by frequency, not by age)
        # Copied in while stopped, so newer than the shutdown: the most recent, not the first victim.
        for i in range(7):
            await again.put(*make_blob(50 + i, KB))
        assert not await again.has(blobs[0][0]) and await again.has(stranger)
    assert (await again.get(stranger)).read() == sdata and again.is_verified(stranger)
    assert all(again.is_verified(h) for h, _ in blobs[1:3])
    await again.stop()


async def test_snapshot_not_named_by_the_mark_means_a_cold_start(tmp_path) -> None:
    cache = await open_cache(tmp_path, 10 * KB)
    await cache.put(*make_blob(1, KB))
    await cache.stop()
    mark = (tmp_path / CLEAN_NAME).read_bytes().split(b" ")
    mark[2] = b"1" + mark[2]  # the stamp of another snapshot
    (tmp_path / CLEAN_NAME).write_bytes(b" ".join(mark))
    again = await open_cache(tmp_path, 10 * KB)
    assert again.rebuild is not None and not again.rebuild.clean and again.rebuild.unverified == 1


async def test_concurrent_puts_and_gets_keep_accounting(tmp_path) -> None:
    cache = await open_cache(tmp_path, 20 * KB, "lfuda", low=0.8)
    blobs = [make_blob(i, KB) for i in range(60)]

    async def worker(offset: int) -> None:
        for i in range(offset, 60, 3):
            await cache.put(*blobs[i])
            try:
                (await cache.get(blobs[i // 2][0])).close()
            except BlobNotFound:
                pass

    await asyncio.gather(*(worker(k) for k in range(3)))
    on = {b.hash for b in scan_blobs(str(tmp_path))}
    assert on == set(await cache.list_hashes())
    assert cache.stored_bytes == KB * len(on) <= 20 * KB


async def test_blob_larger_than_the_cache_is_not_cached(tmp_path) -> None:
    cache = await open_cache(tmp_path, 2 * KB)
    small, sdata = make_blob(1, KB)
    await cache.put(small, sdata)
    big, bdata = make_blob(2, 3 * KB)
    await cache.put(big, bdata)
    assert not await cache.has(big) and not on_disk(cache, big)
    assert await cache.has(small) and cache.stored_bytes == KB


async def test_large_eviction_batch_runs_off_the_loop_and_put_waits_for_it(tmp_path) -> None:
    cache = await open_cache(tmp_path, 40 * KB, "lru", low=0.25)
    blobs = [make_blob(i, KB) for i in range(41)]
    for h, data in blobs[:40]:
        await cache.put(h, data)
    # The 41st put evicts 30 blobs (a batch unlinked in a thread); re-putting one of the
    # victims at the same time (its file was lost, so it is rewritten) must leave it on
    # disk and indexed, whichever write finishes first.
    victim = blobs[0]
    os.unlink(cache.disk.path_of(victim[0]))
    await asyncio.gather(cache.put(*blobs[40]), cache.put(*victim))
    assert await cache.has(victim[0]) and on_disk(cache, victim[0])
    on = {b.hash for b in scan_blobs(str(tmp_path))}
    assert on == set(await cache.list_hashes())
    assert cache.stored_bytes == KB * len(on) <= 40 * KB


@pytest.mark.parametrize("policy", ["lru", "lfuda", "tinylfu"])
async def test_after_an_unclean_shutdown_a_file_is_hashed_before_it_is_served(tmp_path, policy: str) -> None:
    cache = await open_cache(tmp_path, 10 * MB, policy)
    good, truncated, garbage = (make_blob(i, KB) for i in range(3))
    big = make_blob(3, 300 * KB)  # hashed on a worker thread
    bad_big = make_blob(4, 300 * KB)
    for h, data in (good, truncated, garbage, big, bad_big):
        await cache.put(h, data)
    crash(cache)
    # What a power loss can leave of files written without fsync.
    os.truncate(cache.disk.path_of(truncated[0]), KB // 2)
    with open(cache.disk.path_of(garbage[0]), "r+b") as f:
        f.write(b"\0" * 100)
    with open(cache.disk.path_of(bad_big[0]), "r+b") as f:
        f.seek(200 * KB)
        f.write(b"\0" * 100)

    again = await open_cache(tmp_path, 10 * MB, policy)
    assert again.rebuild is not None and not again.rebuild.clean and again.rebuild.unverified == 5
    for h, data in (good, big):
        assert not again.is_verified(h)
        with await again.get(h) as ref:
            assert ref.read() == data
        assert again.is_verified(h)
    for h, _ in (truncated, garbage, bad_big):
        assert await again.has(h)  # known, but not trusted ...
        with pytest.raises(BlobNotFound):  # ... and a get removes it
            await again.get(h)
        assert not await again.has(h) and not on_disk(again, h)
    assert (again.verified, again.corrupt) == (2, 3) and again.stored_bytes == KB + 300 * KB
    # A put of a blob that was never verified rewrites it.
    other, odata = make_blob(5, KB)
    await again.put(other, odata)
    crash(again)
    with open(again.disk.path_of(other), "r+b") as f:
        f.write(b"\0" * 10)
    third = await open_cache(tmp_path, 10 * MB, policy)
    await third.put(other, odata)
    assert third.is_verified(other) and (await third.get(other)).read() == odata
    # Still unverified blobs stay so across a clean restart; verified ones are trusted.
    await third.put(*make_blob(6, KB))
    await third.stop()
    fourth = await open_cache(tmp_path, 10 * MB, policy)
    assert fourth.rebuild is not None and fourth.rebuild.clean and fourth.rebuild.unverified == 2
    assert fourth.is_verified(other) and not fourth.is_verified(good[0]) and not fourth.is_verified(big[0])
    await fourth.stop()


async def test_caching_store_refetches_a_corrupt_cached_blob(tmp_path) -> None:
    origin = CountingStore("origin")
    h, data = make_blob(1, 100 * KB)
    await origin.put(h, data)
    cache = await open_cache(tmp_path, 10 * MB)
    store = CachingStore(origin, cache)
    (await store.get(h)).close()
    await store.drain()  # the fill writes behind the answer
    assert origin.gets == 1
    crash(cache)
    with open(cache.disk.path_of(h), "r+b") as f:
        f.write(b"garbage")
    again = await open_cache(tmp_path, 10 * MB)
    store = CachingStore(origin, again)
    with await store.get(h) as ref:
        assert ref.read() == data
    await store.drain()
    assert origin.gets == 2 and again.corrupt == 1
    with open(again.disk.path_of(h), "rb") as f:
        assert f.read() == data  # cached again, correct this time
    with await store.get(h) as ref:
        assert ref.read() == data
    assert origin.gets == 2
    await again.stop()


async def test_a_text_snapshot_of_an_earlier_version_orders_a_cold_start(tmp_path) -> None:
    disk = DiskStore(tmp_path)
    blobs = [make_blob(i, KB) for i in range(3)]
    for h, data in blobs:
        await disk.put(h, data)
    order = [blobs[2], blobs[0], blobs[1]]  # coldest first
    lines = [f"{LEGACY_SNAPSHOT_MAGIC} lru {time.time() + 60:.3f}\n"]
    lines += [f"{h} {KB} 1 0.0\n" for h, _ in order]
    (tmp_path / LEGACY_SNAPSHOT_NAME).write_text("".join(lines))
    cache = await open_cache(tmp_path, 3 * KB)
    assert cache.rebuild is not None and not cache.rebuild.clean and cache.rebuild.unverified == 3
    assert await cache.list_hashes() == [h for h, _ in order]
    await cache.stop()
    assert not (tmp_path / LEGACY_SNAPSHOT_NAME).exists() and (tmp_path / SNAPSHOT_NAME).exists()


@pytest.mark.parametrize("prefix_length", [0, 1])
async def test_background_pass_finds_what_changed_in_every_shard(tmp_path, prefix_length: int) -> None:
    def open_sharded() -> DiskCacheStore:
        return DiskCacheStore(DiskStore(tmp_path, prefix_length), 100 * KB, make_policy("lru", 100 * KB))

    cache = open_sharded()
    await cache.start()
    blobs = [make_blob(i, KB) for i in range(40)]  # about 2.5 per shard of one hex digit
    for h, data in blobs:
        await cache.put(h, data)
    await cache.stop()
    removed = blobs[::7]
    for h, _ in removed:
        os.unlink(cache.disk.path_of(h))
    strangers = [make_blob(100 + i, KB) for i in range(5)]
    for h, data in strangers:
        await cache.disk.put(h, data)
    again = open_sharded()
    await again.start()
    assert again.adoption is not None and await again.adoption == len(removed) + len(strangers)
    assert set(await again.list_hashes()) == {b.hash for b in scan_blobs(str(tmp_path), prefix_length)}
    await again.stop()


async def test_a_snapshot_that_cannot_be_written_means_a_cold_start(tmp_path) -> None:
    cache, blobs = await filled_cache(tmp_path, 10 * KB, "lru", 2)
    os.rmdir(tmp_path / "tmp")
    (tmp_path / "tmp").write_bytes(b"")  # every write of the snapshot fails (as on a full disk)
    await cache.stop()  # logs, does not raise
    assert not (tmp_path / CLEAN_NAME).exists()
    os.unlink(tmp_path / "tmp")
    again = await open_cache(tmp_path, 10 * KB)
    assert again.rebuild is not None and not again.rebuild.clean and again.rebuild.unverified == 2
    assert (await again.get(blobs[0][0])).read() == blobs[0][1]
