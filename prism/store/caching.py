"""A cache in front of an origin (reflector.go's CachingStore, name `caching`).

- `has`: the cache, then the origin when the cache says no.
- `get`: a cache hit is returned; a cache error other than "not found" is returned too
  (never masked by going to the origin); on a miss the blob comes from the origin, is
  checked against its hash, written to the cache (a failure there is only logged) and
  returned. Concurrent misses of one hash make one origin call and one cache write.
- `put`/`put_sd`/`delete`: the origin first (an error aborts), then the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import perf_counter_ns

from prism.blob import HASH_INLINE_MAX, BlobError, verify_blob
from prism.store.base import BlobNotFound, BlobRef, BlobStore, StoreError, put_borrows_data
from prism.store.singleflight import Flights
from prism.store.stats import StoreSnapshot

log = logging.getLogger("prism.store.caching")


class CorruptBlobError(StoreError):
    """The origin returned bytes that do not hash to the requested name."""


class CachingStore:
    """`cache` in front of `origin`; both are exposed for `find_capability` and the app."""

    def __init__(self, origin: BlobStore, cache: BlobStore, component: str = "", verify: bool = True) -> None:
        self.origin = origin
        self.cache = cache
        self.component = component
        self.verify = verify
        self.name = "caching"
        self.flights = Flights()
        self.hits = 0
        self.misses = 0
        self.fill_errors = 0

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.origin, self.cache)

    def borrows_put_data(self) -> bool:
        # `put` awaits both writes before it returns, so it borrows when both of them do.
        return put_borrows_data(self.origin) and put_borrows_data(self.cache)

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(
            self.name, self.component, cache_name=self.cache.name, hits=self.hits, misses=self.misses
        )

    async def has(self, blob_hash: str) -> bool:
        if await self.cache.has(blob_hash):
            return True
        return await self.origin.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        start = perf_counter_ns()
        try:
            ref = await self.cache.get(blob_hash)
        except BlobNotFound:
            pass
        else:
            self.hits += 1
            ref.trace = ref.trace.stack(perf_counter_ns() - start, self.name)
            return ref
        self.misses += 1
        ref = await self.flights.run(blob_hash, self._fill)
        ref.trace = ref.trace.stack(perf_counter_ns() - start, self.name)
        return ref

    async def _fill(self, blob_hash: str) -> BlobRef:
        ref = await self.origin.get(blob_hash)
        try:
            data = ref.read() if ref.size <= HASH_INLINE_MAX else await asyncio.to_thread(ref.read)
            if self.verify:
                if len(data) <= HASH_INLINE_MAX:
                    verify_blob(blob_hash, data)
                else:
                    await asyncio.to_thread(verify_blob, blob_hash, data)
        except BlobError as e:
            raise CorruptBlobError(f"origin {self.origin.name} returned a corrupt blob: {e}") from None
        finally:
            ref.close()
        # Shielded: a caller that goes away must not leave a written but unindexed blob.
        fill = asyncio.ensure_future(self.cache.put(blob_hash, data))
        fill.add_done_callback(self._fill_done)
        with contextlib.suppress(Exception):  # logged by _fill_done; the download goes on
            await asyncio.shield(fill)
        return BlobRef(blob_hash, len(data), ref.trace, data=data)

    def _fill_done(self, fill: asyncio.Future[None]) -> None:
        if fill.cancelled():
            return
        e = fill.exception()
        if e is not None:  # a failed cache write must not fail the download
            self.fill_errors += 1
            log.warning("caching in %s failed: %s", self.cache.name, e)

    async def put(self, blob_hash: str, data: bytes) -> None:
        await self.origin.put(blob_hash, data)
        await self.cache.put(blob_hash, data)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.origin.put_sd(blob_hash, data)
        await self.cache.put_sd(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        await self.origin.delete(blob_hash)
        await self.cache.delete(blob_hash)

    async def close(self) -> None:
        try:
            await self.origin.close()
        finally:
            await self.cache.close()
