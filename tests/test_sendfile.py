"""BlobSender on a real socket pair: header then body, from a file or from memory."""

from __future__ import annotations

import asyncio
import socket

import pytest

from prism.sendfile import BlobSender
from prism.store.base import BlobRef


class _Proto(asyncio.Protocol):
    sender: BlobSender

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.sender = BlobSender(transport, send_timeout=5, cork=True)

    def pause_writing(self) -> None:
        self.sender.pause_writing()

    def resume_writing(self) -> None:
        self.sender.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sender.connection_lost()


async def _send(ref: BlobRef, start: int, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    transport, proto = await loop.create_connection(_Proto, sock=a)
    reader, writer = await asyncio.open_connection(sock=b)
    try:
        with ref:
            await proto.sender.send(b"HEAD\n", ref, start, count)
        transport.close()
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("on_disk", [False, True])
@pytest.mark.parametrize(("start", "count"), [(0, 3_000_000), (10, 20), (2_999_990, 10)])
async def test_head_then_the_asked_bytes(tmp_path, on_disk, start, count):
    data = bytes(range(256)) * (3_000_000 // 256) + bytes(3_000_000 % 256)
    if on_disk:
        path = tmp_path / "blob"
        path.write_bytes(data)
        ref = BlobRef("h", len(data), file=open(path, "rb"))
    else:
        ref = BlobRef("h", len(data), data=data)
    assert await _send(ref, start, count) == b"HEAD\n" + data[start : start + count]


async def test_a_file_shorter_than_its_ref_is_an_error(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 100)
    ref = BlobRef("h", 200, file=open(path, "rb"))
    with pytest.raises(OSError, match="file ended after 100 of 200 bytes"):
        await _send(ref, 0, 200)
