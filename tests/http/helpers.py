"""Raw requests and stored blobs for the HTTP tests."""

from __future__ import annotations

import asyncio

from prism.store.base import BlobStore
from tests.helpers import random_blob


async def stored_blob(store: BlobStore, size: int) -> tuple[str, bytes]:
    """A new random blob of `size` bytes, put in `store`."""
    h, d = random_blob(size)
    await store.put(h, d)
    return h, d


async def raw_request(port: int, request: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(-1), 10) if read_until_close else b""
    writer.close()
    return data
