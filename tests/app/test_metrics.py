"""Metric names and labels of reflector.md §6, read from real servers over real sockets."""

from __future__ import annotations

import aiohttp

from prism.app.metrics import Metrics, MetricsServer
from prism.http.server import HttpBlobServer
from prism.store.caching import CachingStore, drain_fills
from prism.store.http import HttpStore
from tests.helpers import CountingStore
from tests.http.helpers import stored_blob


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in metrics:\n{text[:3000]}")


async def test_counters_move_with_exact_names():
    origin = CountingStore()
    h, d = await stored_blob(origin, 4096)
    server = HttpBlobServer(origin, "127.0.0.1", 0)
    await server.start()
    upstream = HttpStore(f"127.0.0.1:{server.port}")
    metrics = Metrics()
    metrics.servers.append(server)
    metrics.stores.append(upstream)
    ms = MetricsServer(metrics, "127.0.0.1", 0)
    await ms.start()
    try:
        async with aiohttp.ClientSession() as s:
            before = await (await s.get(f"http://127.0.0.1:{ms.port}/metrics")).text()
            assert value(before, "reflector_http_out_bytes") == 0
            assert "reflector_http_out_bytes_total" not in before
            assert "# TYPE reflector_http_out_bytes counter" in before
            await upstream.get(h)
            await upstream.get(h)
            async with s.get(f"http://127.0.0.1:{server.port}/blob?hash=xyz") as r:
                assert r.status == 400
            after = await (await s.get(f"http://127.0.0.1:{ms.port}/metrics")).text()
        assert value(after, "reflector_http_out_bytes") == 2 * len(d)
        assert value(after, "reflector_http_in_bytes") == 2 * len(d)
        assert value(after, "reflector_http_blob_download_total") == 2
        assert value(after, "reflector_blob_download_total") == 2
        assert value(after, 'reflector_error_total{direction="download",error_type="invalid_blob_hash"}') == 1
        assert value(after, "reflector_http_blob_request_queue_size") == 0
        assert "process_cpu_seconds_total" in after
    finally:
        await upstream.close()
        await ms.stop()
        await server.stop()


def test_cache_layers_are_reported_per_cache_type_and_component():
    cache = CachingStore(CountingStore("http"), CountingStore("disk"), component="reflector")
    cache.hits, cache.misses = 3, 2
    m = Metrics()
    m.stores.append(cache)
    text = m.render().decode()
    assert value(text, 'reflector_cache_hit_total{cache_type="disk",component="reflector"}') == 3
    assert value(text, 'reflector_cache_miss_total{cache_type="disk",component="reflector"}') == 2


def labelled(text: str, series: str, layer: tuple[str, str]) -> float:
    """The sample of `series` for the cache whose (cache_type, component) is `layer`."""
    labels = f'{{cache_type="{layer[0]}",component="{layer[1]}"}}'
    for line in text.splitlines():
        if line.startswith(series + labels + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series}{labels} not in metrics:\n{text[:3000]}")


async def test_cache_size_gauges_move_as_caches_fill_and_evict(tmp_path):
    from prism.app.cache_chain import build_cache_chain
    from prism.store.memory import MemoryStore
    from tests.helpers import random_blob

    origin = MemoryStore()
    blobs = [random_blob(300_000) for _ in range(5)]
    for h, d in blobs:
        await origin.put(h, d)
    chain = build_cache_chain(origin, disk_cache=f"1MB:{tmp_path}/dc:lru", mem_cache=2)
    await chain.start()
    metrics = Metrics()
    metrics.stores.append(chain.store)
    ms = MetricsServer(metrics, "127.0.0.1", 0)
    await ms.start()
    disk, mem = [(c.snapshot().name, c.snapshot().component or "reflector") for c in chain.caches]
    try:
        async with aiohttp.ClientSession() as s:

            async def scrape() -> str:
                return await (await s.get(f"http://127.0.0.1:{ms.port}/metrics")).text()

            empty = await scrape()
            assert labelled(empty, "reflector_cache_size_bytes", disk) == 0
            assert labelled(empty, "reflector_cache_capacity_bytes", disk) == 1 << 20
            assert labelled(empty, "reflector_cache_capacity_blobs", mem) == 2
            for h, _d in blobs[:2]:
                (await chain.store.get(h)).close()
            await drain_fills(chain.store)
            two = await scrape()
            assert labelled(two, "reflector_cache_size_bytes", disk) == 600_000
            assert labelled(two, "reflector_cache_size_blobs", disk) == 2
            assert labelled(two, "reflector_cache_size_blobs", mem) == 2
            assert labelled(two, "reflector_cache_size_bytes", mem) == 600_000
            for h, _d in blobs[2:]:
                (await chain.store.get(h)).close()
            await drain_fills(chain.store)
            full = await scrape()
            assert labelled(full, "reflector_cache_size_bytes", disk) <= 1 << 20
            assert labelled(full, "reflector_cache_size_blobs", disk) < 5
            assert labelled(full, "reflector_cache_evict_total", disk) >= 2
            assert labelled(full, "reflector_cache_size_blobs", mem) == 2
    finally:
        await ms.stop()
        await chain.stop()
        await chain.store.close()
