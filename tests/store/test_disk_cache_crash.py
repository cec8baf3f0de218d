"""A `prism reflector` blobcache killed with SIGKILL in the middle of cache fills, restarted.

Cache files are not fsynced (the origin keeps the blobs), so after a crash or a power loss a
cached file may be short or hold garbage. The test kills the process while fills are in flight,
then damages two cached files as a power loss could, and restarts it: the cache starts cold
(no clean-shutdown mark), hashes each file on its first read, serves the good ones, and fetches
the damaged ones from the origin again. A clean stop afterwards makes the next start warm.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import pytest

from prism.http.server import HttpBlobServer
from prism.store.disk_cache import CLEAN_NAME
from tests.app.test_reflector_e2e import Node, http_get
from tests.helpers import CountingStore, random_blobs

pytestmark = pytest.mark.slow


async def fetch(session: aiohttp.ClientSession, node: Node, h: str) -> bytes | None:
    try:
        async with session.get(f"http://127.0.0.1:{node.http}/blob", params={"hash": h}) as r:
            return await r.read() if r.status == 200 else None
    except aiohttp.ClientError:
        return None


def cached_path(cache_dir: Path, h: str) -> Path:
    return cache_dir / h[:2] / h


async def test_kill_9_mid_fill_then_restart_trusts_files_only_after_hashing(tmp_path: Path) -> None:
    origin_store = CountingStore("origin", get_delay=0.01)
    blobs = random_blobs(24, 256 * 1024)
    for h, data in blobs.items():
        await origin_store.put(h, data)
    origin = HttpBlobServer(origin_store, "127.0.0.1", 0)
    await origin.start()
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"protected_list_url": ""}))
    cache_dir = tmp_path / "cache"
    flags = ["--disable-uploads", "--upstream-reflector", f"127.0.0.1:{origin.port}"]
    flags += ["--upstream-protocol", "http", "--disk-cache", f"1GB:{cache_dir}:lru"]
    node = Node("blobcache", tmp_path, conf, *flags)
    hashes = list(blobs)
    try:
        node.start()
        async with aiohttp.ClientSession() as session:
            for h in hashes[:8]:
                assert (await http_get(session, node, h))[0] == blobs[h]
            origin_store.release.clear()
            inflight = [asyncio.create_task(fetch(session, node, h)) for h in hashes[8:]]
            await asyncio.wait_for(origin_store.until_parked(8), 30)
            origin_store.release.set()
            await asyncio.sleep(0.03)  # some of the fills are being written now
            node.kill()  # SIGKILL while the other fills are under way
            await asyncio.gather(*inflight)
        assert not (cache_dir / CLEAN_NAME).exists()
        # What a power loss can leave of files written without fsync: one short, one garbage.
        short, garbage = hashes[0], hashes[1]
        os.truncate(cached_path(cache_dir, short), 1000)
        with open(cached_path(cache_dir, garbage), "r+b") as f:
            f.write(os.urandom(4096))
        gets_before = origin_store.gets

        node.start()
        async with aiohttp.ClientSession() as session:
            for h in hashes:
                assert (await http_get(session, node, h))[0] == blobs[h]
        refetched = origin_store.gets - gets_before
        assert node.stop() == 0
        log = node.log.read_text()
        assert log.count("removing corrupt cached blob") == 2, log[-3000:]
        assert "cold start" in log and "Traceback" not in log
        # Both damaged blobs came from the origin again (so did those the kill interrupted),
        # and the cache holds them whole now.
        assert 2 <= refetched <= 2 + len(hashes) - 8
        for h in (short, garbage):
            assert cached_path(cache_dir, h).read_bytes() == blobs[h]
        assert (cache_dir / CLEAN_NAME).exists()

        node.start()  # after a clean stop: warm, nothing to hash again
        async with aiohttp.ClientSession() as session:
            assert (await http_get(session, node, hashes[5]))[0] == blobs[hashes[5]]
        assert node.stop() == 0
        assert "warm start" in node.log.read_text()
    finally:
        node.kill()
        await origin.stop(0.1)
