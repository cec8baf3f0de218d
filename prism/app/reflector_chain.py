"""The cache-chain and database pieces `prism reflector` assembles (reflector.md §3.4 step B).

A thin adapter over the cache-chain package (disk and memory caches, caching and
single-flight wrappers, `--disk-cache` parsing) and the DB-backed store, so the
reflector command reads as the spec's recipe.
"""

from __future__ import annotations

from typing import Any

from prism.config import Config
from prism.store.base import BlobStore


def parse_disk_cache(spec: str) -> Any:
    """Parse `SIZE:ABSOLUTE_PATH:MANAGER`; ValueError with a clear reason when malformed."""
    raise NotImplementedError("waiting for the cache-chain issue (#5)")


async def db_backed_origin(origin: BlobStore, config: Config) -> BlobStore:
    """Wrap the origin in the DB-backed store over the main database (`db_conn`)."""
    raise NotImplementedError("waiting for the MySQL issue (#6)")


async def build_cache_chain(
    origin: BlobStore,
    config: Config,
    *,
    disk_cache: str,
    optional_disk_cache: str,
    mem_cache: int,
    closers: list[Any],
    supervisor: Any,
) -> BlobStore:
    """`--disk-cache`, then `--optional-disk-cache`, then `--mem-cache` around `origin`."""
    raise NotImplementedError("waiting for the cache-chain issue (#5)")


def single_flight(component: str, store: BlobStore) -> BlobStore:
    """Collapse concurrent gets of one hash into one call to `store`."""
    raise NotImplementedError("waiting for the cache-chain issue (#5)")
