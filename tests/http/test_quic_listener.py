"""prism's QUIC shell: header routing (pure) and the listener's caps, over real QUIC on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from prism.http.h3client import Http3Client
from prism.http.h3server import Http3BlobServer
from prism.http.quic import ListenerLimits, parse_header
from prism.store import MemoryStore
from tests.helpers import eventually, random_blob, running

DCID = bytes(range(8))
SCID = bytes(range(100, 105))


def long_header(first: int, version: int, dcid: bytes = DCID, scid: bytes = SCID) -> bytes:
    return (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + bytes(20)
    )


def test_parse_header_long_and_short():
    initial = parse_header(long_header(0xC3, 1))
    assert initial is not None
    assert (initial.destination_cid, initial.source_cid, initial.version, initial.is_initial) == (
        DCID,
        SCID,
        1,
        True,
    )
    handshake = parse_header(long_header(0xE3, 1))
    assert handshake is not None and not handshake.is_initial
    v2_initial = parse_header(long_header(0xD3, 0x6B3343CF))  # QUIC v2 numbers its Initial 0b01
    assert v2_initial is not None and v2_initial.is_initial
    short = parse_header(bytes([0x41]) + DCID + bytes(30))
    assert short is not None and (short.destination_cid, short.version) == (DCID, None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([0x01]) + DCID + bytes(30),
        bytes([0x41, 1, 2]),
        long_header(0xC3, 1)[:8],
        long_header(0xC3, 1, dcid=bytes(21)),
    ],
)
def test_parse_header_rejects_what_is_not_quic(data: bytes):
    assert parse_header(data) is None


async def test_connections_over_the_cap_are_refused_and_admitted_again_after_a_close():
    store = MemoryStore()
    h, d = random_blob(10_000)
    await store.put(h, d)
    server = Http3BlobServer(store, "127.0.0.1", 0, limits=ListenerLimits(max_connections=1))
    async with running(server):
        assert server.listener is not None
        first = Http3Client(f"127.0.0.1:{server.port}", timeout=5)
        second = Http3Client(f"127.0.0.1:{server.port}", timeout=1)
        try:
            assert (await first.get(f"/get/{h}")).body == d
            with pytest.raises(TimeoutError):
                await second.get(f"/get/{h}")
            assert server.listener.refused > 0
            await first.close()
            await eventually(lambda: not server.listener.connections, what="the first connection closed")
            second.timeout = 5
            assert (await second.get(f"/get/{h}")).body == d
            assert len(server.listener.table) > 0
        finally:
            await first.close()
            await second.close()


async def test_a_handshake_that_never_finishes_gives_its_slot_back():
    server = Http3BlobServer(MemoryStore(), "127.0.0.1", 0, limits=ListenerLimits(handshake_timeout=0.3))
    async with running(server):
        listener = server.listener
        assert listener is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # A well-formed Initial header with garbage after it, from a client that never answers.
            sock.sendto(long_header(0xC3, 1) + bytes(1200), ("127.0.0.1", server.port))
            await eventually(lambda: listener.handshakes == 1, what="the Initial accepted")
        await eventually(lambda: listener.handshakes == 0 and not listener.connections, what="the slot freed")
        assert not listener.table
