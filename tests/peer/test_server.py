"""PeerServer on real sockets (127.0.0.1): byte-exact answers, keep-alive, limits, bad input."""

import asyncio
import logging
import socket

import pytest

from prism.blob import sha384_hex
from prism.peer.client import PeerClient
from prism.peer.protocol import GO_HEADER_LIMIT, encode_found_header, encode_request
from prism.store.base import BlobRef, StoreError
from prism.store.memory import MemoryStore
from tests.helpers import TricklingUpstream, blobcache_over, eventually, random_blob, random_blobs
from tests.peer.helpers import RawConnection, disk_store, running_server
from tests.peer.vectors import (
    BLOB0,
    BLOB0_HASH,
    GO_ADDRESS,
    SD_BYTES,
    SD_HASH,
    go_found_header,
    go_missing_header,
    sdk_request,
)

MISSING = sha384_hex(b"not stored anywhere")


@pytest.fixture
def hello_store(tmp_path):
    return disk_store(tmp_path / "blobs", {SD_HASH: SD_BYTES, BLOB0_HASH: BLOB0})


async def test_lbry_sdk_requests_get_reflector_go_bytes_with_keep_alive(hello_store) -> None:
    async with running_server(hello_store) as server:
        conn = await RawConnection.open(server.port)
        await conn.send(sdk_request(SD_HASH))
        header = go_found_header(SD_HASH, 536)
        assert len(header) == 358
        assert await conn.read_exactly(358 + 536) == header + SD_BYTES
        # same connection: the content blob, then a missing one, then the sd blob again
        await conn.send(sdk_request(BLOB0_HASH))
        assert await conn.read_exactly(len(go_found_header(BLOB0_HASH, 16)) + 16) == (
            go_found_header(BLOB0_HASH, 16) + BLOB0
        )
        await conn.send(sdk_request(MISSING))
        missing = go_missing_header()
        assert await conn.read_exactly(len(missing)) == missing
        await conn.send(sdk_request(SD_HASH))
        assert await conn.read_exactly(358 + 536) == header + SD_BYTES
        await conn.close()
        assert server.stats.downloads == 3 and server.stats.not_found == 1 and server.stats.accepted == 1


async def test_reflector_go_client_requests(hello_store) -> None:
    addr = b'{"lbrycrd_address":"' + GO_ADDRESS.encode() + b'"'
    async with running_server(hello_store) as server:
        conn = await RawConnection.open(server.port)
        # GetBlob: {"requested_blob":"<h>"}
        await conn.send(b'{"requested_blob":"' + BLOB0_HASH.encode() + b'"}')
        expected = addr + b',"available_blobs":[],"incoming_blob":{"blob_hash":"' + BLOB0_HASH.encode()
        expected += b'","length":16}}'
        assert await conn.read_exactly(len(expected) + 16) == expected + BLOB0
        # HasBlob: {"lbrycrd_address":false,"requested_blobs":["<h>"]}, for a present and a missing blob
        await conn.send(
            b'{"lbrycrd_address":false,"requested_blobs":["'
            + SD_HASH.encode()
            + b'","'
            + MISSING.encode()
            + b'"]}'
        )
        expected = addr + b',"available_blobs":["' + SD_HASH.encode() + b'"]}'
        assert await conn.read_exactly(len(expected)) == expected
        # GetBlob of a missing blob: the error form reflector.go's client maps to "not found"
        await conn.send(b'{"requested_blob":"' + MISSING.encode() + b'"}')
        expected = (
            addr
            + b',"available_blobs":[],"incoming_blob":{"error":"blob not found","blob_hash":"","length":0}}'
        )
        assert await conn.read_exactly(len(expected)) == expected
        # price negotiation only
        await conn.send(b'{"blob_data_payment_rate":-1}{"blob_data_payment_rate":2.5}')
        too_low = addr + b',"available_blobs":[],"blob_data_payment_rate":"RATE_TOO_LOW"}'
        accepted = addr + b',"available_blobs":[],"blob_data_payment_rate":"RATE_ACCEPTED"}'
        assert await conn.read_exactly(len(too_low) + len(accepted)) == too_low + accepted
        await conn.close()


async def test_headers_fit_reflector_go_client_limit(tmp_path) -> None:
    blobs = random_blobs(1)
    (h,) = blobs
    async with running_server(disk_store(tmp_path, blobs)) as server:
        conn = await RawConnection.open(server.port)
        await conn.send(sdk_request(h))
        header = encode_found_header(h, 2097152)
        assert len(header) <= GO_HEADER_LIMIT
        assert await conn.read_exactly(len(header) + 2097152) == header + blobs[h]
        await conn.close()


