"""The HTTP blob server over real sockets on 127.0.0.1 (reflector.md §4.4)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import aiohttp
import pytest

from prism.http.queue import RequestQueue
from prism.http.server import HttpBlobServer, HttpConnection
from prism.store.disk import DiskStore
from prism.store.trace import BlobTrace
from tests.helpers import (
    CountingStore,
    FailingStore,
    TricklingUpstream,
    blobcache_over,
    eventually,
    random_blob,
    running,
)
from tests.http.helpers import raw_request, stored_blob

MISSING = "ab" * 48


async def started(store, **kw) -> HttpBlobServer:
    server = HttpBlobServer(store, "127.0.0.1", 0, **kw)
    await server.start()
    return server


def serving(store, **kw) -> contextlib.AbstractAsyncContextManager[HttpBlobServer]:
    return running(HttpBlobServer(store, "127.0.0.1", 0, **kw))


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_get_from_disk_store_uses_sendfile_and_sets_headers(tmp_path, session):
    store = DiskStore(tmp_path)
    h, data = await stored_blob(store, 2 * 1024 * 1024)
    async with serving(store) as server:
        async with session.get(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
            body = await r.read()
            assert r.status == 200
            assert body == data
            assert r.headers["Content-Length"] == str(len(data))
            assert r.headers["ETag"] == f'"{h}"'
            assert "immutable" in r.headers["Cache-Control"]
            assert r.headers["Content-Type"] == "application/octet-stream"
            assert r.headers["Content-Disposition"] == f"filename={h}"
            trace = BlobTrace.from_json(r.headers["Via"])
            assert [s.origin_name for s in trace.stacks] == ["disk"]
        assert server.stats.bytes_out == len(data)
        assert server.stats.downloads == 1


async def test_get_memory_blob_keep_alive_many_requests(session):
    store = CountingStore()
    blobs = [random_blob(1000 + i) for i in range(5)]
    for h, d in blobs:
        await store.put(h, d)
    async with serving(store) as server:
        for _ in range(3):
            for h, d in blobs:
                async with session.get(f"http://127.0.0.1:{server.port}/blob", params={"hash": h}) as r:
                    assert r.status == 200
                    assert await r.read() == d
        assert len(server.connections) == 1  # one keep-alive connection did it all


@pytest.mark.parametrize("bad", ["", "xyz", "AB" * 48, "ab" * 47, "../../etc/passwd", "g" * 96])
async def test_invalid_hash_is_400_and_never_reaches_the_store(session, bad):
    store = CountingStore()
    async with serving(store) as server:
        async with session.get(f"http://127.0.0.1:{server.port}/blob", params={"hash": bad}) as r:
            assert r.status == 400
        async with session.head(f"http://127.0.0.1:{server.port}/blob", params={"hash": bad}) as r:
            assert r.status == 400
        assert store.gets == 0 and store.hass == 0


async def test_missing_blob_is_404_with_via_and_then_negative_cached(session):
    store = CountingStore()
    async with serving(store) as server:
        for _ in range(3):
            async with session.get(f"http://127.0.0.1:{server.port}/blob?hash={MISSING}") as r:
                assert r.status == 404
                assert await r.read() == b""
                BlobTrace.from_json(r.headers["Via"])
        assert store.gets == 1


async def test_head_is_204_or_404_and_500_on_store_error(session):
    store = CountingStore()
    h, _ = await stored_blob(store, 10)
    server = await started(store)
    bad = await started(FailingStore())
    try:
        async with session.head(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
            assert r.status == 204
        async with session.head(f"http://127.0.0.1:{server.port}/blob?hash={MISSING}") as r:
            assert r.status == 404
        async with session.head(f"http://127.0.0.1:{bad.port}/blob?hash={h}") as r:
            assert r.status == 500
        async with session.get(f"http://127.0.0.1:{bad.port}/blob?hash={h}") as r:
            assert r.status == 500
            assert await r.text() == "internal error\n"  # the detail stays in the log (issue 18 item 7)
        assert bad.stats.errors["other"] >= 1
    finally:
        await server.stop()
        await bad.stop()


@pytest.mark.parametrize("on_disk", [False, True])
async def test_range_requests(tmp_path, session, on_disk):
    store = DiskStore(tmp_path) if on_disk else CountingStore()
    h, d = await stored_blob(store, 50_000)
    server = await started(store)
    url = f"http://127.0.0.1:{server.port}/blob?hash={h}"
    try:
        async with session.get(url, headers={"Range": "bytes=100-199"}) as r:
            assert r.status == 206
            assert await r.read() == d[100:200]
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(d)}"
        async with session.get(url, headers={"Range": "bytes=-10"}) as r:
            assert r.status == 206
            assert await r.read() == d[-10:]
        async with session.get(url, headers={"Range": "bytes=49990-"}) as r:
            assert await r.read() == d[49990:]
        async with session.get(url, headers={"Range": "bytes=60000-"}) as r:
            assert r.status == 416
            assert r.headers["Content-Range"] == f"bytes */{len(d)}"
        async with session.get(url, headers={"If-None-Match": f'"{h}"'}) as r:
            assert r.status == 304
    finally:
        await server.stop()


async def test_protected_blob_needs_the_edge_token(session):
    store = CountingStore()
    h, d = await stored_blob(store, 100)

    async def protected(blob_hash: str) -> bool:
        return blob_hash == h

    server = await started(store, protected=protected, edge_token="s3cret")
    url = f"http://127.0.0.1:{server.port}/blob?hash={h}"
    try:
        async with session.get(url) as r:
            assert r.status == 403
            assert await r.text() == "requested blob is protected"
        async with session.get(url + "&edge_token=wrong") as r:
            assert r.status == 403
        async with session.get(url + "&edge_token=s3cret") as r:
            assert r.status == 200 and await r.read() == d
    finally:
        await server.stop()


async def test_queue_bounds_work_and_refuses_with_503_beyond_the_wait_limit(session):
    store = CountingStore(get_delay=0.3)
    blobs = [random_blob(100 + i) for i in range(6)]
    for h, d in blobs:
        await store.put(h, d)
    queue = RequestQueue(workers=2, max_waiting=2)
    server = await started(store, queue=queue)
    seen_active = []

    async def one(h):
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
                seen_active.append(queue.active)
                return r.status

    try:
        statuses = await asyncio.gather(*(one(h) for h, _ in blobs))
        assert sorted(statuses) == [200, 200, 200, 200, 503, 503]
        assert max(seen_active) <= 2
        assert queue.active == 0 and queue.waiting == 0
    finally:
        await server.stop()


async def test_slow_reader_times_out_and_frees_its_slot():
    store = CountingStore()
    big_h, big = await stored_blob(store, 2 * 1024 * 1024)
    queue = RequestQueue(workers=1, max_waiting=0)
    async with serving(store, queue=queue, send_timeout=0.5) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Ask for many blobs and never read: the send stalls once the buffers are full.
        sock.sendall(f"GET /blob?hash={big_h} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 8)
        await asyncio.sleep(1.5)
        assert queue.active == 0
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{server.port}/blob?hash={big_h}") as r:
                assert r.status == 200 and await r.read() == big
        sock.close()


async def test_client_disconnecting_mid_blob_frees_its_slot(tmp_path):
    store = DiskStore(tmp_path)
    h, d = await stored_blob(store, 2 * 1024 * 1024)
    queue = RequestQueue(workers=1, max_waiting=0)
    async with serving(store, queue=queue) as server:
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode() * 4)
            assert (await reader.readexactly(1000)).startswith(b"HTTP/1.1 200 ")
            writer.transport.abort()
            for _ in range(100):  # the server notices within a few event-loop turns
                if queue.active == 0:
                    break
                await asyncio.sleep(0.01)
            assert queue.active == 0
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
                assert await r.read() == d


async def test_thousand_idle_connections_do_not_block_a_get():
    store = CountingStore()
    h, d = await stored_blob(store, 1000)
    server = await started(store)
    idle = []
    try:
        for _ in range(1000):
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
        # Half of them are mid-request: a partial head, never finished.
        for _r, w in idle[::2]:
            w.write(b"GET /blob?hash=")
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
                assert r.status == 200 and await r.read() == d
        assert len(server.connections) >= 1000
    finally:
        for _r, w in idle:
            w.close()
        await server.stop()


async def test_idle_connections_are_closed_after_the_idle_timeout():
    async with serving(CountingStore(), idle_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /blob?ha")
        assert await asyncio.wait_for(reader.read(), 3) == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /blob HTTP/2.0\r\n\r\n", 505),
        (b"POST /blob?hash=" + MISSING.encode() + b" HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"GET /blob HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET /other HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
        (b"DELETE /blob?hash=" + MISSING.encode() + b" HTTP/1.1\r\nConnection: close\r\n\r\n", 405),
        (b"GET /other HTTP/1.1\nConnection: close\n\n", 404),  # bare LF: answered, as nginx does
        ("GET /blob HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode(), 400),
        (b"GET /blob HTTP/1.1\r\nContent-Length: " + b"7" * 5000 + b"\r\n\r\n", 413),
    ],
)
async def test_bad_requests_get_clear_errors(request_bytes, status):
    async with serving(CountingStore()) as server:
        answer = await raw_request(server.port, request_bytes)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:100]


async def test_stop_lets_a_transfer_in_flight_finish():
    store = CountingStore(get_delay=0.3)
    h, d = await stored_blob(store, 500_000)
    server = await started(store)

    async def fetch():
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
                return r.status, await r.read()

    task = asyncio.create_task(fetch())
    await asyncio.sleep(0.1)
    await server.stop(grace=5)
    status, body = await task
    assert status == 200 and body == d
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


class CountingDisk(DiskStore):
    """A real DiskStore that counts which way each lookup came."""

    def __init__(self, root) -> None:  # type: ignore[no-untyped-def]
        super().__init__(root)
        self.now_calls = 0
        self.get_calls = 0

    def get_now(self, blob_hash: str):  # type: ignore[no-untyped-def]
        self.now_calls += 1
        return super().get_now(blob_hash)

    async def get(self, blob_hash: str):  # type: ignore[no-untyped-def]
        self.get_calls += 1
        return await super().get(blob_hash)


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def test_a_hit_is_answered_at_once_and_a_miss_the_long_way(tmp_path, session):
    store = CountingDisk(tmp_path)
    h, d = await stored_blob(store, 5000)
    async with serving(store) as server:
        async with session.get(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
            assert r.status == 200 and await r.read() == d
            assert [s.origin_name for s in BlobTrace.from_json(r.headers["Via"]).stacks] == ["disk"]
        assert (store.now_calls, store.get_calls) == (1, 0)
        async with session.get(f"http://127.0.0.1:{server.port}/blob?hash={MISSING}") as r:
            assert r.status == 404
        assert (store.now_calls, store.get_calls) == (3, 1)  # the long way asks get_now first too
        async with session.head(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
            assert r.status == 204
        assert server.stats.downloads == 1 and server.queue.active == 0


async def slow_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose small receive buffer keeps a large answer from going out at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def test_a_hit_the_socket_cannot_take_at_once_finishes_then_the_next_request_is_served(tmp_path):
    store = CountingDisk(tmp_path)
    big_h, big = await stored_blob(store, 24 * 1024 * 1024)  # more than the socket buffers hold
    small_h, small = await stored_blob(store, 100)
    async with serving(store) as server:
        reader, writer = await slow_client(server.port)
        writer.write(f"GET /blob?hash={big_h} HTTP/1.1\r\n\r\n".encode())
        await asyncio.sleep(0.3)  # the server's socket fills: the rest waits for the client
        conn = next(iter(server.connections))
        assert conn.busy and server.queue.active == 1
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and body == big
        writer.write(f"GET /blob?hash={small_h} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        head, body = await read_answer(reader)
        assert body == small and b"Connection: close" in head
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert store.get_calls == 0 and server.stats.downloads == 2 and server.queue.active == 0


async def test_a_connection_in_use_outlives_the_idle_timeout(tmp_path):
    store = DiskStore(tmp_path)
    h, d = await stored_blob(store, 1000)
    async with serving(store, idle_timeout=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(8):  # 0.8 s of requests 0.1 s apart on one connection
            writer.write(f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode())
            assert (await read_answer(reader))[1] == d
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(reader.read(), 3) == b""  # then closed once idle
        writer.close()


async def test_a_protected_blob_on_disk_still_needs_the_edge_token(tmp_path, session):
    store = CountingDisk(tmp_path)
    h, d = await stored_blob(store, 100)

    async def protected(blob_hash: str) -> bool:
        return blob_hash == h

    async with serving(store, protected=protected, edge_token="s3cret") as server:
        url = f"http://127.0.0.1:{server.port}/blob?hash={h}"
        async with session.get(url) as r:
            assert r.status == 403
        async with session.get(url + "&edge_token=s3cret") as r:
            assert r.status == 200 and await r.read() == d
        assert store.now_calls == 1  # only the request with the token reached the store


def open_files() -> set[str]:
    """What this process's descriptors point at."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
    return found


