"""A cache in front of an origin (reflector.go's CachingStore, name `caching`).

- `has`: the cache, then the origin when the cache says no.
- `get`: a cache hit is returned; a cache error other than "not found" is returned too
  (never masked by going to the origin); on a miss the blob comes from the origin and is
  checked against its hash. It is then answered from memory at once while it is written to the
  cache in the background: the bytes wait in a staging area bounded in bytes (`staging_bytes`),
  which also serves concurrent gets of the same hash; while that area is full a new fill waits
  for the writes before it. Concurrent misses of one hash make one origin call and one cache write.
- `get_arriving`: `get` that hands a miss on while the origin's bytes still arrive, when the
  origin can (`ArrivingGetter`); the blob is staged and cached once it is verified, and nothing
  is cached when it fails.
- `put`/`put_sd`/`delete`: the origin first (an error aborts), then the cache. A cache is
  best-effort: a failed cache write (a full disk) fails nothing the origin accepted; it is
  counted (`fill_errors`, metric `cache_write_error_total`) and logged once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from time import perf_counter_ns

from prism.blob import HASH_INLINE_MAX, BlobError, verify_blob
from prism.logs import RepeatFilter, log_repeated
from prism.store.arrival import BlobArrival
from prism.store.base import (
    BlobNotFound,
    BlobRef,
    BlobStore,
    StoreError,
    arrived,
    arriving_getter,
    immediate_getter,
    put_borrows_data,
    walk_chain,
)
from prism.store.singleflight import Flights
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace

log = logging.getLogger("prism.store.caching")

DEFAULT_STAGING_BYTES = 128 * 1024 * 1024
"""Bytes of verified blobs a caching layer may hold in memory while they are written to its cache."""


class CorruptBlobError(StoreError):
    """The origin returned bytes that do not hash to the requested name."""


class CachingStore:
    """`cache` in front of `origin`; both are exposed for `find_capability` and the app."""

    def __init__(
        self,
        origin: BlobStore,
        cache: BlobStore,
        component: str = "",
        verify: bool = True,
        staging_bytes: int = DEFAULT_STAGING_BYTES,
    ) -> None:
        self.origin = origin
        self.cache = cache
        self._cache_now = immediate_getter(cache)
        self._origin_arriving = arriving_getter(origin)
        self.component = component
        self.verify = verify
        self.name = "caching"
        self.flights = Flights()
        self.hits = 0
        self.misses = 0
        self.fill_errors = 0
        """Cache writes that failed (fills and puts); none of them failed the caller."""
        self.staging_bytes = staging_bytes
        self.staged_bytes = 0
        self._staged: dict[str, tuple[bytes, asyncio.Future[None]]] = {}
        """Verified blobs being written to the cache: their bytes and the write."""
        self._repeats = RepeatFilter(window=60.0)

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.origin, self.cache)

    def borrows_put_data(self) -> bool:
        # `put` awaits both writes before it returns, so it borrows when both of them do.
        return put_borrows_data(self.origin) and put_borrows_data(self.cache)

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(
            self.name,
            self.component,
            cache_name=self.cache.name,
            hits=self.hits,
            misses=self.misses,
            cache_write_errors=self.fill_errors,
        )

    async def has(self, blob_hash: str) -> bool:
        if await self.cache.has(blob_hash):
            return True
        return await self.origin.has(blob_hash)

    def get_now(self, blob_hash: str) -> BlobRef | None:
        """A hit the cache can hand over at once (or a blob being written to it); None otherwise."""
        start = perf_counter_ns()
        staged = self._staged.get(blob_hash)
        if staged is not None:  # written to the cache right now: served from memory
            self.hits += 1
            trace = BlobTrace.new(perf_counter_ns() - start, self.cache.name).stack(0, self.name)
            return BlobRef.from_bytes(blob_hash, staged[0], trace)
        ref = self._cache_now(blob_hash) if self._cache_now is not None else None
        if ref is not None:
            self.hits += 1
            ref.trace = ref.trace.stack(perf_counter_ns() - start, self.name)
        return ref

    async def get(self, blob_hash: str) -> BlobRef:
        return await arrived(await self.get_arriving(blob_hash))

    async def get_arriving(self, blob_hash: str) -> BlobRef:
        ref = self.get_now(blob_hash)
        if ref is not None:
            return ref
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
        await self._room()
        ref = await self._origin_arriving(blob_hash)
        arrival = ref.arrival
        if arrival is not None:  # verified by the origin as it arrives (an upstream's own check)
            if arrival.done:
                self._stage_arrived(blob_hash, arrival)
            else:
                arrival.listen(partial(self._stage_arrived, blob_hash, arrival))
            return ref
        try:
            in_memory = ref.data is not None or ref.size <= HASH_INLINE_MAX
            data = ref.read() if in_memory else await asyncio.to_thread(ref.read)
            if self.verify:
                if len(data) <= HASH_INLINE_MAX:
                    verify_blob(blob_hash, data)
                else:
                    await asyncio.to_thread(verify_blob, blob_hash, data)
        except BlobError as e:
            raise CorruptBlobError(f"origin {self.origin.name} returned a corrupt blob: {e}") from None
        finally:
            ref.close()
        self._write_behind(blob_hash, data)
        return BlobRef(blob_hash, len(data), ref.trace, data=data)

    def _stage_arrived(self, blob_hash: str, arrival: BlobArrival) -> None:
        """Write an arrived blob behind once it is verified; nothing is cached when it fails."""
        if arrival.is_verified:
            self._write_behind(blob_hash, arrival.buffer)  # type: ignore[arg-type]

    def _write_behind(self, blob_hash: str, data: bytes) -> None:
        """Start writing a verified blob to the cache; staged in memory until written."""
        # A task, not awaited by the caller: a caller that goes away must not leave a written
        # but unindexed blob, and the client need not wait for the disk.
        fill = asyncio.ensure_future(self.cache.put(blob_hash, data))
        self._staged[blob_hash] = (data, fill)
        self.staged_bytes += len(data)
        fill.add_done_callback(lambda f: self._fill_done(blob_hash, len(data), f))

    async def _room(self) -> None:
        """Back-pressure: while the staging area is over its bound, wait for its oldest writes."""
        while self.staged_bytes > self.staging_bytes and self._staged:
            _data, fill = next(iter(self._staged.values()))
            with contextlib.suppress(Exception):  # logged by _fill_done; the download goes on
                await asyncio.shield(fill)
            await asyncio.sleep(0)  # the write's done callback unstages it

    def _fill_done(self, blob_hash: str, size: int, fill: asyncio.Future[None]) -> None:
        staged = self._staged.get(blob_hash)
        if staged is not None and staged[1] is fill:
            del self._staged[blob_hash]
            self.staged_bytes -= size
        if not fill.cancelled() and fill.exception() is not None:
            self._cache_failed(fill.exception())

    def _cache_failed(self, e: BaseException | None) -> None:
        """A failed cache write fails nothing: counted, and logged once per interval."""
        self.fill_errors += 1
        log_repeated(self._repeats, log, logging.WARNING, f"caching in {self.cache.name} failed: {e}")

    async def _settle(self, blob_hash: str) -> None:
        """Wait for a write behind of `blob_hash` to finish (before a put or delete of it)."""
        staged = self._staged.get(blob_hash)
        if staged is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(staged[1])

    async def _cache_put(self, blob_hash: str, data: bytes, sd: bool) -> None:
        await self._settle(blob_hash)
        try:
            await (self.cache.put_sd if sd else self.cache.put)(blob_hash, data)
        except (StoreError, OSError) as e:
            self._cache_failed(e)

    async def put(self, blob_hash: str, data: bytes) -> None:
        await self.origin.put(blob_hash, data)
        await self._cache_put(blob_hash, data, sd=False)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.origin.put_sd(blob_hash, data)
        await self._cache_put(blob_hash, data, sd=True)

    async def delete(self, blob_hash: str) -> None:
        await self._settle(blob_hash)
        await self.origin.delete(blob_hash)
        await self.cache.delete(blob_hash)

    async def drain(self) -> None:
        """Wait until every write behind has finished (written, or failed and counted)."""
        while self._staged:
            _data, fill = next(iter(self._staged.values()))
            with contextlib.suppress(Exception):
                await asyncio.shield(fill)
            await asyncio.sleep(0)  # the write's done callback unstages it

    async def close(self) -> None:
        await self.drain()  # pending writes finish before the cache closes
        try:
            await self.origin.close()
        finally:
            await self.cache.close()


async def drain_fills(store: BlobStore) -> None:
    """Wait for the cache writes every caching layer of the chain is doing behind its answers."""
    for s in walk_chain(store):
        if isinstance(s, CachingStore):
            await s.drain()
