"""What a server's DHT node announces: the `Holdings` capability of the store chain, sd-head or all,
new blobs at once, deleted and evicted blobs no more (no sockets beyond the node's own UDP port)."""

from __future__ import annotations

import os
from pathlib import Path

from prism.app.cache_chain import build_cache_chain
from prism.app.dht import AnnouncingNode, DhtAnnounceOptions
from prism.app.metrics import Metrics
from prism.dht import messages as m
from prism.store.base import Holdings, holdings_in_chain
from prism.store.disk import DiskStore
from prism.store.disk_cache import DiskCacheStore
from prism.store.eviction import LRUPolicy
from prism.store.memory import HoldingsMemoryStore, MemoryStore
from prism.stream import encode_bytes
from tests.helpers import eventually, make_blob, running


def scheduled(node: AnnouncingNode) -> set[str]:
    assert node.node is not None and node.node.announcer is not None
    schedule = node.node.announcer.schedule
    return {k.hex() for k in schedule._due}


def contains(node: AnnouncingNode, blob_hash: str) -> bool:
    assert node.node is not None and node.node.announcer is not None
    return m.to_key(blob_hash) in node.node.announcer.schedule


def offline(announce: str = "sd-head") -> DhtAnnounceOptions:
    """A node with no seeds: it schedules announcements (and would send them once it has contacts)."""
    return DhtAnnounceOptions(port=0, seeds=[], announce=announce, host="127.0.0.1", allow_private_peers=True)


async def test_disk_store_and_disk_cache_report_what_they_hold(tmp_path: Path) -> None:
    events: list[tuple[str, bool]] = []
    disk = DiskStore(tmp_path / "d")
    assert isinstance(disk, Holdings)
    disk.watch_holdings(lambda h, held: events.append((h, held)))
    h, data = make_blob(1)
    await disk.put(h, data)
    await disk.delete(h)
    assert events == [(h, True), (h, False)]

    cache = DiskCacheStore(DiskStore(tmp_path / "c"), 2500, LRUPolicy())
    await cache.start()
    events.clear()
    cache.watch_holdings(lambda h, held: events.append((h, held)))
    blobs = [make_blob(i) for i in range(3)]  # 1,000 bytes each: the third evicts the first
    for bh, bd in blobs:
        await cache.put(bh, bd)
    assert (blobs[0][0], False) in events and (blobs[2][0], True) in events
    assert [h for h, held in events if held] == [bh for bh, _ in blobs]
    # the disk store under the cache is the cache's business; a plain MemoryStore holds nothing to announce
    assert holdings_in_chain(cache) == [cache]
    assert holdings_in_chain(MemoryStore()) == []
    assert holdings_in_chain(build_cache_chain(disk, mem_cache=5).store) == [disk]


async def test_sd_head_announces_sd_blobs_and_stream_heads_new_and_old(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "s")
    old_blobs, old = encode_bytes(os.urandom(5_000_000), "old.bin")
    for h, blob in old_blobs:
        store.write_blob(h, blob)
    store.write_blob(old.sd_hash, old.sd_bytes)
    async with running(AnnouncingNode(offline(), store, lambda: 5567)) as node:
        # held at start: the sd blob and the first content blob, not the others
        await eventually(lambda: contains(node, old.sd_hash), what="old sd blob scheduled")
        assert scheduled(node) == {old.sd_hash, old_blobs[0][0]}
        # a stream received (sd blob first, as protocol v1): each announced as it arrives
        new_blobs, new = encode_bytes(os.urandom(3_000_000), "new.bin")
        await store.put(new.sd_hash, new.sd_bytes)
        await eventually(lambda: contains(node, new.sd_hash), what="new sd blob scheduled")
        assert not contains(node, new_blobs[0][0])
        for h, blob in new_blobs:
            await store.put(h, blob)
        assert contains(node, new_blobs[0][0]) and not contains(node, new_blobs[1][0])
        assert node.node is not None and node.node.peer_port == 5567
        # deleted: no longer announced (the stream head with its sd blob)
        await store.delete(old.sd_hash)
        assert not contains(node, old.sd_hash) and not contains(node, old_blobs[0][0])
        metrics = Metrics()
        metrics.announcers.append(node)
        text = metrics.render().decode()
        assert "reflector_dht_announce_hashes 2" in text and "reflector_dht_routing_table_peers 0" in text
        assert "reflector_dht_announce_backlog 2" in text  # no contacts: nothing is sent


async def test_all_announces_every_blob_and_an_evicted_one_stops(tmp_path: Path) -> None:
    cache = DiskCacheStore(DiskStore(tmp_path / "c"), 2500, LRUPolicy())
    await cache.start()
    first = make_blob(1)
    await cache.put(*first)
    async with running(AnnouncingNode(offline("all"), cache, lambda: 3333)) as node:
        await eventually(lambda: contains(node, first[0]), what="held blob scheduled")
        second, third = make_blob(2), make_blob(3)
        await cache.put(*second)
        assert contains(node, second[0])
        await cache.put(*third)  # evicts the first
        assert contains(node, third[0]) and not contains(node, first[0])
    await cache.close()


async def test_prism_test_store_is_announced(tmp_path: Path) -> None:
    store = HoldingsMemoryStore()
    async with running(AnnouncingNode(offline("all"), store, lambda: 3333)) as node:
        h, data = make_blob(7)
        await store.put(h, data)
        assert contains(node, h)
        await store.delete(h)
        assert not contains(node, h)
