"""A disk cache with a byte capacity and an eviction policy (`--disk-cache SIZE:PATH:MANAGER`).

Blobs live in a `DiskStore`; which ones stay is decided by an in-memory `EvictionPolicy`
(lru, lfuda, tinylfu). With the `localdb` manager the access times are also kept in a
database (`AccessIndex`, see `prism.db.localdb`) so they survive restarts and can be
shared with reflector.go tooling; writes to it are batched off the request path.

- Hit path: one dict lookup, one `open` (the file handed back is already open, so an
  eviction that unlinks it meanwhile never breaks the read), O(1) policy bookkeeping.
- When stored bytes pass the capacity, the coldest blobs are evicted until the cache is at
  `low_watermark` x capacity.
- The file system's real free space is checked (statvfs) before each write: below `free_margin`
  the coldest blobs are evicted to make room, and when that is not enough the blob is not cached
  (a cache is best-effort; its byte bookkeeping does not know what else fills the disk).
- Files are written without fsync: the origin holds the durable copy.
- `start()` rebuilds the index from the directory (and from the snapshot written by the last
  `stop()`, or from the database for localdb). Blobs on disk that the index does not know
  are adopted, never deleted; what does not fit is evicted coldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Protocol

from prism.blob import MAX_BLOB_SIZE, is_valid_hash, validate_hash
from prism.logs import RepeatFilter, log_repeated
from prism.store.base import (
    BlobNotFound,
    BlobRef,
    BlobStore,
    HoldingsEvents,
    HoldingsListener,
    StoreError,
    Timer,
    put_borrows_data,
)
from prism.store.disk import TMP_DIR, DiskBlob, DiskStore, scan_blobs
from prism.store.eviction import EvictionPolicy, PolicyEntry
from prism.store.stats import StoreSnapshot

log = logging.getLogger("prism.cache")

SNAPSHOT_NAME = "cache-index.txt"
SNAPSHOT_MAGIC = "prism-cache-index 1"
QUARANTINE_DIR = "quarantine"
DEFAULT_LOW_WATERMARK = 0.95
DEFAULT_FREE_MARGIN = 64 * 1024 * 1024
"""Free bytes a disk cache leaves on its file system (for logs, databases, other writers)."""
FREE_RECHECK_SECONDS = 1.0
"""statvfs costs up to a millisecond on some file systems (overlayfs): between two readings, what
the cache wrote is subtracted from the last one, and it is read again after this long."""
GCACHE_NAME = "gcache"
"""Trace and metric name of a disk cache indexed in memory (reflector.go's GcacheStore)."""
LOCALDB_NAME = "db-backed"
"""Trace and metric name of a disk cache with a localdb index. reflector.go builds that cache as
a DBBackedStore over the disk, so its Via traces and `cache_type` labels say `db-backed`
(reflector.md §3.4, §6); dashboards and trace readers keep working."""


class AccessIndex(Protocol):
    """Persistent record of stored blobs and their last access (the localdb manager).

    The `record_*` methods only note the change in memory (O(1)); a background flusher
    writes them in batches. `load` returns (hash, size, last access as unix time) of every
    blob the index believes is stored.
    """

    async def start(self) -> None: ...

    async def stop(self, grace: float = 5.0) -> None: ...

    async def load(self) -> list[tuple[str, int, float]]: ...

    def record_add(self, blob_hash: str, size: int, accessed_at: float | None = None) -> None: ...

    def record_access(self, blob_hash: str) -> None: ...

    def record_delete(self, blob_hash: str) -> None: ...

    async def flush(self) -> None: ...


@dataclass(slots=True)
class RebuildReport:
    blobs: int = 0
    bytes: int = 0
    adopted: int = 0
    forgotten: int = 0  # known to the index or snapshot but gone from disk
    evicted: int = 0
    seconds: float = 0.0


class DiskCacheStore:
    """Blobs on disk, at most `capacity` bytes of them, evicted by `policy`."""

    def __init__(
        self,
        disk: DiskStore,
        capacity: int,
        policy: EvictionPolicy,
        *,
        index: AccessIndex | None = None,
        low_watermark: float = DEFAULT_LOW_WATERMARK,
        name: str | None = None,
        component: str = "",
        free_margin: int = DEFAULT_FREE_MARGIN,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"disk cache capacity must be positive, got {capacity}")
        if not 0.0 < low_watermark <= 1.0:
            raise ValueError(f"low watermark must be in (0, 1], got {low_watermark}")
        self.inner = disk
        self.disk = disk
        self.capacity = capacity
        self.policy = policy
        self.index = index
        self.low_watermark = low_watermark
        self.free_margin = free_margin
        self.skipped_no_space = 0
        """Blobs not cached because the file system had no room above `free_margin`."""
        self._repeats = RepeatFilter(window=60.0)
        self._free = (0, -FREE_RECHECK_SECONDS)
        """(free bytes minus what was written since, when read) of the last statvfs."""
        self.name = name or (LOCALDB_NAME if index is not None else GCACHE_NAME)
        self.component = component
        self.hits = 0
        self.evictions = 0
        self.rebuild: RebuildReport | None = None
        self._started = False
        self._stopped = False
        self._evicting: dict[str, asyncio.Future[None]] = {}
        self.holdings = HoldingsEvents()

    def watch_holdings(self, listener: HoldingsListener) -> None:
        self.holdings.add(listener)

    @property
    def root(self) -> str:
        return self.disk.root

    @property
    def stored_bytes(self) -> int:
        return self.policy.bytes

    def __len__(self) -> int:
        return len(self.policy)

    # -- lifecycle ---------------------------------------------------------------------------

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.disk,)

    async def start(self) -> None:
        """Rebuild the index from disk (and snapshot or database), then start the flusher."""
        if self._started:
            return
        t0 = time.monotonic()
        rows: list[tuple[str, int, float]] | None = None
        if self.index is not None:
            await self.index.start()
            rows = await self.index.load()
        entries, adopted, forgotten = await asyncio.to_thread(self._plan_rebuild, rows)
        self.policy.restore(entries)
        if self.index is not None:
            for b in adopted:
                self.index.record_add(b.hash, b.size, b.stamp)
            for h in forgotten:
                self.index.record_delete(h)
        report = RebuildReport(len(entries), self.policy.bytes, len(adopted), len(forgotten))
        self._started = True
        report.evicted = await self._evict_to(
            int(self.capacity * self.low_watermark), threshold=self.capacity
        )
        if self.index is not None:
            await self.index.flush()
        report.seconds = time.monotonic() - t0
        self.rebuild = report
        log.info(
            "%s cache %s: %d blobs (%d bytes) indexed in %.2fs, %d adopted, %d forgotten, %d evicted",
            self.policy.name,
            self.root,
            report.blobs,
            report.bytes,
            report.seconds,
            report.adopted,
            report.forgotten,
            report.evicted,
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Persist the index (snapshot file, or the database's pending writes)."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        for fut in list(self._evicting.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(fut), grace)
        if self.index is not None:
            await self.index.stop(grace)
        else:
            entries = self.policy.export()
            try:
                await asyncio.to_thread(write_snapshot, self.root, self.policy.name, entries)
            except OSError as e:  # a full disk: the next start rebuilds from the directory
                log.warning("cannot write the index snapshot of cache %s: %s", self.root, e)

    async def close(self) -> None:
        await self.stop()
        await self.disk.close()

    def _plan_rebuild(
        self, rows: list[tuple[str, int, float]] | None
    ) -> tuple[list[PolicyEntry], list[DiskBlob], list[str]]:
        blobs = {b.hash: b for b in scan_blobs(self.root, self.disk.prefix_length)}
        if rows is not None:
            known = {h: ts for h, _size, ts in rows}
            forgotten = [h for h in known if h not in blobs]
            adopted = [b for h, b in blobs.items() if h not in known]
            order = sorted(blobs.values(), key=lambda b: known.get(b.hash, b.stamp))
            return [PolicyEntry(b.hash, b.size) for b in order], adopted, forgotten
        snapshot = read_snapshot(self.root)
        if snapshot is None:
            order = sorted(blobs.values(), key=lambda b: b.stamp)
            return [PolicyEntry(b.hash, b.size) for b in order], [], []
        written_at, snap_entries = snapshot
        kept = [
            PolicyEntry(e.key, blobs[e.key].size, e.freq, e.score) for e in snap_entries if e.key in blobs
        ]
        in_snapshot = {e.key for e in snap_entries}
        forgotten = [e.key for e in snap_entries if e.key not in blobs]
        unknown = sorted((b for h, b in blobs.items() if h not in in_snapshot), key=lambda b: b.stamp)
        # Unknown blobs older than the snapshot were there but not indexed: adopt them as the
        # coldest. Newer ones arrived after it (e.g. before a crash): adopt them as the hottest.
        low = min((e.score for e in kept), default=1.0)
        cold = [PolicyEntry(b.hash, b.size, 1, low) for b in unknown if b.stamp <= written_at]
        hot = [PolicyEntry(b.hash, b.size) for b in unknown if b.stamp > written_at]
        return cold + kept + hot, [*unknown], forgotten

    # -- BlobStore ---------------------------------------------------------------------------

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(
            self.name,
            self.component,
            evictions=self.evictions,
            size_bytes=self.stored_bytes,
            size_blobs=len(self.policy),
            capacity_bytes=self.capacity,
            capacity_blobs=self.capacity // MAX_BLOB_SIZE,
        )

    async def has(self, blob_hash: str) -> bool:
        return blob_hash in self.policy

    async def get(self, blob_hash: str) -> BlobRef:
        if blob_hash not in self.policy:
            raise BlobNotFound(blob_hash)
        timer = Timer()
        try:
            ref = await self.disk.get(blob_hash)
        except BlobNotFound:
            # Removed behind our back (an operator, check-integrity): forget it.
            self._forget(blob_hash)
            raise
        self.policy.touch(blob_hash)
        if self.index is not None:
            self.index.record_access(blob_hash)
        self.hits += 1
        ref.trace = ref.trace.stack(timer.elapsed(), self.name)
        return ref

    async def put(self, blob_hash: str, data: bytes) -> None:
        validate_hash(blob_hash)
        if not self._started:
            raise StoreError(f"disk cache {self.root} is not started")
        size = len(data)
        if size > self.capacity:
            log.debug("not caching %s: %d bytes is more than the whole cache", blob_hash[:16], size)
            return
        if self.policy.size_of(blob_hash) == size and os.path.exists(self.disk.path_of(blob_hash)):
            self.policy.touch(blob_hash)
            return
        if not await self._room_on_disk(size):
            return
        while True:
            pending = self._evicting.get(blob_hash)
            if pending is not None:  # its unlink must not remove the file we write
                await asyncio.shield(pending)
            await self.disk.put(blob_hash, data, durable=False)
            if blob_hash not in self._evicting:  # (an eviction may have picked it meanwhile)
                break
        self.policy.remove(blob_hash)
        over = self.policy.bytes + size > self.capacity
        target = int(self.capacity * self.low_watermark) if over else self.capacity
        victims = [h for h, _ in self.policy.admit(blob_hash, size, target)]
        self.evictions += len(victims)
        if self.index is not None:
            for h in victims:  # (the newcomer too, if the policy refused it)
                self.index.record_delete(h)
            if blob_hash in self.policy:
                self.index.record_add(blob_hash, size)
        if blob_hash in self.policy:
            self.holdings.stored(blob_hash)
        if victims:
            await self._remove_files(victims)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    def borrows_put_data(self) -> bool:
        return put_borrows_data(self.disk)  # `put` writes through `disk` (or skips the blob)

    async def delete(self, blob_hash: str) -> None:
        validate_hash(blob_hash)
        self._forget(blob_hash)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.disk.path_of(blob_hash))

    async def list_hashes(self) -> list[str]:
        return list(self.policy.keys())

    # -- eviction ----------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """What the file system under the cache has free for unprivileged writers."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _free_estimate(self, size: int) -> int:
        """Free bytes after writing `size` more: the last statvfs reading less what was written since."""
        free, read_at = self._free
        now = time.monotonic()
        if now - read_at >= FREE_RECHECK_SECONDS or free < size + self.free_margin:
            free, read_at = self.free_bytes(), now
        self._free = (free - size, read_at)
        return free

    async def _room_on_disk(self, size: int) -> bool:
        """Whether `size` more bytes fit above `free_margin`, after evicting cold blobs if needed."""
        short = size + self.free_margin - self._free_estimate(size)
        if short <= 0:
            return True
        victims = self._select_victims(max(self.policy.bytes - short, 0))
        await self._remove_files(victims)
        self._free = (0, -FREE_RECHECK_SECONDS)  # read again next time
        if size + self.free_margin <= self.free_bytes():
            return True
        self.skipped_no_space += 1
        message = f"disk cache {self.root}: file system nearly full, not caching new blobs"
        log_repeated(self._repeats, log, logging.WARNING, message)
        return False

    def _forget(self, blob_hash: str) -> None:
        if self.policy.remove(blob_hash) is not None:
            self.holdings.removed(blob_hash)
            if self.index is not None:
                self.index.record_delete(blob_hash)

    async def _evict_to(self, target: int, threshold: int | None = None) -> int:
        """Evict until at most `target` bytes remain (if over `threshold`, default target)."""
        if self.policy.bytes <= (target if threshold is None else threshold):
            return 0
        victims = self._select_victims(target)
        await self._remove_files(victims)
        return len(victims)

    def _select_victims(self, target: int) -> list[str]:
        """Take victims out of the index (synchronously) until at most `target` bytes remain."""
        victims: list[str] = []
        while self.policy.bytes > target:
            v = self.policy.pop_victim()
            if v is None:
                break
            victims.append(v[0])
        self.evictions += len(victims)
        if self.index is not None:
            for h in victims:
                self.index.record_delete(h)
        return victims

    async def _remove_files(self, victims: list[str]) -> None:
        if not victims:
            return
        for h in victims:
            self.holdings.removed(h)
        log.debug("evicting %d blobs from %s", len(victims), self.root)
        if len(victims) <= 8:
            self._unlink_many(victims)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for h in victims:
            self._evicting[h] = done
        try:
            await asyncio.to_thread(self._unlink_many, victims)
        finally:
            for h in victims:
                if self._evicting.get(h) is done:
                    del self._evicting[h]
            done.set_result(None)

    def _unlink_many(self, hashes: list[str]) -> None:
        for h in hashes:
            try:
                os.unlink(self.disk.path_of(h))
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot evict %s: %s", h[:16], e)


def write_snapshot(root: str, policy_name: str, entries: list[PolicyEntry]) -> None:
    """Atomically write the policy's order (coldest first) to `<root>/cache-index.txt`."""
    path = os.path.join(root, SNAPSHOT_NAME)
    tmp = os.path.join(root, TMP_DIR, f"{SNAPSHOT_NAME}.{os.getpid()}")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{SNAPSHOT_MAGIC} {policy_name} {time.time():.3f}\n")
        f.writelines(f"{e.key} {e.size} {e.freq} {e.score!r}\n" for e in entries)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_snapshot(root: str) -> tuple[float, list[PolicyEntry]] | None:
    """(time written, entries coldest first) or None when absent or unreadable."""
    path = os.path.join(root, SNAPSHOT_NAME)
    try:
        with open(path, encoding="ascii") as f:
            header = f.readline().split()
            if len(header) != 4 or " ".join(header[:2]) != SNAPSHOT_MAGIC:
                log.warning("ignoring %s: not a prism cache index", path)
                return None
            written_at = float(header[3])
            entries = []
            for line in f:
                parts = line.split()
                if len(parts) == 4 and is_valid_hash(parts[0]):
                    entries.append(PolicyEntry(parts[0], int(parts[1]), int(parts[2]), float(parts[3])))
            return written_at, entries
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("ignoring unreadable cache index %s: %s", path, e)
        return None
