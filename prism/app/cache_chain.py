"""Building the cache layers of `prism reflector` from its flags (reflector.md §1.3, §3.4 step B).

`--disk-cache` / `--optional-disk-cache` take `SIZE:PATH:MANAGER`:

- SIZE: a positive integer with an optional unit, binary multiples as c2h5oh/datasize
  (`B`, `KB`=2^10, `MB`=2^20, `GB`=2^30, `TB`, `PB`, `EB`, case-insensitive, also `K`, `M`,
  ... and the spelled-out forms); `Kb`, `Mb`, ... (bits) are refused.
- PATH: absolute (starts with `/`), so it cannot contain `:`.
- MANAGER: one of `MANAGERS`; reflector.go's names map to prism's policies by `MANAGER_POLICY`.

An empty value means "no such cache". `--mem-cache N` adds an N-blob LRU memory cache in front.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass, field

from prism.config import parse_mysql_dsn
from prism.db.localdb import LocalDBIndex, MysqlLocalDB, SqliteLocalDB
from prism.store.base import BlobStore
from prism.store.caching import CachingStore, drain_fills
from prism.store.disk import DiskStore
from prism.store.disk_cache import AccessIndex, DiskCacheStore
from prism.store.eviction import make_policy
from prism.store.mem_cache import MemoryCacheStore
from prism.store.singleflight import SingleFlightStore

log = logging.getLogger("prism.cache")

MANAGER_POLICY: dict[str, str] = {
    "lru": "lru",
    "lfuda": "lfuda",
    "tinylfu": "tinylfu",
    "localdb": "lru",  # LRU by last access, persisted in the localdb index
    # reflector.go's gcache strategies:
    "lfu": "lfuda",  # LFU plus aging: plain LFU keeps once-popular blobs forever
    "arc": "tinylfu",  # both adapt between recency and frequency and resist scans
    "simple": "lru",  # gcache SIMPLE evicts arbitrary keys; LRU is never worse
}
"""Accepted cache managers and the eviction policy each one runs."""

MANAGERS = tuple(MANAGER_POLICY)

_UNITS = {
    1: ("", "b", "byte"),
    1 << 10: ("k", "kb", "kilo", "kilobyte", "kilobytes"),
    1 << 20: ("m", "mb", "mega", "megabyte", "megabytes"),
    1 << 30: ("g", "gb", "giga", "gigabyte", "gigabytes"),
    1 << 40: ("t", "tb", "tera", "terabyte", "terabytes"),
    1 << 50: ("p", "pb", "peta", "petabyte", "petabytes"),
    1 << 60: ("e", "eb", "exa", "exabyte", "exabytes"),
}
_MULTIPLIER = {name: mult for mult, names in _UNITS.items() for name in names}
_BITS = {"Kb", "Mb", "Gb", "Tb", "Pb", "Eb"}
_SIZE = re.compile(r"^([0-9]+)(.*)$", re.DOTALL)
_MAX_SIZE = (1 << 64) - 1

EXAMPLE = "100GB:/tmp/downloaded_blobs:localdb"


class DiskCacheSpecError(ValueError):
    """A `--disk-cache` value is malformed; the message says which part and why."""


def parse_size(text: str) -> int:
    """Bytes in a datasize string such as `100GB`, `500MB`, `2gb`, `1024`."""
    m = _SIZE.match(text)
    if not m:
        raise DiskCacheSpecError(
            f"invalid size {text!r}: want a whole number with an optional unit, e.g. 100GB"
        )
    number, unit = int(m[1]), m[2].strip()
    if unit[:1] in (".", ","):
        raise DiskCacheSpecError(f"invalid size {text!r}: only whole numbers are accepted, e.g. 1536MB")
    if unit in _BITS:
        raise DiskCacheSpecError(f"invalid size {text!r}: {unit!r} means bits; use {unit[0]}B for bytes")
    mult = _MULTIPLIER.get(unit.lower())
    if mult is None:
        raise DiskCacheSpecError(
            f"invalid size {text!r}: unknown unit {unit!r}; use B, KB, MB, GB, TB, PB or EB"
        )
    size = number * mult
    if size > _MAX_SIZE:
        raise DiskCacheSpecError(f"invalid size {text!r}: too large")
    return size


@dataclass(frozen=True, slots=True)
class DiskCacheSpec:
    """A parsed `SIZE:PATH:MANAGER`."""

    size: int
    path: str
    manager: str

    @property
    def policy(self) -> str:
        return MANAGER_POLICY[self.manager]


def parse_disk_cache_spec(text: str) -> DiskCacheSpec | None:
    """Parse `SIZE:PATH:MANAGER`; None for an empty value (no cache)."""
    if text == "":
        return None
    parts = text.split(":")
    if len(parts) != 3:
        raise DiskCacheSpecError(
            f"{text!r} is formatted incorrectly: expected SIZE:PATH:MANAGER with exactly three "
            f"':'-separated parts (got {len(parts)}), for example {EXAMPLE!r}"
        )
    size_text, path, manager = parts
    if not path.startswith("/"):
        raise DiskCacheSpecError(
            f"{text!r}: the disk cache path must be absolute (start with '/'), got {path!r}"
        )
    if manager not in MANAGER_POLICY:
        raise DiskCacheSpecError(
            f"{text!r}: cache manager {manager!r} is not supported; use one of {', '.join(MANAGERS)}"
        )
    if size_text == "":
        raise DiskCacheSpecError(f"{text!r}: the size is empty; give one such as 100GB")
    size = parse_size(size_text)
    if size <= 0:
        raise DiskCacheSpecError(f"{text!r}: disk cache size must be more than 0")
    return DiskCacheSpec(size, path, manager)


def make_local_db_index(cache_dir: str, local_db_conn: str = "", flush_interval: float = 1.0) -> AccessIndex:
    """The localdb index: SQLite inside `cache_dir`, or MySQL when `local_db_conn` is a DSN."""
    if local_db_conn:
        return LocalDBIndex(MysqlLocalDB(parse_mysql_dsn(local_db_conn)), flush_interval)
    return LocalDBIndex(SqliteLocalDB.in_cache_dir(cache_dir), flush_interval)


def make_disk_cache(spec: DiskCacheSpec, local_db_conn: str = "", component: str = "nvme") -> DiskCacheStore:
    """A (not yet started) disk cache for a parsed spec; creates the directory."""
    os.makedirs(spec.path, exist_ok=True)
    disk = DiskStore(spec.path, durable=False)  # a cache tier: the origin keeps blobs durably
    policy = make_policy(spec.policy, spec.size, item_size_hint=1 << 20)
    index = make_local_db_index(spec.path, local_db_conn) if spec.manager == "localdb" else None
    return DiskCacheStore(disk, spec.size, policy, index=index, component=component)


@dataclass
class CacheChain:
    """The outer store and the caches inside it, innermost first.

    A component: `start()` indexes the disk caches, `stop()` snapshots them or flushes the
    localdb access times (outermost first). The memory cache needs neither.
    """

    store: BlobStore
    caches: list[DiskCacheStore | MemoryCacheStore] = field(default_factory=list)

    async def start(self) -> None:
        for c in self.caches:
            if isinstance(c, DiskCacheStore):
                await c.start()

    async def stop(self, grace: float = 5.0) -> None:
        try:  # fills written behind their answers land before the indexes are saved
            await asyncio.wait_for(drain_fills(self.store), grace)
        except TimeoutError:
            log.warning("cache writes still pending after %.0fs; stopping without them", grace)
        for c in reversed(self.caches):
            if isinstance(c, DiskCacheStore):
                await c.stop(grace)


def build_cache_chain(
    origin: BlobStore,
    disk_cache: str = "",
    optional_disk_cache: str = "",
    mem_cache: int = 0,
    local_db_conn: str = "",
    *,
    verify_origin: bool = True,
) -> CacheChain:
    """Stack the caches on `origin` as reflector.go's initCaches does, innermost first.

    `verify_origin=False` when the origin already checks each blob's SHA-384 on arrival (a
    network upstream): no cache fill then hashes the same bytes again.
    Raises DiskCacheSpecError for malformed flags before creating anything.
    """
    specs = [parse_disk_cache_spec(disk_cache), parse_disk_cache_spec(optional_disk_cache)]
    if mem_cache < 0:
        raise DiskCacheSpecError(f"--mem-cache must be >= 0, got {mem_cache}")
    store: BlobStore = SingleFlightStore(origin, component="reflector")
    chain = CacheChain(store)
    # Only blobs from the origin are hashed on their way in; outer layers fill from caches
    # that hold verified blobs already.
    verify = verify_origin
    for spec in specs:
        if spec is None:
            continue
        cache = make_disk_cache(spec, local_db_conn)
        chain.caches.append(cache)
        store = CachingStore(store, cache, component="reflector", verify=verify)
        verify = False
    if mem_cache > 0:
        mem = MemoryCacheStore(mem_cache)
        chain.caches.append(mem)
        store = CachingStore(store, mem, component="reflector", verify=verify)
    chain.store = store
    return chain
