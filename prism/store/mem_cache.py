"""The memory cache for `--mem-cache N`: at most N blobs, least recently used out first.

reflector.go builds it as gcache(MemStore, N, LRU); here too it is a bounded LRU index over a
`MemoryStore`, and the trace shows both layers (`mem`, then `gcache`). `has` does not count
as a use.
"""

from __future__ import annotations

from collections import OrderedDict
from time import perf_counter_ns

from prism.store.base import BlobNotFound, BlobRef, WrappingStore
from prism.store.memory import MemoryStore
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace, Stack


class MemoryCacheStore(WrappingStore):
    """A `MemoryStore` holding at most `max_blobs` blobs, evicted LRU. O(1), never blocks."""

    def __init__(self, max_blobs: int, name: str = "gcache", inner_name: str = "mem") -> None:
        if max_blobs <= 0:
            raise ValueError(f"memory cache size must be a positive number of blobs, got {max_blobs}")
        self.max_blobs = max_blobs
        self.name = name
        self.inner: MemoryStore = MemoryStore(inner_name)
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self.inner.blobs = self._blobs  # recency order kept by this cache, bytes by the store
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_hash: object) -> bool:
        return blob_hash in self._blobs

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(
            self.name,
            evictions=self.evictions,
            size_bytes=sum(len(b) for b in self._blobs.values()),
            size_blobs=len(self._blobs),
            capacity_blobs=self.max_blobs,
        )

    def get_now(self, blob_hash: str) -> BlobRef | None:
        # The hot path of a memory hit: read the shared dict directly rather than through
        # `inner.get`, so a hit costs one clock read and one trace, as in a plain dict cache.
        start = perf_counter_ns()
        data = self._blobs.get(blob_hash)
        if data is None:
            return None
        self._blobs.move_to_end(blob_hash)
        elapsed = perf_counter_ns() - start
        trace = BlobTrace((Stack(elapsed, self.inner.name), Stack(elapsed, self.name)))
        return BlobRef(blob_hash, len(data), trace, data=data)

    async def get(self, blob_hash: str) -> BlobRef:
        ref = self.get_now(blob_hash)
        if ref is None:
            raise BlobNotFound(blob_hash)
        return ref

    async def put(self, blob_hash: str, data: bytes) -> None:
        await self.inner.put(blob_hash, data)
        self._blobs.move_to_end(blob_hash)
        while len(self._blobs) > self.max_blobs:
            self._blobs.popitem(last=False)
            self.evictions += 1

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    def borrows_put_data(self) -> bool:
        return True  # the inner MemoryStore keeps a copy

    async def list_hashes(self) -> list[str]:
        return await self.inner.list_hashes()

    async def close(self) -> None:
        self._blobs.clear()
