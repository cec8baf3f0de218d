"""A cache is best-effort (issue 18 item 4): a full cache disk fails nothing the origin accepted.

The cache directory is a real 8 MiB tmpfs (mounted here; the suite runs as root), so the
ENOSPC and the free-space figures are the kernel's own.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from prism.store import DiskStore
from prism.store.caching import CachingStore
from prism.store.disk_cache import DiskCacheStore
from prism.store.eviction import make_policy
from tests.helpers import make_blob

MIB = 1024 * 1024
TMPFS_BYTES = 8 * MIB
NO_WATCH = -(1 << 40)
"""A free margin so negative that every write looks as if it fits: the cache writes until ENOSPC."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted afterwards."""
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


async def open_cache(root: Path, free_margin: int) -> DiskCacheStore:
    capacity = 1 << 30  # the byte bookkeeping alone would never evict on an 8 MiB disk
    cache = DiskCacheStore(DiskStore(root), capacity, make_policy("lru", capacity), free_margin=free_margin)
    await cache.start()
    return cache


async def test_put_with_a_full_cache_disk_succeeds_and_is_counted(
    tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    origin = DiskStore(tmp_path / "origin")
    cache = await open_cache(small_disk, NO_WATCH)
    store = CachingStore(origin, cache)
    blobs = [make_blob(i, 2 * MIB) for i in range(6)]  # 12 MiB into 8
    with caplog.at_level(logging.WARNING, "prism.store.caching"):
        for h, data in blobs:
            await store.put(h, data)  # the origin accepted it: the cache's ENOSPC must not fail it
    assert all(os.path.exists(origin.path_of(h)) for h, _ in blobs)
    assert store.fill_errors >= 2 and store.snapshot().cache_write_errors == store.fill_errors
    failures = [r for r in caplog.records if "No space left" in r.getMessage()]
    assert len(failures) == 1  # once per interval, not once per blob
    assert os.listdir(cache.disk.tmp_dir) == []  # no half-written temp file left behind
    await store.close()


async def test_disk_cache_evicts_when_the_file_system_fills(small_disk: Path) -> None:
    margin = MIB
    cache = await open_cache(small_disk, margin)
    blobs = [make_blob(100 + i, MIB) for i in range(12)]  # 12 MiB into 8
    for h, data in blobs:
        await cache.put(h, data)
        assert cache.free_bytes() >= margin
    assert cache.evictions > 0 and await cache.has(blobs[-1][0])
    assert not await cache.has(blobs[0][0])  # the coldest went first
    await cache.stop()


async def test_disk_cache_stops_filling_when_others_fill_its_disk(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = await open_cache(small_disk, MIB)
    with open(small_disk / "someone-else", "wb") as f:  # not the cache's: nothing to evict
        f.write(b"\0" * (TMPFS_BYTES - MIB - MIB // 2))
    blobs = [make_blob(200 + i, MIB) for i in range(3)]
    with caplog.at_level(logging.WARNING, "prism.cache"):
        for h, data in blobs:
            await cache.put(h, data)
    assert cache.skipped_no_space == 3 and len(cache) == 0
    assert len([r for r in caplog.records if "nearly full" in r.getMessage()]) == 1
    await cache.stop()
