"""The typed counters a store of a chain reports to metrics (`snapshot()`), read at scrape time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What one store has counted; None where the store keeps no such counter."""

    name: str
    component: str = ""
    bytes_in: int | None = None
    """Blob bytes received from an upstream."""
    bytes_out: int | None = None
    """Blob bytes sent to an origin that stores them (S3)."""
    endpoint_hits: tuple[int, ...] | None = None
    """Gets served per origin endpoint: the first one, then its fallback."""
    cache_name: str | None = None
    """For a caching layer: the name of its cache, which labels its hits and misses."""
    hits: int | None = None
    """For a caching layer: gets its cache answered."""
    misses: int | None = None
    """For a caching layer: gets that went to its origin."""
    cache_write_errors: int | None = None
    """For a caching layer: writes to its cache that failed (each logged at most once per interval)."""
    evictions: int | None = None
    in_flight: int | None = None
    """For a single-flight layer: callers doing the work."""
    waiting: int | None = None
    """For a single-flight layer: callers waiting on another caller's work."""
    size_bytes: int | None = None
    """For a cache: bytes of blobs it holds now."""
    size_blobs: int | None = None
    """For a cache: blobs it holds now."""
    capacity_bytes: int | None = None
    """For a cache bounded in bytes (a disk cache): its size limit."""
    capacity_blobs: int | None = None
    """For a cache: the blobs it can hold (a disk cache: its size over the 2 MiB blob limit)."""


@runtime_checkable
class CounterSource(Protocol):
    """A store that reports counters."""

    def snapshot(self) -> StoreSnapshot: ...