async def test_pipelined_requests_are_answered_in_order(hello_store) -> None:
    async with running_server(hello_store) as server:
        conn = await RawConnection.open(server.port)
        await conn.send(sdk_request(BLOB0_HASH) + sdk_request(MISSING) + sdk_request(SD_HASH))
        expected = (
            go_found_header(BLOB0_HASH, 16) + BLOB0 + go_missing_header() + go_found_header(SD_HASH, 536)
        )
        expected += SD_BYTES
        assert await conn.read_exactly(len(expected)) == expected
        await conn.close()


async def test_memory_store_blobs_are_written_directly() -> None:
    store = MemoryStore()
    blobs = random_blobs(3)
    for h, data in blobs.items():
        await store.put(h, data)
    async with running_server(store) as server, PeerClient("127.0.0.1", server.port) as client:
        for h, data in blobs.items():
            assert await client.get(h) == data
        got = await asyncio.gather(*(client.get(h) for h in list(blobs) * 3))
        assert got == list(blobs.values()) * 3


async def test_half_closed_client_still_gets_its_answer(hello_store) -> None:
    async with running_server(hello_store) as server:
        conn = await RawConnection.open(server.port)
        await conn.send(sdk_request(SD_HASH))
        conn.writer.write_eof()
        assert await conn.expect_closed() == go_found_header(SD_HASH, 536) + SD_BYTES


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02garbage",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b" " + sdk_request(SD_HASH),
        b'{"requested_blob": "../../etc/passwd"}',
        b'{"requested_blobs": [1, 2]}',
        b"{]",
        b"{" + b"[" * 100,
    ],
)
async def test_bad_input_closes_only_that_connection(hello_store, garbage: bytes, caplog) -> None:
    caplog.set_level(logging.INFO, "prism.peer")
    async with running_server(hello_store) as server:
        good = await RawConnection.open(server.port)
        bad = await RawConnection.open(server.port)
        await bad.send(garbage)
        assert await bad.expect_closed() == b""
        await good.send(sdk_request(SD_HASH))
        assert await good.read_exactly(358 + 536) == go_found_header(SD_HASH, 536) + SD_BYTES
        assert server.stats.errors["invalid_peer_data"] == 1
        assert any("closing connection from 127.0.0.1" in r.getMessage() for r in caplog.records)
        await good.close()
        await bad.close()


class _FailingStore(MemoryStore):
    async def get(self, blob_hash: str) -> BlobRef:
        if blob_hash == MISSING:
            raise StoreError("disk on fire")
        return await super().get(blob_hash)


async def test_store_failure_closes_the_connection_not_the_server() -> None:
    store = _FailingStore()
    await store.put(BLOB0_HASH, BLOB0)
    async with running_server(store) as server:
        conn = await RawConnection.open(server.port)
        await conn.send(sdk_request(MISSING))
        assert await conn.expect_closed() == b""
        async with PeerClient("127.0.0.1", server.port) as client:
            assert await client.get(BLOB0_HASH) == BLOB0


async def test_connection_cap(hello_store) -> None:
    """At the cap a socket that never asked anything makes room; answered clients are kept (issue 18)."""
    async with running_server(hello_store, max_connections=3) as server:
        conns = [await RawConnection.open(server.port) for _ in range(3)]
        await asyncio.sleep(0.3)  # older than MIN_FRESH
        extra = await RawConnection.open(server.port)
        assert await conns[0].expect_closed() == b""  # the oldest silent socket went
        for c in [*conns[1:], extra]:  # the others work, and have now made a request each
            await c.send(sdk_request(BLOB0_HASH))
            assert (await c.read_exactly(len(go_found_header(BLOB0_HASH, 16)) + 16)).endswith(BLOB0)
        refused = await RawConnection.open(server.port)  # nobody idle long enough to go
        assert await refused.expect_closed() == b""
        assert server.stats.refused == 1 and server.admission.shed_total == 1
        for c in [*conns, extra, refused]:
            await c.close()


async def test_idle_connections_are_closed_after_idle_timeout(hello_store) -> None:
    async with running_server(hello_store, idle_timeout=0.3) as server:
        conn = await RawConnection.open(server.port)
        await conn.send(sdk_request(BLOB0_HASH))
        await conn.read_exactly(len(go_found_header(BLOB0_HASH, 16)) + 16)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await conn.expect_closed(wait=3) == b""
        assert 0.2 < loop.time() - started < 2.0
        # a request that never completes gets the same treatment
        slow = await RawConnection.open(server.port)
        await slow.send(b'{"requested_blob": "')
        assert await slow.expect_closed(wait=3) == b""
        assert not server.connections


