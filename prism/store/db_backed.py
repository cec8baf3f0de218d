"""A store whose existence answers come from a tracking database (reflector.md §3.3 DBBackedStore)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prism.db.base import BlobDatabase, stream_blobs
from prism.db.errors import DatabaseError, DatabaseUnavailable
from prism.store.base import (
    BlobNotFound,
    BlobRef,
    BlobStore,
    StoreError,
    StoreUnavailable,
    Timer,
    put_borrows_data,
)
from prism.stream.errors import SdBlobError
from prism.stream.sd import SdBlob

log = logging.getLogger("prism.store")


class DatabaseStoreError(StoreError):
    """The tracking database failed (down, refused the login, timed out, or rejected a query)."""


class DatabaseDownError(DatabaseStoreError, StoreUnavailable):
    """The tracking database cannot be reached (or timed out): retry later."""


class InvalidSdBlobError(StoreError):
    """An sd blob given to `put_sd` does not parse; nothing was stored."""


@asynccontextmanager
async def _db_errors() -> AsyncIterator[None]:
    try:
        yield
    except DatabaseError as e:
        raise _store_error(e) from e


def _store_error(e: DatabaseError) -> DatabaseStoreError:
    """The store's error for a database error: DatabaseDownError (503, retry later) while it is down."""
    return DatabaseDownError(str(e)) if isinstance(e, DatabaseUnavailable) else DatabaseStoreError(str(e))


class DBBackedStore:
    """Blobs live in `store`; the database decides whether they exist.

    `has` asks the database only (stored = is_stored 1). `get` touches access times and asks
    the inner store only for blobs the database says are stored; with `delete_on_miss`, a blob
    the database lists but the inner store lacks is deleted from both. `put_sd` parses the sd
    blob first (a bad one stores nothing) and records the stream, so the receiver can ask for
    just the missing blobs of a partly uploaded stream. The database is not closed by `close`:
    whoever created it owns it.
    """

    name = "db-backed"

    def __init__(self, store: BlobStore, db: BlobDatabase, delete_on_miss: bool = False) -> None:
        self.inner = store
        self.db = db
        self.delete_on_miss = delete_on_miss
        self._blocked: set[str] | None = None
        self._blocked_lock = asyncio.Lock()

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.inner,)

    def borrows_put_data(self) -> bool:
        # `put_sd` parses `data` and `put` records its length before returning; the bytes go to `inner`.
        return put_borrows_data(self.inner)

    async def has(self, blob_hash: str) -> bool:
        try:  # not `_db_errors()`: this is the hot path, and a context manager costs
            return await self.db.has_blob(blob_hash, touch=False)
        except DatabaseError as e:
            raise _store_error(e) from e

    async def has_many(self, hashes: list[str]) -> set[str]:
        """The stored subset of `hashes`, in one query per 10000."""
        async with _db_errors():
            return await self.db.has_blobs(hashes, touch=False)

    async def get(self, blob_hash: str) -> BlobRef:
        timer = Timer()
        async with _db_errors():
            stored = await self.db.has_blob(blob_hash, touch=True)
        if not stored:
            raise BlobNotFound(blob_hash)
        try:
            ref = await self.inner.get(blob_hash)
        except BlobNotFound:
            if self.delete_on_miss:
                try:
                    await self.delete(blob_hash)
                except (StoreError, OSError) as e:  # the caller asked for a blob: say not found
                    log.warning("could not forget %s after a miss: %s", blob_hash, e)
            raise
        return ref.with_trace(ref.trace.stack(timer.elapsed(), self.name))

    async def put(self, blob_hash: str, data: bytes) -> None:
        await self.inner.put(blob_hash, data)
        async with _db_errors():
            await self.db.add_blob(blob_hash, len(data), stored=True)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        try:
            sd = SdBlob.parse(data)
        except SdBlobError as e:
            raise InvalidSdBlobError(f"sd blob {blob_hash[:16]}... rejected: {e}") from e
        if not sd.stream_hash:
            raise InvalidSdBlobError("sd blob is missing stream hash")
        await self.inner.put_sd(blob_hash, data)
        async with _db_errors():
            await self.db.add_stream(blob_hash, len(data), sd.stream_hash, stream_blobs(sd))

    async def delete(self, blob_hash: str) -> None:
        await self.inner.delete(blob_hash)
        async with _db_errors():
            await self.db.delete(blob_hash)

    async def close(self) -> None:
        await self.inner.close()

    # Blocklister

    async def _blocked_set(self) -> set[str]:
        if self._blocked is None:
            async with self._blocked_lock:
                if self._blocked is None:
                    async with _db_errors():
                        self._blocked = await self.db.blocked_hashes()
        return self._blocked

    async def block(self, blob_hash: str) -> None:
        """Refuse future uploads of `blob_hash` (recorded in the `blocked` table)."""
        blocked = await self._blocked_set()
        if blob_hash in blocked:
            return
        async with _db_errors():
            await self.db.block(blob_hash)
        blocked.add(blob_hash)

    async def is_blocked(self, blob_hash: str) -> bool:
        return blob_hash in await self._blocked_set()

    async def wants(self, blob_hash: str) -> bool:
        """False when the hash is blocked or already stored."""
        if await self.is_blocked(blob_hash):
            return False
        return not await self.has(blob_hash)

    # NeededBlobChecker

    async def missing_blobs_for_known_stream(self, sd_hash: str) -> list[str]:
        """Content blobs of the stream of `sd_hash` not stored yet (empty for an unknown stream)."""
        async with _db_errors():
            return await self.db.missing_blobs_for_known_stream(sd_hash)
