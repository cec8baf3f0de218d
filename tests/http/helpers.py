"""Stores and clients shared by the HTTP tests."""

from __future__ import annotations

import asyncio
import os

from prism.blob import sha384_hex
from prism.store.base import BlobNotFound, BlobRef, BlobStore
from prism.store.memory import MemoryStore


def make_blob(size: int = 100_000, seed: int = 0) -> tuple[str, bytes]:
    data = os.urandom(size) if seed == 0 else bytes((i * seed + 7) % 251 for i in range(size))
    return sha384_hex(data), data


async def stored_blob(store: BlobStore, size: int) -> tuple[str, bytes]:
    """A new random blob of `size` bytes, put in `store`."""
    h, d = make_blob(size)
    await store.put(h, d)
    return h, d


class CountingStore(MemoryStore):
    """A memory store that counts calls and can be slowed down."""

    def __init__(self, name: str = "mem", delay: float = 0.0) -> None:
        super().__init__(name)
        self.delay = delay
        self.gets = 0
        self.hass = 0

    async def get(self, blob_hash: str) -> BlobRef:
        self.gets += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().get(blob_hash)

    async def has(self, blob_hash: str) -> bool:
        self.hass += 1
        return await super().has(blob_hash)


class FailingStore(MemoryStore):
    async def get(self, blob_hash: str) -> BlobRef:
        raise OSError("disk on fire")

    async def has(self, blob_hash: str) -> bool:
        raise OSError("disk on fire")


__all__ = ["BlobNotFound", "CountingStore", "FailingStore", "make_blob", "stored_blob"]


async def raw_request(port: int, request: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(-1), 10) if read_until_close else b""
    writer.close()
    return data
