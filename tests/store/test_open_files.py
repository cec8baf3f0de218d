"""The open-file cache: its bookkeeping with a fake clock, and a DiskStore (and disk cache) using it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from prism.store import BlobNotFound, DiskStore
from prism.store.disk_cache import DiskCacheStore
from prism.store.eviction import make_policy
from prism.store.open_files import OpenFiles
from tests.conftest import prism_env
from tests.helpers import make_blob


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bookkeeping(capacity: int = 2, valid_for: float = 10.0) -> tuple[OpenFiles, Clock, list[int]]:
    clock, closed = Clock(), []
    return OpenFiles(capacity, valid_for, clock=clock, closer=closed.append), clock, closed


def test_a_descriptor_is_shared_and_closed_only_after_its_last_hold() -> None:
    files, _clock, closed = bookkeeping()
    assert files.get("a") is None
    first = files.add("a", 7, 1000)
    hit = files.get("a")
    assert hit is not None
    second, size = hit
    assert size == 1000 and first.fileno() == second.fileno() == 7
    files.forget("a")  # the file is being removed: no more holds on it ...
    assert files.get("a") is None and closed == []  # ... but the two readers keep reading
    first.close()
    first.close()  # (twice is once)
    assert closed == []
    second.close()
    assert closed == [7]
    with pytest.raises(ValueError):
        second.fileno()


def test_the_least_recently_used_goes_past_capacity() -> None:
    files, _clock, closed = bookkeeping(capacity=2)
    for fd, key in enumerate("abc", start=1):
        files.add(key, fd, 10).close()
        if key == "b":
            files.get("a")[0].close()  # type: ignore[index]  # a is used again: b is older
    assert closed == [2] and "a" in files and "c" in files and len(files) == 2


def test_an_entry_expires_and_the_path_is_opened_again() -> None:
    files, clock, closed = bookkeeping(valid_for=10.0)
    files.add("a", 3, 10).close()
    clock.now += 9.9
    hit = files.get("a")
    assert hit is not None
    hit[0].close()
    clock.now += 0.1
    assert files.get("a") is None and closed == [3]


def test_no_capacity_means_no_caching() -> None:
    files, _clock, closed = bookkeeping(capacity=0)
    held = files.add("a", 5, 10)
    assert files.get("a") is None and closed == []
    held.close()
    assert closed == [5]


def test_clear_closes_what_nobody_holds() -> None:
    files, _clock, closed = bookkeeping(capacity=4)
    files.add("a", 1, 10).close()
    held = files.add("b", 2, 10)
    files.clear()
    assert closed == [1] and len(files) == 0
    held.close()
    assert closed == [1, 2]


def test_holds_let_go_of_on_other_threads_close_each_descriptor_once() -> None:
    files, _clock, closed = bookkeeping(capacity=8)
    holds, opened = [], []
    for round_ in range(2000):
        key = f"k{round_ % 16}"
        hit = files.get(key)
        if hit is None:
            opened.append(round_)
            hit = (files.add(key, round_, 10), 10)
        holds.append(hit[0])
        if round_ % 7 == 0:
            files.forget(key)
    with ThreadPoolExecutor(8) as pool:  # as `BlobRef.read` in worker threads does
        list(pool.map(lambda hold: hold.close(), holds))
    files.clear()
    # Each descriptor closed once, and only once: a number closed twice may belong to another file.
    assert sorted(closed) == opened


def fds_open_on(path: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in (path, f"{path} (deleted)"):
            count += 1
    return count


async def test_a_disk_store_opens_a_hot_blob_once(tmp_path) -> None:
    store = DiskStore(tmp_path)
    h, data = make_blob(1, 5000)
    await store.put(h, data)
    refs = [await store.get(h) for _ in range(3)]
    assert fds_open_on(store.path_of(h)) == 1
    assert all(r.read() == data for r in refs)  # (reading one closes its hold, not the file)
    assert fds_open_on(store.path_of(h)) == 1  # kept for the next get


async def test_a_get_survives_a_delete_and_the_descriptor_closes_when_it_ends(tmp_path) -> None:
    store = DiskStore(tmp_path)
    h, data = make_blob(2, 5000)
    await store.put(h, data)
    reader = await store.get(h)
    await store.delete(h)
    assert store.get_now(h) is None  # gone at once for new gets ...
    assert reader.read() == data  # ... the open file keeps the bytes readable to a get in progress ...
    assert fds_open_on(store.path_of(h)) == 0  # ... and the deleted file's space comes back


async def test_a_file_removed_behind_the_stores_back_is_served_until_its_entry_expires(tmp_path) -> None:
    store = DiskStore(tmp_path)
    clock = Clock()
    store.open_files.clock = clock
    h, data = make_blob(3, 5000)
    await store.put(h, data)
    (await store.get(h)).close()
    os.unlink(store.path_of(h))  # another process (check-integrity, an operator)
    ref = store.get_now(h)
    assert ref is not None and ref.read() == data  # the same immutable bytes, for a while
    clock.now += store.open_files.valid_for
    assert store.get_now(h) is None
    with pytest.raises(BlobNotFound):
        await store.get(h)
    assert fds_open_on(store.path_of(h)) == 0


async def test_a_rewrite_replaces_the_cached_descriptor(tmp_path) -> None:
    store = DiskStore(tmp_path)
    h, data = make_blob(4, 5000)
    await store.put(h, data)
    (await store.get(h)).close()
    with open(store.path_of(h), "r+b") as f:  # bit rot in the file the descriptor points at
        f.write(b"\0" * 10)
    await store.put(h, data)  # a repair writes a new file under the name
    assert (await store.get(h)).read() == data


async def test_an_evicted_or_deleted_cached_blob_leaves_no_descriptor_behind(tmp_path) -> None:
    cache = DiskCacheStore(DiskStore(tmp_path), 3 * 100_000, make_policy("lru", 3 * 100_000))
    await cache.start()
    victim, vdata = make_blob(5, 100_000)
    await cache.put(victim, vdata)
    path = cache.disk.path_of(victim)
    (await cache.get(victim)).close()
    assert fds_open_on(path) == 1
    for i in range(3):
        await cache.put(*make_blob(10 + i, 100_000))
    assert not os.path.exists(path) and fds_open_on(path) == 0  # its space is free
    kept, _data = make_blob(12, 100_000)
    (await cache.get(kept)).close()
    await cache.delete(kept)  # as the blocklist does
    assert cache.get_now(kept) is None and cache.disk.get_now(kept) is None
    assert fds_open_on(cache.disk.path_of(kept)) == 0
    await cache.close()


def test_out_of_descriptors_the_cached_ones_make_room(tmp_path) -> None:
    """With the file limit reached, a get of a new blob closes the cached descriptors and succeeds."""
    script = textwrap.dedent(
        f"""
        import asyncio, os, resource
        from prism.store import DiskStore
        from tests.helpers import make_blob

        async def main():
            store = DiskStore({str(tmp_path)!r}, open_files=64)
            blobs = [make_blob(i, 100) for i in range(40)]
            for h, d in blobs:
                await store.put(h, d)
            for h, _d in blobs[:-1]:
                store.get_now(h).close()
            assert len(store.open_files) == 39
            top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            try:
                while True:  # fill every free number below the limit
                    os.open("/dev/null", os.O_RDONLY)
            except OSError:
                pass
            last, data = blobs[-1]
            ref = store.get_now(last)
            assert ref is not None and ref.read() == data
            assert len(store.open_files) == 1
            print("ok")

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=prism_env()
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
