"""What every store that fetches blobs over the network shares: checking what arrived."""

from __future__ import annotations

import asyncio

import aiohttp

from prism.blob import HASH_INLINE_MAX, BlobError, verify_blob
from prism.store.base import StoreError


class UpstreamDataError(StoreError):
    """An upstream answered with bytes that are not the blob asked for."""


async def verify_received(blob_hash: str, data: bytes, source: str) -> None:
    """Raise UpstreamDataError unless `data` is a valid blob named `blob_hash`."""
    try:
        if len(data) > HASH_INLINE_MAX:
            await asyncio.to_thread(verify_blob, blob_hash, data)
        else:
            verify_blob(blob_hash, data)
    except BlobError as e:
        raise UpstreamDataError(f"{source} sent bad data for {blob_hash[:16]}…: {e}") from None


async def read_limited(content: aiohttp.StreamReader, limit: int, source: str) -> bytes:
    """Read an aiohttp response body to its end, refusing more than `limit` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await content.read(1024 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise UpstreamDataError(f"{source} sent more than {limit} bytes for one blob")
        chunks.append(chunk)
