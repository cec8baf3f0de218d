"""The cache-chain and database pieces `prism reflector` assembles (reflector.md §3.4).

A thin adapter over the cache-chain package (`prism.app.cache_chain`: disk and memory
caches, caching and single-flight wrappers, `--disk-cache` parsing) and the DB-backed store
(`prism.store.db_backed`), so the reflector command reads as the spec's recipe.
"""

from __future__ import annotations

import logging
from typing import Any

from prism.config import Config
from prism.store.base import BlobStore

log = logging.getLogger("prism.app")


class MissingComponentError(ValueError):
    """This build lacks a package the flags need (reported like a configuration error)."""


def parse_disk_cache(spec: str) -> Any:
    """Parse `SIZE:ABSOLUTE_PATH:MANAGER`; ValueError with a clear reason when malformed."""
    from prism.app.cache_chain import parse_disk_cache_spec

    return parse_disk_cache_spec(spec)


async def db_backed_origin(origin: BlobStore, config: Config) -> tuple[BlobStore, Any]:
    """The origin wrapped in the DB-backed store over the main database (`db_conn`).

    Returns (store, database); the database is a component to start and stop.
    """
    try:
        from prism.db.mysql import MysqlDatabase
        from prism.store.db_backed import DBBackedStore
    except ImportError as e:  # pragma: no cover - only before the MySQL issue lands
        raise MissingComponentError(f"--use-db needs the database package, missing here: {e}") from e
    db = MysqlDatabase.from_dsn(config.db_conn, track_access="streams")
    return DBBackedStore(origin, db, delete_on_miss=False), db


def build_cache_chain(
    origin: BlobStore, config: Config, *, disk_cache: str, optional_disk_cache: str, mem_cache: int
) -> Any:
    """`--disk-cache`, then `--optional-disk-cache`, then `--mem-cache` around `origin`.

    Returns the cache-chain object: `.store` is the outer store; it is a component
    (`start()` indexes the disk caches, `stop()` flushes the localdb access times).
    """
    from prism.app.cache_chain import build_cache_chain as build

    return build(
        origin,
        disk_cache=disk_cache,
        optional_disk_cache=optional_disk_cache,
        mem_cache=mem_cache,
        local_db_conn=config.local_db_conn,
    )


def single_flight(component: str, store: BlobStore) -> BlobStore:
    """Collapse concurrent gets of one hash into one call to `store`."""
    from prism.store.singleflight import SingleFlightStore

    return SingleFlightStore(store, component=component)
