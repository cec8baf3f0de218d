"""Shared pieces of the peer tests: stores with blobs, running servers, raw connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from prism.peer.server import PeerServer
from prism.store.base import BlobStore
from prism.store.disk import DiskStore
from tests.helpers import running


def disk_store(root: str | os.PathLike[str], blobs: dict[str, bytes]) -> DiskStore:
    store = DiskStore(root)
    for h, data in blobs.items():
        store.write_blob(h, data)
    return store


def running_server(store: BlobStore, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[PeerServer]:
    """A PeerServer over `store` on a free loopback port, for the body of an `async with`."""
    return running(PeerServer(store, "127.0.0.1", 0, **kwargs))


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
