"""Upstream stores (http, http3, origin endpoint) against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web

from prism.http.h3server import Http3BlobServer
from prism.http.server import HttpBlobServer
from prism.store.base import BlobNotFound, BlobStore, ReadOnlyStoreError, StoreError, arrived
from prism.store.http import HttpStore
from prism.store.http3 import Http3Store
from prism.store.origin_endpoint import OriginEndpointStore
from prism.store.upstream import UpstreamDataError
from tests.helpers import CountingStore, TricklingUpstream, eventually, random_blob

MISSING = "cd" * 48


async def origin_holding(size: int) -> tuple[CountingStore, str, bytes]:
    """A memory origin holding one blob of `size` bytes: (origin, hash, bytes)."""
    origin = CountingStore()
    h, d = random_blob(size)
    await origin.put(h, d)
    return origin, h, d


async def assert_reads(store: BlobStore, h: str, d: bytes, via: list[str]) -> None:
    """`store` serves blob `h` (bytes `d`, trace `via`), and knows MISSING is missing."""
    with await store.get(h) as ref:
        assert ref.read() == d
        assert [s.origin_name for s in ref.trace.stacks] == via
    assert await store.has(h) is True
    assert await store.has(MISSING) is False
    with pytest.raises(BlobNotFound):
        await store.get(MISSING)


async def test_http_store_gets_verifies_and_extends_via():
    origin, h, d = await origin_holding(300_000)
    server = HttpBlobServer(origin, "127.0.0.1", 0)
    await server.start()
    store = HttpStore(f"127.0.0.1:{server.port}")
    try:
        await assert_reads(store, h, d, ["mem", "http"])
        with pytest.raises(ReadOnlyStoreError):
            await store.put(h, d)
    finally:
        await store.close()
        await server.stop()


async def test_http_store_passes_the_edge_token():
    origin, h, d = await origin_holding(100)

    async def protected(_h: str) -> bool:
        return True

    server = HttpBlobServer(origin, "127.0.0.1", 0, protected=protected, edge_token="tok")
    await server.start()
    good = HttpStore(f"127.0.0.1:{server.port}", edge_token="tok")
    bad = HttpStore(f"127.0.0.1:{server.port}")
    try:
        assert (await good.get(h)).read() == d
        with pytest.raises(Exception, match="403"):
            await bad.get(h)
    finally:
        await good.close()
        await bad.close()
        await server.stop()


async def lying_server(payload: bytes) -> web.AppRunner:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, headers={"Via": "1.1 some-cdn"})

    app = web.Application()
    app.router.add_get("/blob", handler)
    app.router.add_get("/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def runner_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


async def test_http_store_rejects_bytes_that_do_not_match_the_hash():
    h, _ = random_blob(1000)
    runner = await lying_server(b"not the blob")
    store = HttpStore(f"127.0.0.1:{runner_port(runner)}")
    try:
        with pytest.raises(UpstreamDataError):
            await store.get(h)
    finally:
        await store.close()
        await runner.cleanup()


async def test_http3_store_one_connection_many_concurrent_requests():
    origin = CountingStore()
    blobs = [random_blob(200_000 + i) for i in range(20)]
    for h, d in blobs:
        await origin.put(h, d)
    server = Http3BlobServer(origin, "127.0.0.1", 0)
    await server.start()
    store = Http3Store(f"127.0.0.1:{server.port}", timeout=10)
    try:
        refs = await asyncio.gather(*(store.get(h) for h, _ in blobs))
        for ref, (h, d) in zip(refs, blobs, strict=True):
            assert ref.hash == h and ref.read() == d
            assert [s.origin_name for s in ref.trace.stacks] == ["mem", "http3"]
        assert store.client.connects == 1
        assert server.stats.downloads == 20
        await assert_reads(store, *blobs[0], ["mem", "http3"])
        assert store.client.connects == 1
    finally:
        await store.close()
        await server.stop()


async def test_http3_server_protected_and_bad_hash():
    origin, h, _d = await origin_holding(100)

    async def protected(x: str) -> bool:
        return x == h

    server = Http3BlobServer(origin, "127.0.0.1", 0, protected=protected)
    await server.start()
    store = Http3Store(f"127.0.0.1:{server.port}", timeout=10)
    try:
        r = await store.client.get(f"/get/{h}")
        assert (r.status, r.body) == (403, b"requested blob is protected")
        r = await store.client.get("/get/xyz")
        assert r.status == 400
        r = await store.client.get(f"/has/{h}")
        assert r.status == 200 and b'"is_available":true' in r.body
        assert origin.gets == 0
    finally:
        await store.close()
        await server.stop()


async def test_http3_store_reconnects_after_the_server_restarts():
    origin, h, d = await origin_holding(1000)
    server = Http3BlobServer(origin, "127.0.0.1", 0)
    await server.start()
    port = server.port
    store = Http3Store(f"127.0.0.1:{port}", timeout=3)
    try:
        assert (await store.get(h)).read() == d
        await server.stop()
        with pytest.raises(Exception):  # noqa: B017 - a timeout or a closed connection
            await store.get(h)
        server = Http3BlobServer(origin, "127.0.0.1", port)
        await server.start()
        for _ in range(3):
            try:
                assert (await store.get(h)).read() == d
                break
            except Exception:
                await asyncio.sleep(0.2)
        else:
            pytest.fail("did not reconnect")
    finally:
        await store.close()
        await server.stop()


async def test_origin_endpoint_alone_and_with_fallback():
    h, d = random_blob(5000)
    blobs = {h: d}

    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in blobs:
            return web.Response(body=blobs[name])
        return web.Response(status=403)

    app = web.Application()
    app.router.add_route("*", "/cdn/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    liar = await lying_server(b"garbage")
    good = f"http://127.0.0.1:{runner_port(runner)}/cdn/"
    bad = f"http://127.0.0.1:{runner_port(liar)}/"
    alone = OriginEndpointStore(good)
    with_fallback = OriginEndpointStore(bad, fallback=good)
    try:
        assert (await alone.get(h)).read() == d
        assert await alone.has(h) is True
        assert await alone.has(MISSING) is False
        with pytest.raises(BlobNotFound):
            await alone.get(MISSING)
        ref = await with_fallback.get(h)  # the first endpoint lies, the fallback is right
        assert ref.read() == d
        assert with_fallback.hits == [0, 1]
        with pytest.raises(ReadOnlyStoreError):
            await alone.delete(h)
        with pytest.raises(ValueError):
            OriginEndpointStore("ftp://x/")
    finally:
        await alone.close()
        await with_fallback.close()
        await runner.cleanup()
        await liar.cleanup()


async def test_http3_stop_lets_a_request_in_flight_finish():
    origin = CountingStore(held=True)
    h, d = random_blob(1_500_000)
    await origin.put(h, d)
    server = Http3BlobServer(origin, "127.0.0.1", 0)
    await server.start()
    store = Http3Store(f"127.0.0.1:{server.port}", timeout=10)
    try:
        task = asyncio.create_task(store.get(h))
        await origin.until_parked()  # the request is in flight

        async def release() -> None:  # runs once stop() is waiting for the request
            origin.release.set()

        await asyncio.gather(server.stop(grace=5), release())
        ref = await task
        assert ref.read() == d
    finally:
        await store.close()


async def test_http_store_reuses_a_body_buffer_only_once_its_blob_is_dropped():
    origin = CountingStore()
    blobs = [random_blob(1_900_000 + i) for i in range(3)]
    for h, d in blobs:
        await origin.put(h, d)
    server = HttpBlobServer(origin, "127.0.0.1", 0)
    await server.start()
    store = HttpStore(f"127.0.0.1:{server.port}")
    try:
        first = await store.get(blobs[0][0])
        second = await store.get(blobs[1][0])
        assert first.data is not second.data and store.bodies.reused == 0
        assert first.read() == blobs[0][1] and second.read() == blobs[1][1]
        kept = second.data
        del first
        third = await store.get(blobs[2][0])  # reuses the first blob's buffer, resized
        assert store.bodies.reused == 1 and third.read() == blobs[2][1]
        assert second.read() == blobs[1][1] and second.data is kept
    finally:
        await store.close()
        await server.stop()


@contextlib.asynccontextmanager
async def over_trickling(blobs: dict[str, bytes], request_timeout: float = 30.0):
    """An HttpStore over a stand-in upstream that sends each body in two halves: (upstream, store)."""
    upstream = TricklingUpstream(blobs)
    await upstream.start()
    store = HttpStore(f"127.0.0.1:{upstream.port}", timeout=request_timeout)
    try:
        yield upstream, store
    finally:
        await store.close()
        await upstream.stop()


async def test_http_store_hands_a_blob_on_while_it_arrives_and_hashes_it_as_it_comes() -> None:
    h, d = random_blob(1_500_000)
    async with over_trickling({h: d}) as (upstream, store):
        ref = await asyncio.wait_for(store.get_arriving(h), 5)
        arrival = ref.arrival
        assert arrival is not None and ref.size == len(d)
        await eventually(lambda: arrival.received >= len(d) // 2)
        assert not arrival.done and store.bytes_in == 0
        assert bytes(arrival.buffer[: arrival.sendable]) == d[: arrival.sendable]
        upstream.gate.set()
        whole = await asyncio.wait_for(arrived(ref), 5)
        assert whole.read() == d and store.bytes_in == len(d)
        assert (await store.get(h)).read() == d  # `get` is the whole blob, as before


async def test_an_arriving_blob_that_does_not_hash_to_its_name_fails_and_get_raises() -> None:
    h, d = random_blob(1_000_000)
    async with over_trickling({h: d}) as (upstream, store):
        upstream.sent[h] = d[:-1] + bytes([d[-1] ^ 1])  # the very last byte is wrong
        upstream.gate.set()
        ref = await store.get_arriving(h)
        with pytest.raises(UpstreamDataError, match="sent bad data"):
            await arrived(ref)
        assert ref.arrival is not None and ref.arrival.sendable < len(d)  # the last byte never went on
        with pytest.raises(UpstreamDataError):
            await store.get(h)
        assert store.bytes_in == 0


async def test_an_upstream_that_hangs_up_mid_body_fails_the_arrival() -> None:
    h, d = random_blob(1_000_000)
    async with over_trickling({h: d}, request_timeout=5) as (upstream, store):
        upstream.cut.add(h)
        ref = await store.get_arriving(h)
        with pytest.raises(StoreError, match="closed after"):
            await asyncio.wait_for(arrived(ref), 5)


async def test_a_body_that_stalls_past_the_timeout_fails_the_arrival() -> None:
    h, d = random_blob(1_000_000)
    async with over_trickling({h: d}, request_timeout=0.5) as (upstream, store):  # the gate stays shut
        ref = await store.get_arriving(h)
        with pytest.raises(StoreError, match="no answer within"):
            await asyncio.wait_for(arrived(ref), 5)
        upstream.gate.set()
        h2, d2 = random_blob(200_000)
        upstream.blobs[h2] = d2
        assert (await store.get(h2)).read() == d2  # the pool is fine afterwards