async def test_a_connection_lost_before_its_unfinished_answer_runs_frees_the_slot_and_the_file(tmp_path):
    store = DiskStore(tmp_path, open_files=0)  # no descriptor cache: the file closes with its hold
    h, _d = await stored_blob(store, 24 * 1024 * 1024)
    async with serving(store) as server:
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        accepted, _ = listener.accept()
        listener.close()
        transport, conn = await asyncio.get_running_loop().connect_accepted_socket(
            lambda: HttpConnection(server), accepted
        )
        request = f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode()
        server.scratch[: len(request)] = request
        conn.buffer_updated(len(request))  # the socket takes part of it: the rest goes on later
        assert store.path_of(h) in open_files()
        assert conn.busy and server.queue.active == 1
        # The kernel reports the loss in the same turn of the loop, before any writable edge.
        transport.abort()
        conn.connection_lost(ConnectionResetError())
        for _ in range(100):
            if server.queue.active == 0 and not conn.busy:
                break
            await asyncio.sleep(0.01)
        assert server.queue.active == 0 and not conn.busy
        assert store.path_of(h) not in open_files()  # the blob file is closed
        client.close()


async def test_requests_pipelined_behind_an_answer_going_out_in_the_background_follow_it(tmp_path):
    store = CountingDisk(tmp_path)
    big_h, big = await stored_blob(store, 24 * 1024 * 1024)
    small_h, small = await stored_blob(store, 100)
    async with serving(store) as server:
        reader, writer = await slow_client(server.port)
        writer.write(f"GET /blob?hash={big_h} HTTP/1.1\r\n\r\n".encode())
        await asyncio.sleep(0.3)
        conn = next(iter(server.connections))
        assert conn.sending and conn.task is None  # no task: the rest goes from writable edges
        writer.write(f"GET /blob?hash={small_h} HTTP/1.1\r\n\r\n".encode())
        writer.write(f"GET /blob?hash={MISSING} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        assert (await read_answer(reader))[1] == big
        assert (await read_answer(reader))[1] == small
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 404 ")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert server.stats.downloads == 2 and server.queue.active == 0


async def test_a_hit_whose_client_stops_reading_times_out_and_frees_its_slot(tmp_path):
    store = DiskStore(tmp_path, open_files=0)  # no descriptor cache: the file closes with its hold
    h, _d = await stored_blob(store, 24 * 1024 * 1024)
    async with serving(store, send_timeout=0.5) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode())
        await asyncio.sleep(0.2)
        assert server.queue.active == 1
        for _ in range(300):
            if server.queue.active == 0 and not server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.queue.active == 0 and not server.connections
        assert store.path_of(h) not in open_files()
        assert sum(server.stats.snapshot().errors.values()) == 1
        sock.close()