async def test_client_that_never_reads_is_dropped_after_send_timeout(tmp_path) -> None:
    blobs = random_blobs(1)
    (h,) = blobs
    store = disk_store(tmp_path, blobs)
    async with running_server(store, send_timeout=0.5, send_buffer_size=None) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        try:
            sock.sendall(sdk_request(h) * 40)  # 80 MiB of answers that nobody reads
            for _ in range(100):
                await asyncio.sleep(0.05)
                if not server.connections:
                    break
            assert not server.connections
        finally:
            sock.close()
        async with PeerClient("127.0.0.1", server.port) as client:
            assert await client.get(h) == blobs[h]


async def test_stop_closes_idle_connections_and_the_listener(hello_store) -> None:
    server_cm = running_server(hello_store)
    server = await server_cm.__aenter__()
    conn = await RawConnection.open(server.port)
    await conn.send(sdk_request(BLOB0_HASH))
    await conn.read_exactly(len(go_found_header(BLOB0_HASH, 16)) + 16)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop(5.0)
    assert loop.time() - started < 1.0  # idle connections do not wait out the grace period
    assert await conn.expect_closed() == b""
    with pytest.raises(OSError):
        await RawConnection.open(server.port)


async def test_pipelining_client_that_never_reads_cannot_grow_server_memory() -> None:
    store = MemoryStore()
    await store.put(SD_HASH, SD_BYTES)
    async with running_server(store, send_buffer_size=None) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        try:
            count = 20_000
            flood = sdk_request(SD_HASH) * count  # 5.9 MB of requests for 18 MB of answers
            sent = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2
            while sent < len(flood) and loop.time() < deadline:
                try:
                    sent += sock.send(flood[sent : sent + 65536])
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            (conn,) = server.connections
            assert conn.transport is not None
            # bounded by asyncio's high-water mark (64 KiB) plus one answer, and one read of requests
            assert conn.transport.get_write_buffer_size() < 256 * 1024
            assert conn.parser.buffered < 512 * 1024
            assert server.stats.requests < count  # it waits for the client to read
            # meanwhile everybody else is served
            async with PeerClient("127.0.0.1", server.port) as client:
                assert await client.get(SD_HASH) == SD_BYTES
        finally:
            sock.close()


async def test_blob_larger_than_the_socket_buffers_arrives_intact(tmp_path) -> None:
    # A slow reader with a small window: the direct sendfile sends part, loop.sendfile the rest.
    blobs = random_blobs(2)
    async with running_server(disk_store(tmp_path, blobs), send_buffer_size=None) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=8 * 1024 * 1024)
        try:
            for h, data in list(blobs.items()) * 2:
                writer.write(sdk_request(h))
                header = encode_found_header(h, len(data))
                got = bytearray()
                while len(got) < len(header) + len(data):
                    got += await asyncio.wait_for(reader.read(32768), 5)
                    await asyncio.sleep(0.0005)
                assert bytes(got) == header + data
        finally:
            writer.close()


async def test_a_miss_streams_to_the_peer_as_it_arrives_and_a_bad_one_is_cut_short() -> None:
    (h, d), (bad_h, bad_d) = random_blob(1_200_000), random_blob(900_000)
    upstream = TricklingUpstream({h: d, bad_h: bad_d})  # stand-in HTTP upstream, bodies in two halves
    upstream.sent[bad_h] = bad_d[:-1] + bytes([bad_d[-1] ^ 1])
    await upstream.start()
    store, cache = blobcache_over(upstream)
    try:
        async with running_server(store) as server:
            conn = await RawConnection.open(server.port)
            await conn.send(encode_request(h))
            header = encode_found_header(h, len(d))
            first = await conn.read_exactly(len(header) + len(d) // 2)  # before the upstream is done
            assert first == header + d[: len(d) // 2] and h not in cache.blobs
            upstream.gate.set()
            assert await conn.read_exactly(len(d) - len(d) // 2) == d[len(d) // 2 :]
            await eventually(lambda: h in cache.blobs)
            await conn.send(encode_request(bad_h))
            got = await conn.expect_closed()
            assert len(got) < len(encode_found_header(bad_h, len(bad_d))) + len(bad_d)
            assert bad_h not in cache.blobs and upstream.requests == {h: 1, bad_h: 1}
    finally:
        await store.close()
        await upstream.stop()
