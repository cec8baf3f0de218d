"""An in-memory blob store (reflector.go's MemStore)."""

from __future__ import annotations

from prism.store.base import BlobNotFound, BlobRef, HoldingsEvents, HoldingsListener, Timer
from prism.store.trace import BlobTrace


class MemoryStore:
    """A dict of hash -> bytes. Never fails except with BlobNotFound."""

    def __init__(self, name: str = "mem") -> None:
        self.name = name
        self.blobs: dict[str, bytes] = {}

    async def has(self, blob_hash: str) -> bool:
        return blob_hash in self.blobs

    async def get(self, blob_hash: str) -> BlobRef:
        timer = Timer()
        try:
            data = self.blobs[blob_hash]
        except KeyError:
            raise BlobNotFound(blob_hash) from None
        return BlobRef.from_bytes(blob_hash, data, BlobTrace.new(timer.elapsed(), self.name))

    async def put(self, blob_hash: str, data: bytes) -> None:
        self.blobs[blob_hash] = bytes(data)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    def borrows_put_data(self) -> bool:
        return True  # `put` keeps a copy

    async def delete(self, blob_hash: str) -> None:
        self.blobs.pop(blob_hash, None)

    async def list_hashes(self) -> list[str]:
        return list(self.blobs)

    async def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.blobs)


class HoldingsMemoryStore(MemoryStore):
    """A MemoryStore that tells listeners what is stored and deleted (a `Holdings` store, worth announcing;
    a plain MemoryStore is not one, as it also serves as the memory cache's inner store)."""

    def __init__(self, name: str = "mem") -> None:
        super().__init__(name)
        self.holdings = HoldingsEvents()

    def watch_holdings(self, listener: HoldingsListener) -> None:
        self.holdings.add(listener)

    async def put(self, blob_hash: str, data: bytes) -> None:
        await super().put(blob_hash, data)
        self.holdings.stored(blob_hash)

    async def delete(self, blob_hash: str) -> None:
        had = blob_hash in self.blobs
        await super().delete(blob_hash)
        if had:
            self.holdings.removed(blob_hash)
