"""prism's HTTP/1.1 client against a real prism server and raw stand-in servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from prism.http.client import HttpClient, HttpClientError
from prism.http.server import HttpBlobServer
from tests.helpers import CountingStore, random_blob


async def stand_in(answers: list[bytes], close_after: bool = False) -> tuple[asyncio.Server, list[int]]:
    """A server answering each request it reads with the next of `answers`; counts connections."""
    connections = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            while answers:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                writer.write(answers.pop(0))
                await writer.drain()
                if close_after:
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, connections


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def test_gets_blobs_from_a_prism_server_over_one_kept_connection():
    origin = CountingStore()
    h, d = random_blob(1_500_000)
    await origin.put(h, d)
    server = HttpBlobServer(origin, "127.0.0.1", 0)
    await server.start()
    client = HttpClient("127.0.0.1", server.port)
    try:
        for _ in range(3):
            r = await client.request("GET", f"/blob?hash={h}", max_body=2 << 20)
            assert r.status == 200 and r.body == d and r.head.get("via")
        r = await client.request("HEAD", f"/blob?hash={h}", max_body=0)
        assert r.status == 204 and r.body == b""
        r = await client.request("GET", f"/blob?hash={'cd' * 48}", max_body=2 << 20)
        assert r.status == 404
        assert len(server.connections) == 1
        with pytest.raises(HttpClientError, match="more than the 1000 bytes"):
            await client.request("GET", f"/blob?hash={h}", max_body=1000)
    finally:
        await client.close()
        await server.stop()


async def test_chunked_bodies_keep_the_connection():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
    server, connections = await stand_in([chunked, chunked])
    client = HttpClient("127.0.0.1", port_of(server))
    try:
        for _ in range(2):
            assert (await client.request("GET", "/a", max_body=100)).body == b"abcd"
    finally:
        await client.close()
        server.close()
    assert connections[0] == 1


async def test_close_delimited_body_ends_when_the_server_closes():
    server, _ = await stand_in([b"HTTP/1.0 200 OK\r\n\r\nall of it"], close_after=True)
    client = HttpClient("127.0.0.1", port_of(server))
    try:
        r = await client.request("GET", "/", max_body=100)
        assert r.body == b"all of it" and not client._idle  # not kept: it was closed
    finally:
        await client.close()
        server.close()


async def test_a_kept_connection_the_server_closed_is_retried_on_a_new_one():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, connections = await stand_in([ok, ok], close_after=True)
    client = HttpClient("127.0.0.1", port_of(server))
    try:
        assert (await client.request("GET", "/", max_body=10)).body == b"ok"
        await asyncio.sleep(0.05)  # the server's close reaches the idle connection
        assert (await client.request("GET", "/", max_body=10)).body == b"ok"
    finally:
        await client.close()
        server.close()
    assert connections[0] == 2


async def test_truncated_body_and_bad_response_fail_clearly():
    server, _ = await stand_in([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], close_after=True)
    client = HttpClient("127.0.0.1", port_of(server))
    try:
        with pytest.raises(HttpClientError, match="after 3 of 10 body bytes"):
            await client.request("GET", "/", max_body=100)
    finally:
        await client.close()
        server.close()
    server, _ = await stand_in([b"SMTP ready\r\n\r\n"])
    client = HttpClient("127.0.0.1", port_of(server))
    try:
        with pytest.raises(HttpClientError, match="bad status line"):
            await client.request("GET", "/", max_body=100)
    finally:
        await client.close()
        server.close()


async def test_a_silent_server_times_out_and_a_refused_connection_fails():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await reader.read()  # reads the request, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = port_of(server)
    client = HttpClient("127.0.0.1", port, timeout=0.2)
    try:
        with pytest.raises(HttpClientError, match=r"no answer within 0\.2s"):
            await client.request("GET", "/", max_body=100)
        assert not client._idle and not client._busy
    finally:
        await client.close()
        server.close()
    await server.wait_closed()
    client = HttpClient("127.0.0.1", port)
    with pytest.raises(HttpClientError):
        await client.request("GET", "/", max_body=100)


async def test_connections_are_capped_and_reused():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, connections = await stand_in([ok] * 40)
    client = HttpClient("127.0.0.1", port_of(server), max_connections=4)
    try:
        for _ in range(2):
            bodies = await asyncio.gather(*(client.request("GET", "/", max_body=10) for _ in range(20)))
            assert {bytes(r.body) for r in bodies} == {b"ok"}
    finally:
        await client.close()
        server.close()
    assert connections[0] <= 4


async def test_a_request_the_server_drops_unanswered_on_a_kept_connection_is_sent_again():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    seen = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ok)
        if seen[0] == 1:  # the first connection: its second request is read and dropped
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = HttpClient("127.0.0.1", port_of(server))
    try:
        assert (await client.request("GET", "/", max_body=10)).body == b"ok"
        assert (await client.request("GET", "/", max_body=10)).body == b"ok"
    finally:
        await client.close()
        server.close()
    assert seen[0] == 2
