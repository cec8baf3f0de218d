"""Read from one store, and from another when that fails (reflector.go's ITTT, "if this then that").

Used for two HTTP origins (a CDN and its fallback). Read-only: writes raise ReadOnlyStoreError.
`ReadWriteSplitStore` (reflector.go's CloudFrontRW) reads from such an origin and writes elsewhere (S3).
"""

from __future__ import annotations

import logging

from prism.store.base import BlobRef, BlobStore, ReadOnlyStore, Timer, WrappingStore

log = logging.getLogger("prism.store.fallback")


class FallbackStore(ReadOnlyStore):
    """`get` from `first`; on any error (not found included) `get` from `second`."""

    def __init__(self, first: BlobStore, second: BlobStore, name: str = "ittt") -> None:
        self.first = first
        self.second = second
        self.name = name
        self.first_hits = 0  # reflector_ittt_this_hit_total
        self.second_hits = 0  # reflector_ittt_that_hit_total

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.first, self.second)

    async def has(self, blob_hash: str) -> bool:
        try:
            if await self.first.has(blob_hash):
                return True
        except Exception as e:
            log.debug("%s.has failed, asking %s: %s", self.first.name, self.second.name, e)
        return await self.second.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        timer = Timer()
        try:
            ref = await self.first.get(blob_hash)
            self.first_hits += 1
        except Exception as e:
            log.debug("%s.get failed, asking %s: %s", self.first.name, self.second.name, e)
            ref = await self.second.get(blob_hash)
            self.second_hits += 1
        ref.trace = ref.trace.stack(timer.elapsed(), self.name)
        return ref

    async def close(self) -> None:
        try:
            await self.first.close()
        finally:
            await self.second.close()


class ReadWriteSplitStore(WrappingStore):
    """Reads (`has`, `get`) from `reader`, writes and deletes to `writer` (reflector.go's CloudFrontRW:
    blobs are read through the CDN in front of a bucket and uploaded to the bucket itself)."""

    def __init__(self, reader: BlobStore, writer: BlobStore, name: str = "cloudfront_rw") -> None:
        self.inner = reader
        self.writer = writer
        self.name = name

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.inner, self.writer)

    async def put(self, blob_hash: str, data: bytes) -> None:
        await self.writer.put(blob_hash, data)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.writer.put_sd(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        await self.writer.delete(blob_hash)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            await self.writer.close()
