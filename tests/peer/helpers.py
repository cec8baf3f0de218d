"""Shared pieces of the peer tests: stores with blobs, running servers, raw connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from prism.blob import sha384_hex
from prism.peer.server import PeerServer
from prism.store.base import BlobStore
from prism.store.disk import DiskStore


def random_blobs(count: int, size: int = 2 * 1024 * 1024) -> dict[str, bytes]:
    blobs = {}
    for _ in range(count):
        data = os.urandom(size)
        blobs[sha384_hex(data)] = data
    return blobs


def disk_store(root: str | os.PathLike[str], blobs: dict[str, bytes]) -> DiskStore:
    store = DiskStore(root)
    for h, data in blobs.items():
        store.write_blob(h, data)
    return store


@contextlib.asynccontextmanager
async def running_server(store: BlobStore, **kwargs: object) -> AsyncIterator[PeerServer]:
    server = PeerServer(store, "127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop(1.0)


class RawConnection:
    """A plain TCP client for byte-exact exchanges."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=8 * 1024 * 1024)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_exactly(self, n: int, wait: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), wait)

    async def expect_closed(self, wait: float = 5.0) -> bytes:
        """Read until the server closes; returns what it sent before closing."""
        chunks = []
        async with asyncio.timeout(wait):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
