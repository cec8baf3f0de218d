"""What every store that fetches blobs over the network shares: checking what arrived."""

from __future__ import annotations

import asyncio

import aiohttp

from prism.blob import HASH_INLINE_MAX, BlobError, verify_blob
from prism.store.base import StoreError


class UpstreamDataError(StoreError):
    """An upstream answered with bytes that are not the blob asked for."""


async def verify_received(blob_hash: str, data: bytes | bytearray, source: str) -> None:
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


async def read_body(content: aiohttp.StreamReader, size: int | None, limit: int, source: str) -> bytes:
    """A whole response body of `size` bytes (its Content-Length), refusing more than `limit`.

    With a known length the body goes into one preallocated buffer as it arrives (no chunk list,
    no join); without one it is read chunk by chunk (`read_limited`).
    """
    if size is None:
        return await read_limited(content, limit, source)
    if size > limit:
        raise UpstreamDataError(f"{source} announced {size} bytes for one blob")
    buf = bytearray(size)
    view = memoryview(buf)
    done = 0
    while done < size:
        chunk = await content.readany()
        if not chunk:
            raise UpstreamDataError(f"{source} ended the body after {done} of {size} bytes")
        if done + len(chunk) > size:
            raise UpstreamDataError(f"{source} sent more than its Content-Length ({size})")
        view[done : done + len(chunk)] = chunk
        done += len(chunk)
    view.release()
    # Handed on as bytes without a copy: nothing else holds the buffer, and nothing writes to it.
    return buf  # type: ignore[return-value]
