"""Metric names and labels of reflector.md §6, read from real servers over real sockets."""

from __future__ import annotations

import aiohttp

from prism.app.metrics import Metrics, MetricsServer
from prism.http.server import HttpBlobServer
from prism.store.caching import CachingStore
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
