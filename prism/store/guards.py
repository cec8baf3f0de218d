"""Thin wrappers that watch or refuse reads without changing what the store below does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prism.store.base import BlobRef, BlobStore, StoreError, WrappingStore
from prism.store.stats import StoreSnapshot

IsProtected = Callable[[str], Awaitable[bool]]
"""`await is_protected(hash)`: True for blobs only served with an edge token."""


class BytesInCounter(WrappingStore):
    """Counts the blob bytes an upstream store without its own counter hands back (`bytes_in`)."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.bytes_in = 0

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, bytes_in=self.bytes_in)

    async def get(self, blob_hash: str) -> BlobRef:
        ref = await self.inner.get(blob_hash)
        self.bytes_in += ref.size
        return ref


class ProtectedBlobError(StoreError):
    """A protected blob was asked for over a protocol that carries no edge token."""


class ProtectedGuard(WrappingStore):
    """Refuses protected hashes (reflector.md §7.2) for servers without edge tokens (the peer server).

    reflector.go closes the peer connection when a protected hash is in `requested_blobs`;
    this also covers `requested_blob`, which reflector.go forgot (§11 item 4).
    """

    def __init__(self, inner: BlobStore, is_protected: IsProtected) -> None:
        self.inner = inner
        self.name = inner.name
        self.is_protected = is_protected

    async def _check(self, blob_hash: str) -> None:
        if await self.is_protected(blob_hash):
            raise ProtectedBlobError("requested blob is protected")

    async def has(self, blob_hash: str) -> bool:
        await self._check(blob_hash)
        return await self.inner.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        await self._check(blob_hash)
        return await self.inner.get(blob_hash)
