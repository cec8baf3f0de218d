"""HTTP/3 interop with aioquic, the library reflector-era Python peers use, over real QUIC on 127.0.0.1.

prism runs on qh3 (prism/http/quic.py); these tests put an aioquic client in front of prism's
server and prism's client in front of an aioquic server (a stand-in for another reflector's
HTTP/3 server, speaking reflector.md §4.5's routes).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent
from cryptography.hazmat.primitives import serialization

from prism.http.h3client import Http3Client
from prism.http.h3server import Http3BlobServer
from prism.http.quic import LIBRARY
from prism.http.tls import self_signed_certificate
from prism.store import MemoryStore
from prism.store.base import StoreError
from prism.store.http3 import Http3Store
from prism.store.trace import BlobTrace
from tests.helpers import TricklingUpstream, blobcache_over, eventually, random_blob, running

MISSING = "0" * 96


class AioquicH3Client(QuicConnectionProtocol):
    """The smallest aioquic HTTP/3 client: GET a path, collect status, headers and body."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.responses: dict[int, tuple[dict[bytes, bytes], bytearray, asyncio.Future[None]]] = {}

    async def get(self, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        sid = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"x"),
            (b":path", path.encode()),
        ]
        self.http.send_headers(sid, headers, end_stream=True)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.responses[sid] = ({}, bytearray(), done)
        self.transmit()
        await asyncio.wait_for(done, 10)
        hdrs, body, _ = self.responses.pop(sid)
        return int(hdrs[b":status"]), hdrs, bytes(body)

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3 in self.http.handle_event(event):
            self._h3(h3)

    def _h3(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived) or event.stream_id not in self.responses:
            return
        hdrs, body, done = self.responses[event.stream_id]
        if isinstance(event, HeadersReceived):
            hdrs.update(event.headers)
        else:
            body += event.data
        if event.stream_ended:
            done.set_result(None)


async def test_aioquic_client_against_prism_server():
    assert LIBRARY == "qh3"
    store = MemoryStore()
    h, d = random_blob(300_000)
    await store.put(h, d)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    async with running(Http3BlobServer(store, "127.0.0.1", 0)) as server:
        async with connect(
            "127.0.0.1", server.port, configuration=config, create_protocol=AioquicH3Client
        ) as c:
            assert isinstance(c, AioquicH3Client)
            status, headers, body = await c.get(f"/get/{h}")
            assert (status, body, b"via" in headers) == (200, d, False)
            assert headers[b"content-length"] == str(len(d)).encode()
            status, headers, body = await c.get(f"/get/{h}?trace=true")
            assert status == 200 and body == d
            assert BlobTrace.from_json(headers[b"via"].decode()).stacks
            status, _, body = await c.get(f"/has/{h}")
            assert (status, b'"is_available":true' in body) == (200, True)
            status, _, body = await c.get(f"/has/{MISSING}")
            assert (status, b'"is_available":false' in body) == (404, True)
            status, _, body = await c.get(f"/get/{MISSING}")
            assert (status, body) == (404, b"blob not found")
            status, _, body = await c.get("/get/not-a-hash")
            assert status == 400 and b"invalid blob hash" in body


class StandInServer(QuicConnectionProtocol):
    """A stand-in reflector HTTP/3 server on aioquic: /get/{hash} and /has/{hash} from `blobs`."""

    blobs: dict[str, bytes] = {}

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3 in self.http.handle_event(event):
            if isinstance(h3, HeadersReceived):
                self._answer(h3.stream_id, dict(h3.headers)[b":path"].decode())

    def _answer(self, sid: int, path: str) -> None:
        _, kind, rest = path.split("/", 2)
        blob = self.blobs.get(rest.split("?")[0])
        if kind == "get":
            status, body = (200, blob) if blob is not None else (404, b"blob not found")
        else:
            status, body = (200, b'{"is_available":true}') if blob is not None else (404, b"{}")
        self.http.send_headers(
            sid, [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())]
        )
        self.http.send_data(sid, body, end_stream=True)
        self.transmit()


@pytest.fixture
async def aioquic_server(tmp_path: Path) -> AsyncIterator[tuple[int, dict[str, bytes]]]:
    cert, key = self_signed_certificate()
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    blobs: dict[str, bytes] = {}
    StandInServer.blobs = blobs
    server: QuicServer = await serve("127.0.0.1", 0, configuration=config, create_protocol=StandInServer)
    assert server._transport is not None
    try:
        yield server._transport.get_extra_info("sockname")[1], blobs
    finally:
        server.close()


async def test_prism_client_against_aioquic_server(aioquic_server: tuple[int, dict[str, bytes]]):
    port, blobs = aioquic_server
    h, d = random_blob(1_500_000)
    blobs[h] = d
    store = Http3Store(f"127.0.0.1:{port}", timeout=10)
    try:
        assert (await store.get(h)).read() == d
        assert await store.has(h) is True
        assert await store.has(MISSING) is False
        client: Http3Client = store.client
        many = await asyncio.gather(*(client.get(f"/get/{h}") for _ in range(8)))
        assert all(r.status == 200 and r.body == d for r in many)
        assert client.connects == 1  # one connection, every request multiplexed on it
    finally:
        await store.close()


async def test_prism_server_streams_an_arriving_miss_and_resets_a_bad_one():
    (h, d), (bad_h, bad_d) = random_blob(1_200_000), random_blob(900_000)
    upstream = TricklingUpstream({h: d, bad_h: bad_d})  # stand-in HTTP upstream, bodies in two halves
    upstream.sent[bad_h] = bad_d[:-1] + bytes([bad_d[-1] ^ 1])
    await upstream.start()
    store, cache = blobcache_over(upstream)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    try:
        async with running(Http3BlobServer(store, "127.0.0.1", 0)) as server:
            async with connect(
                "127.0.0.1", server.port, configuration=config, create_protocol=AioquicH3Client
            ) as c:
                assert isinstance(c, AioquicH3Client)
                answer = asyncio.create_task(c.get(f"/get/{h}"))
                # Half the blob reaches the client before the upstream sends the rest.
                await eventually(lambda: any(len(body) >= len(d) // 2 for _, body, _ in c.responses.values()))
                assert not answer.done() and h not in cache.blobs
                upstream.gate.set()
                status, _, body = await answer
                assert (status, body) == (200, d)
                await eventually(lambda: h in cache.blobs)
            h3 = Http3Store(f"127.0.0.1:{server.port}")
            try:
                with pytest.raises(StoreError, match="reset"):
                    await h3.get(bad_h)
            finally:
                await h3.close()
            assert bad_h not in cache.blobs and server.stats.downloads == 1
    finally:
        await store.close()
        await upstream.stop()
