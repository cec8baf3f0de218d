"""prism's client against prism's receiver and against an lbry-sdk-like reflector server."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from prism.reflector.client import BlobRefusedError, ReflectorClient, ReflectorError
from prism.stream import encode_bytes
from tests.reflector.helpers import BLOB0, BLOB0_BYTES, SD_BYTES, SD_HASH
from tests.reflector.sdk_server import SdkLikeReflectorServer


def make_stream(size: int, name: str = "file.bin") -> tuple[str, bytes, dict[str, bytes]]:
    blobs, enc = encode_bytes(os.urandom(size), name)
    return enc.sd_hash, enc.sd_bytes, dict(blobs)


@pytest.fixture
async def sdk_server():
    s = SdkLikeReflectorServer()
    await s.start()
    yield s
    await s.stop()


async def upload(port: int, sd_hash: str, sd_bytes: bytes, blobs: dict[str, bytes], version: int = 1):
    async def get(h: str) -> bytes:
        return blobs[h]

    async with ReflectorClient("127.0.0.1", port, version=version, timeout=5) as c:
        return await c.upload_stream(sd_hash, sd_bytes, get), c.version


@pytest.mark.parametrize("version", [1, 0])
async def test_upload_stream_to_prism(memory_receiver, version: int) -> None:
    r, store = memory_receiver
    sd_hash, sd_bytes, blobs = make_stream(5_000_000)
    result, _ = await upload(r.port, sd_hash, sd_bytes, blobs, version)
    assert store.blobs == {sd_hash: sd_bytes, **blobs}
    assert (result.sent, result.already_present, result.refused) == (4, 0, 0)
    if version == 1:
        assert result.sent_hashes[0] == sd_hash
    else:
        assert result.sent_hashes[-1] == sd_hash  # version 0: content first, sd blob last
    again, _ = await upload(r.port, sd_hash, sd_bytes, blobs, version)
    assert again.content_bytes_sent == 0 and again.sent == 0


async def test_resume_sends_only_missing_blobs(memory_receiver) -> None:
    r, store = memory_receiver
    sd_hash, sd_bytes, blobs = make_stream(7_000_000)
    hashes = list(blobs)
    store.blobs[sd_hash] = sd_bytes
    store.blobs[hashes[0]] = blobs[hashes[0]]
    store.blobs[hashes[2]] = blobs[hashes[2]]
    result, _ = await upload(r.port, sd_hash, sd_bytes, blobs)
    assert result.needed == 2 and result.sent_hashes == [hashes[1], hashes[3]]
    assert store.blobs == {sd_hash: sd_bytes, **blobs}


async def test_upload_to_lbry_sdk_like_server(sdk_server) -> None:
    sd_hash, sd_bytes, blobs = make_stream(3_000_000)
    result, version = await upload(sdk_server.port, sd_hash, sd_bytes, blobs)
    assert version == 1 and result.sent == 3
    assert sdk_server.blobs == {sd_hash: sd_bytes, **blobs}
    again, _ = await upload(sdk_server.port, sd_hash, sd_bytes, blobs)
    assert (again.sent, again.needed, again.already_present) == (0, 0, 1)


async def test_exact_request_bytes_to_lbry_sdk_like_server(sdk_server) -> None:
    """The §6.1 stream: prism's requests are byte for byte lbry-sdk's (§6.4)."""
    result, _ = await upload(sdk_server.port, SD_HASH, SD_BYTES, {BLOB0: BLOB0_BYTES})
    assert result.sent == 2
    assert sdk_server.requests == [
        b'{"version": 1}',
        b'{"sd_blob_hash": "' + SD_HASH.encode() + b'", "sd_blob_size": 536}',
        b'{"blob_hash": "' + BLOB0.encode() + b'", "blob_size": 16}',
    ]


async def test_version_0_answered_with_1_goes_on_as_1(sdk_server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "prism.reflector")
    sd_hash, sd_bytes, blobs = make_stream(100)
    result, version = await upload(sdk_server.port, sd_hash, sd_bytes, blobs, version=0)
    assert version == 1 and result.sent_hashes[0] == sd_hash
    assert any("going on as version 1" in r.getMessage() for r in caplog.records)


async def test_lbry_sdk_like_server_refuses_plain_blob(sdk_server) -> None:
    async with ReflectorClient("127.0.0.1", sdk_server.port, timeout=5) as c:
        with pytest.raises(ReflectorError, match="closed"):
            await c.send_blob(BLOB0, BLOB0_BYTES)


async def test_refused_blob_raises(memory_receiver) -> None:
    r, store = memory_receiver
    async with ReflectorClient("127.0.0.1", r.port, timeout=5) as c:
        with pytest.raises(BlobRefusedError) as info:
            await c.send_blob(BLOB0, b"\x00" * 16)  # bytes that do not match the hash
    assert info.value.result.refused == 1
    assert store.blobs == {}


async def test_connect_errors() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(ReflectorError, match="closed the connection"):
        async with ReflectorClient("127.0.0.1", port, timeout=2):
            pass
    server.close()
    await server.wait_closed()
    with pytest.raises(ReflectorError, match="cannot connect"):
        async with ReflectorClient("127.0.0.1", port, timeout=2):
            pass
