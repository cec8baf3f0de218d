"""Blobs and small instrumented stores for the cache-chain tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prism.blob import sha384_hex
from prism.store import BlobNotFound, BlobRef, MemoryStore, StoreError


def make_blob(i: int, size: int = 1000) -> tuple[str, bytes]:
    data = (i.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return sha384_hex(data), data


class CountingStore(MemoryStore):
    """A real MemoryStore that counts calls; with `held=True` its gets wait for `release`."""

    def __init__(self, name: str = "origin", *, held: bool = False) -> None:
        super().__init__(name)
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.parked = 0  # gets waiting for `release`
        self._arrived = asyncio.Event()
        self.gets = 0
        self.puts = 0
        self.hass = 0
        self.deletes = 0

    async def has(self, blob_hash: str) -> bool:
        self.hass += 1
        return await super().has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        self.gets += 1
        if not self.release.is_set():
            self.parked += 1
            self._arrived.set()
            try:
                await self.release.wait()
            finally:
                self.parked -= 1
        return await super().get(blob_hash)

    async def until_parked(self, n: int = 1) -> None:
        """Wait until `n` gets are waiting for `release`."""
        while self.parked < n:
            self._arrived.clear()
            await self._arrived.wait()

    async def put(self, blob_hash: str, data: bytes) -> None:
        self.puts += 1
        await super().put(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        self.deletes += 1
        await super().delete(blob_hash)


async def until(condition: Callable[[], bool], turns: int = 100) -> None:
    """Let other tasks run (no time passes) until `condition()` holds."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


class BrokenStore(CountingStore):
    """A store whose selected operations fail with StoreError (a dead disk, a 500 upstream)."""

    def __init__(self, name: str = "broken", fail: tuple[str, ...] = ("has", "get", "put", "delete")) -> None:
        super().__init__(name)
        self.fail = fail

    def _check(self, op: str) -> None:
        if op in self.fail:
            raise StoreError(f"{self.name}: {op} failed")

    async def has(self, blob_hash: str) -> bool:
        self._check("has")
        return await super().has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        self._check("get")
        return await super().get(blob_hash)

    async def put(self, blob_hash: str, data: bytes) -> None:
        self._check("put")
        await super().put(blob_hash, data)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        self._check("put")
        await super().put(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        self._check("delete")
        await super().delete(blob_hash)


__all__ = ["BlobNotFound", "BrokenStore", "CountingStore", "make_blob", "until"]