async def test_stop_waits_for_an_answer_going_out_in_the_background(tmp_path):
    store = DiskStore(tmp_path)
    h, d = await stored_blob(store, 24 * 1024 * 1024)
    server = HttpBlobServer(store, "127.0.0.1", 0)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode())
    for _ in range(500):
        if server.queue.active:
            break
        await asyncio.sleep(0.01)
    assert server.queue.active == 1
    stopping = asyncio.ensure_future(server.stop(grace=10))
    assert (await read_answer(reader))[1] == d  # the answer in progress finishes
    await asyncio.wait_for(stopping, 10)
    assert server.queue.active == 0
    writer.close()


@contextlib.asynccontextmanager
async def caching_upstream(blobs: dict[str, bytes]):
    """A blobcache over a stand-in upstream that sends each body in two halves
    (`TricklingUpstream`): (server, upstream, cache)."""
    upstream = TricklingUpstream(blobs)
    await upstream.start()
    store, cache = blobcache_over(upstream)
    try:
        async with serving(store) as server:
            yield server, upstream, cache
    finally:
        await store.close()
        await upstream.stop()


async def test_a_miss_streams_to_the_client_as_it_arrives_and_is_cached_once_verified():
    h, d = random_blob(1_500_000)
    async with caching_upstream({h: d}) as (server, upstream, cache):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {len(d)}".encode() in head
        first = await asyncio.wait_for(reader.readexactly(len(d) // 2), 5)  # before the upstream is done
        assert first == d[: len(d) // 2] and h not in cache.blobs
        # A second client of the same hash meanwhile shares the arrival: one upstream request.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", server.port)
        writer2.write(f"GET /blob?hash={h} HTTP/1.1\r\nRange: bytes=10-19\r\n\r\n".encode())
        await asyncio.sleep(0.1)
        upstream.gate.set()
        rest = await asyncio.wait_for(reader.readexactly(len(d) - len(d) // 2), 5)
        assert first + rest == d
        head2 = await asyncio.wait_for(reader2.readuntil(b"\r\n\r\n"), 5)
        assert head2.startswith(b"HTTP/1.1 206 ") and await reader2.readexactly(10) == d[10:20]
        await eventually(lambda: h in cache.blobs)
        assert upstream.requests[h] == 1 and server.stats.downloads == 2
        writer.write(f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode())  # the same connection goes on
        head, body = await read_answer(reader)
        assert body == d and upstream.requests[h] == 1
        writer.close()
        writer2.close()


async def test_a_miss_that_fails_verification_aborts_the_client_and_caches_nothing():
    h, d = random_blob(1_000_000)
    async with caching_upstream({h: d}) as (server, upstream, cache):
        upstream.sent[h] = d[:-1] + bytes([d[-1] ^ 1])
        upstream.gate.set()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /blob?hash={h} HTTP/1.1\r\n\r\nGET /blob?hash={h} HTTP/1.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        got = await asyncio.wait_for(reader.read(), 5)  # to the end: the server aborted
        assert len(got) < len(d) and d.startswith(got)  # a short body, never a whole wrong one
        writer.close()
        await asyncio.sleep(0.05)
        assert h not in cache.blobs and server.stats.downloads == 0
        upstream.sent.pop(h)
        async with aiohttp.ClientSession() as session:  # the next request asks the upstream again
            async with session.get(f"http://127.0.0.1:{server.port}/blob?hash={h}") as r:
                assert r.status == 200 and await r.read() == d
        assert upstream.requests[h] == 2
        await eventually(lambda: h in cache.blobs)


async def test_a_client_that_leaves_mid_stream_does_not_stop_the_fill():
    h, d = random_blob(1_500_000)
    async with caching_upstream({h: d}) as (server, upstream, cache):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /blob?hash={h} HTTP/1.1\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.wait_for(reader.readexactly(1000), 5)
        writer.transport.abort()  # gone before the blob is in
        await eventually(lambda: not server.connections)
        upstream.gate.set()
        await eventually(lambda: h in cache.blobs)  # verified and cached all the same
        assert cache.blobs[h] == d and upstream.requests[h] == 1 and server.queue.active == 0
