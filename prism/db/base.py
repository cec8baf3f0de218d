"""What a blob-tracking database offers the DB-backed store (MySQL here, SQLite for localdb)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prism.stream.sd import SdBlob


class TrackAccess(enum.IntEnum):
    """Which `last_accessed_at` a read refreshes (reflector.go's TrackAccess, same numbers)."""

    NONE = 0
    STREAMS = 1
    BLOBS = 2

    @classmethod
    def parse(cls, value: str | int | TrackAccess) -> TrackAccess:
        """`none`/`streams`/`blobs` (any case) or 0/1/2."""
        if isinstance(value, TrackAccess):
            return value
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return cls(int(value))
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown access tracking mode {value!r}: want none, streams or blobs") from None


@dataclass(frozen=True, slots=True)
class StreamBlob:
    """One content blob of a stream as the sd blob lists it."""

    num: int
    hash: str
    length: int


def stream_blobs(sd: SdBlob) -> list[StreamBlob]:
    """The content blobs of a parsed sd blob (the terminator has no hash and is left out)."""
    return [StreamBlob(b.blob_num, b.blob_hash, b.length) for b in sd.content_blobs if b.blob_hash]


@runtime_checkable
class BlobDatabase(Protocol):
    """The operations `DBBackedStore` needs. Every method raises `prism.db.DatabaseError` on failure."""

    async def has_blob(self, blob_hash: str, touch: bool = False) -> bool: ...

    async def has_blobs(self, hashes: Iterable[str], touch: bool = False) -> set[str]: ...

    async def add_blob(self, blob_hash: str, length: int, stored: bool = True) -> int: ...

    async def add_stream(
        self, sd_hash: str, sd_length: int, stream_hash: str, blobs: Iterable[StreamBlob]
    ) -> int: ...

    async def missing_blobs_for_known_stream(self, sd_hash: str) -> list[str]: ...

    async def delete(self, blob_hash: str) -> None: ...

    async def block(self, blob_hash: str) -> None: ...

    async def blocked_hashes(self) -> set[str]: ...
