"""What every store that fetches blobs over the network shares: checking what arrived."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from functools import partial

import aiohttp

from prism.blob import HASH_INLINE_MAX, BlobError, verify_blob
from prism.store.arrival import BlobArrival
from prism.store.base import StoreError

HASH_STEP = 512 * 1024
"""Bytes of an arriving blob gathered before a worker thread hashes them: fewer thread hops,
while the hash of the last bytes, which the client waits for, stays short."""


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


class ArrivalHasher:
    """Hashes a blob's bytes on worker threads as they arrive, then marks its arrival verified or failed.

    The receiving side calls `received(n)` as bytes come in and `failed(error)` if they stop;
    `on_verified()` is called once the blob checks out.
    """

    __slots__ = (
        "_busy",
        "_hashed",
        "_hasher",
        "_view",
        "arrival",
        "blob_hash",
        "loop",
        "on_verified",
        "source",
    )

    def __init__(
        self, blob_hash: str, arrival: BlobArrival, source: str, on_verified: Callable[[], None] | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.blob_hash = blob_hash
        self.arrival = arrival
        self.source = source
        self.on_verified = on_verified
        self._hasher = hashlib.sha384()
        self._view: memoryview | None = memoryview(arrival.buffer)
        self._hashed = 0
        self._busy = False

    def received(self, n: int) -> None:
        """The blob's first `n` bytes are in."""
        self.arrival.arrived(n)
        self._step()

    def failed(self, error: Exception) -> None:
        self.arrival.failed(error)
        self._view = None

    def _step(self) -> None:
        arrival = self.arrival
        view = self._view
        if self._busy or view is None or arrival.done:
            return
        end = arrival.received
        todo = end - self._hashed
        if todo == 0 or (todo < HASH_STEP and end < arrival.size):
            return
        chunk = view[self._hashed : end]
        if todo <= HASH_INLINE_MAX:
            self._hasher.update(chunk)
            self._hashed_to(end, None)
            return
        self._busy = True
        work = self.loop.run_in_executor(None, self._hasher.update, chunk)
        work.add_done_callback(partial(self._hashed_to, end))

    def _hashed_to(self, end: int, work: asyncio.Future[None] | None) -> None:
        self._busy = False
        if work is not None and (work.cancelled() or work.exception() is not None):
            why = "cancelled" if work.cancelled() else work.exception()
            self.failed(StoreError(f"hashing {self.blob_hash[:16]}… failed: {why}"))
            return
        self._hashed = end
        if end < self.arrival.size:
            self._step()
            return
        self._view = None
        actual = self._hasher.hexdigest()
        if actual != self.blob_hash:
            why = f"blob bytes hash to {actual}"
            error = UpstreamDataError(f"{self.source} sent bad data for {self.blob_hash[:16]}…: {why}")
            self.arrival.failed(error)
            return
        self.arrival.verified()
        if self.on_verified is not None:
            self.on_verified()


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
