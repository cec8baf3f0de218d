"""The memory cache for `--mem-cache N`: at most N blobs, least recently used out first.

reflector.go builds it as gcache(MemStore, N, LRU); the trace shows both layers (`mem`,
then `gcache`) as there. `has` does not count as a use.
"""

from __future__ import annotations

from collections import OrderedDict
from time import perf_counter_ns

from prism.store.base import BlobNotFound, BlobRef
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace, Stack


class MemoryCacheStore:
    """A bounded LRU dict of hash -> bytes. All operations are O(1) and never block."""

    def __init__(self, max_blobs: int, name: str = "gcache", inner_name: str = "mem") -> None:
        if max_blobs <= 0:
            raise ValueError(f"memory cache size must be a positive number of blobs, got {max_blobs}")
        self.max_blobs = max_blobs
        self.name = name
        self.inner_name = inner_name
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_hash: object) -> bool:
        return blob_hash in self._blobs

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, evictions=self.evictions)

    async def has(self, blob_hash: str) -> bool:
        return blob_hash in self._blobs

    async def get(self, blob_hash: str) -> BlobRef:
        start = perf_counter_ns()
        data = self._blobs.get(blob_hash)
        if data is None:
            raise BlobNotFound(blob_hash)
        self._blobs.move_to_end(blob_hash)
        elapsed = perf_counter_ns() - start
        trace = BlobTrace((Stack(elapsed, self.inner_name), Stack(elapsed, self.name)))
        return BlobRef(blob_hash, len(data), trace, data=data)

    async def put(self, blob_hash: str, data: bytes) -> None:
        self._blobs[blob_hash] = bytes(data)
        self._blobs.move_to_end(blob_hash)
        while len(self._blobs) > self.max_blobs:
            self._blobs.popitem(last=False)
            self.evictions += 1

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        self._blobs.pop(blob_hash, None)

    async def list_hashes(self) -> list[str]:
        return list(self._blobs)

    async def close(self) -> None:
        self._blobs.clear()
