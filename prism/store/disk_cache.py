"""A disk cache with a byte capacity and an eviction policy (`--disk-cache SIZE:PATH:MANAGER`).

Blobs live in a `DiskStore`; which ones stay is decided by an in-memory `EvictionPolicy`
(lru, lfuda, tinylfu). With the `localdb` manager the access times are also kept in a
database (`AccessIndex`, see `prism.db.localdb`) so they survive restarts and can be
shared with reflector.go tooling; writes to it are batched off the request path.

- Hit path: one dict lookup, one `open` (the file handed back is already open, so an
  eviction that unlinks it meanwhile never breaks the read), O(1) policy bookkeeping.
- The index keys a blob by its 48 raw hash bytes, not its 96-character name.
- When stored bytes pass the capacity, the coldest blobs are evicted until the cache is at
  `low_watermark` x capacity.

Start and stop. A cache tier does not need durable writes (the origin has the blob), so its
files may be lost or truncated by a crash or a power loss. `stop()` writes the index (a
binary snapshot, `cache-index.bin`, or the localdb's pending writes), flushes the cache's
file system (`syncfs`) and then writes a clean-shutdown mark (`cache-index.clean`) naming
that snapshot; `start()` takes the mark away (durably) before it serves anything.

- Warm start (the mark is there): the index is the snapshot (or the localdb rows) as is;
  the directory is not walked before serving. A background task then lists it once (names
  only; it stats just the unknown files): blobs the index does not know (copied in while
  prism was stopped) are adopted, unverified, and entries whose file is gone are forgotten
  (a get of one before that forgets it too). Nothing is ever deleted by this.
- Cold start (no mark: first start, an old snapshot format, or an unclean shutdown): the
  directory is scanned as before (sizes from the scan, order from the snapshot or the
  localdb rows, unknown blobs adopted), and every blob found is *unverified*.
- Unverified blobs: the first get of one reads and hashes the file (off the loop when
  large) before handing it out. A file whose SHA-384 does not match its name is removed and
  the get is a miss, so the caching layer above fetches the blob again. A put of the blob
  rewrites it. Blobs still unverified at a clean stop are listed in the mark and stay so.
  The check is the hash, not the size the scan found: a power loss can leave a file of the
  right length full of zeros. It costs one SHA-384 per blob, once, and only after a crash.
- The file system's real free space is checked (statvfs) before each write: below `free_margin`
  the coldest blobs are evicted to make room, and when that is not enough the blob is not cached
  (a cache is best-effort; its byte bookkeeping does not know what else fills the disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from prism.blob import (
    HASH_BYTES,
    HASH_INLINE_MAX,
    MAX_BLOB_SIZE,
    BlobError,
    is_valid_hash,
    validate_hash,
    verify_blob,
)
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
from prism.store.disk import TMP_DIR, DiskStore, fsync_directory, scan_blob_entries, scan_blobs
from prism.store.eviction import EvictionPolicy, PolicyEntry
from prism.store.stats import StoreSnapshot

log = logging.getLogger("prism.cache")

SNAPSHOT_NAME = "cache-index.bin"
SNAPSHOT_MAGIC = "prism-cache-index 2"
LEGACY_SNAPSHOT_NAME = "cache-index.txt"
"""The text snapshot of earlier versions: read for its order (a cold start), never written."""
LEGACY_SNAPSHOT_MAGIC = "prism-cache-index 1"
CLEAN_NAME = "cache-index.clean"
CLEAN_MAGIC = b"prism-cache-clean 1"
LOCALDB_STAMP = "localdb"
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

_RECORD = struct.Struct("<48sQQd")  # key, size, frequency, score: one snapshot entry


def blob_key(blob_hash: str) -> bytes | None:
    """The index key of a blob name (its 48 raw hash bytes); None for anything not a blob name."""
    try:
        key = bytes.fromhex(blob_hash)
    except (ValueError, TypeError):
        return None
    return key if len(key) == HASH_BYTES and key.hex() == blob_hash else None


def _size(n: int) -> int:
    # Most blobs are exactly MAX_BLOB_SIZE: share that one int object instead of one per entry.
    return MAX_BLOB_SIZE if n == MAX_BLOB_SIZE else n


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
    clean: bool = False  # warm start: the last stop was clean, no directory walk
    unverified: int = 0  # blobs hashed on their first get before being served


class Plan(NamedTuple):
    """What `start` restores: entries coldest first, blobs found on disk that the index
    did not know (hex, size, stamp), and hashes the index knew that are gone from disk."""

    entries: Iterable[PolicyEntry]  # (read lazily from a snapshot: no list of 100,000 tuples)
    adopted: list[tuple[str, int, float]]
    forgotten: list[str]
    unverified: set[bytes] | None = None  # keys the mark lists; None: all of them (a cold start)


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
        self.verified = 0  # unverified blobs hashed on a get and found good
        self.corrupt = 0  # ... and found bad (removed)
        self.rebuild: RebuildReport | None = None
        self.adoption: asyncio.Task[int] | None = None  # a warm start's background reconciliation
        self._started = False
        self._stopped = False
        self._evicting: dict[bytes, asyncio.Future[None]] = {}
        self._unverified: set[bytes] = set()
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

    def is_verified(self, blob_hash: str) -> bool:
        """False while a blob found after an unclean shutdown has not been hashed yet."""
        key = blob_key(blob_hash)
        return key is not None and key in self.policy and key not in self._unverified

    # -- lifecycle ---------------------------------------------------------------------------

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.disk,)

    async def start(self) -> None:
        """Load the index (warm: snapshot or database only; cold: with a directory scan)."""
        if self._started:
            return
        t0 = time.monotonic()
        rows: list[tuple[str, int, float]] | None = None
        if self.index is not None:
            await self.index.start()
            rows = await self.index.load()
        mark = await asyncio.to_thread(take_clean_mark, self.root)
        report = RebuildReport()
        if mark is not None:
            plan = await asyncio.to_thread(self._plan_warm, rows, mark)
            report.clean = plan is not None
        if not report.clean:
            plan = await asyncio.to_thread(self._plan_cold, rows)
        assert plan is not None
        self.policy.restore(plan.entries)
        # Nothing found after an unclean shutdown is trusted before it is hashed. (The set holds
        # the index's own key objects, so it costs no second copy of a key.)
        listed = plan.unverified
        if listed is None or listed:
            self._unverified = {k for k in self.policy.keys() if listed is None or k in listed}
        if self.index is not None:
            for h, size, stamp in plan.adopted:
                self.index.record_add(h, size, stamp)
            for h in plan.forgotten:
                self.index.record_delete(h)
        report.blobs, report.bytes = len(self.policy), self.policy.bytes
        report.adopted, report.forgotten = len(plan.adopted), len(plan.forgotten)
        report.unverified = len(self._unverified)
        self._started = True
        report.evicted = await self._evict_to(
            int(self.capacity * self.low_watermark), threshold=self.capacity
        )
        if self.index is not None:
            await self.index.flush()
        report.seconds = time.monotonic() - t0
        self.rebuild = report
        self._log_start(report)
        if mark is not None and report.clean:
            self.adoption = asyncio.create_task(self._reconcile(mark.written_at), name=f"adopt {self.root}")

    def _log_start(self, report: RebuildReport) -> None:
        log.info(
            "%s cache %s: %s start, %d blobs (%d bytes) indexed in %.2fs, %d adopted, "
            "%d forgotten, %d evicted, %d to verify on first read",
            self.policy.name,
            self.root,
            "warm" if report.clean else "cold",
            report.blobs,
            report.bytes,
            report.seconds,
            report.adopted,
            report.forgotten,
            report.evicted,
            report.unverified,
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Persist the index, flush the file system, then mark the shutdown clean."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        if self.adoption is not None and not self.adoption.done():
            self.adoption.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.adoption
        for fut in list(self._evicting.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(fut), grace)
        if self.index is not None:
            await self.index.stop(grace)
        try:
            stamp = LOCALDB_STAMP
            if self.index is None:
                entries = self.policy.export()
                stamp = await asyncio.to_thread(write_snapshot, self.root, self.policy.name, entries)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.root, LEGACY_SNAPSHOT_NAME))  # superseded
            unverified = [k for k in self._unverified if k in self.policy]
            await asyncio.to_thread(write_clean_mark, self.root, stamp, unverified)
        except OSError as e:  # (a full disk): no mark, so the next start scans and verifies
            log.warning("cannot write the index of cache %s; the next start will be cold: %s", self.root, e)

    async def close(self) -> None:
        await self.stop()
        await self.disk.close()

    def _plan_warm(self, rows: list[tuple[str, int, float]] | None, mark: CleanMark) -> Plan | None:
        """The index as the clean shutdown left it, without looking at the directory."""
        entries: Iterable[PolicyEntry]
        if rows is not None:
            if mark.stamp != LOCALDB_STAMP:
                return None
            rows.sort(key=lambda r: r[2])
            entries = [PolicyEntry(k, _size(n)) for h, n, _ in rows if (k := blob_key(h)) is not None]
        else:
            snapshot = read_snapshot(self.root)
            if snapshot is None or snapshot.stamp != mark.stamp:
                return None
            entries = snapshot.entries
        return Plan(entries, [], [], set(mark.unverified))

    def _plan_cold(self, rows: list[tuple[str, int, float]] | None) -> Plan:
        """Scan the directory; order what is there by the index, snapshot or file times."""
        blobs: dict[bytes, tuple[int, float]] = {}
        for b in scan_blobs(self.root, self.disk.prefix_length):
            blobs[bytes.fromhex(b.hash)] = (_size(b.size), b.stamp)
        if rows is not None:
            known = {k: ts for h, _size_, ts in rows if (k := blob_key(h)) is not None}
            forgotten = [k.hex() for k in known if k not in blobs]
            adopted = [(k.hex(), n, st) for k, (n, st) in blobs.items() if k not in known]
            order = sorted(blobs, key=lambda k: known.get(k, blobs[k][1]))
            return Plan([PolicyEntry(k, blobs[k][0]) for k in order], adopted, forgotten)
        snapshot = read_snapshot(self.root) or read_legacy_snapshot(self.root)
        if snapshot is None:
            order = sorted(blobs, key=lambda k: blobs[k][1])
            return Plan([PolicyEntry(k, blobs[k][0]) for k in order], [], [])
        listed = list(snapshot.entries)
        kept = [e._replace(size=blobs[e.key][0]) for e in listed if e.key in blobs]
        in_snapshot = {e.key for e in listed}
        forgotten = [e.key.hex() for e in listed if e.key not in blobs]
        unknown = sorted((k for k in blobs if k not in in_snapshot), key=lambda k: blobs[k][1])
        # Unknown blobs older than the snapshot were there but not indexed: adopt them as the
        # coldest. Newer ones arrived after it (e.g. before a crash): adopt them as the hottest.
        low = min((e.score for e in kept), default=1.0)
        cold = [PolicyEntry(k, blobs[k][0], 1, low) for k in unknown if blobs[k][1] <= snapshot.written_at]
        hot = [PolicyEntry(k, blobs[k][0]) for k in unknown if blobs[k][1] > snapshot.written_at]
        adopted = [(k.hex(), *blobs[k]) for k in unknown]
        return Plan(cold + kept + hot, adopted, forgotten)

    async def _reconcile(self, since: float) -> int:
        """After a warm start: adopt the blobs on disk the index does not know (files newer
        than the clean shutdown at `since` as the most recent, older ones as the coldest) and
        forget the entries whose file is gone. Never deletes a file; returns the changes."""
        try:
            unknown, missing = await asyncio.to_thread(self._scan_against_index, list(self.policy.keys()))
        except OSError as e:
            log.warning("cache %s: cannot list the directory to check the index: %s", self.root, e)
            return 0
        gone = [k for k in missing if k in self.policy and not os.path.exists(self._path(k))]
        for k in gone:
            self._forget(k)
        fresh = sorted(
            (b for b in unknown if b[0] not in self.policy and b[0] not in self._evicting),
            key=lambda b: b[2],
        )
        fresh = [b for b in fresh if os.path.exists(self._path(b[0]))]
        self.policy.restore(PolicyEntry(k, n) for k, n, stamp in fresh if stamp <= since)
        for k, n, stamp in fresh:
            if stamp > since:
                self.policy.insert(k, n)
            self._unverified.add(k)  # never checked by this cache
            self.holdings.stored(k.hex())
            if self.index is not None:
                self.index.record_add(k.hex(), n, stamp)
        if self.rebuild is not None:
            self.rebuild.adopted += len(fresh)
            self.rebuild.forgotten += len(gone)
        if fresh or gone:
            log.info(
                "%s cache %s: adopted %d blobs the index did not know, forgot %d gone from disk",
                self.policy.name,
                self.root,
                len(fresh),
                len(gone),
            )
        await self._evict_to(int(self.capacity * self.low_watermark), threshold=self.capacity)
        return len(fresh) + len(gone)

    def _scan_against_index(self, known: list[bytes]) -> tuple[list[tuple[bytes, int, float]], list[bytes]]:
        """(blobs on disk not in `known`, keys of `known` not on disk), one shard directory at a
        time so that only one directory's names are held; stats only the unknown files."""
        plen = self.disk.prefix_length
        by_shard: dict[str, list[bytes]] = {}
        for k in known:
            by_shard.setdefault(k.hex()[:plen], []).append(k)
        del known
        unknown: list[tuple[bytes, int, float]] = []
        missing: list[bytes] = []
        shard, here = "", set[bytes]()
        for e in scan_blob_entries(self.root, plen):
            key = bytes.fromhex(e.name)
            if e.name[:plen] != shard:  # (a directory's entries come together)
                missing += (k for k in by_shard.pop(shard, ()) if k not in here)
                shard, here = e.name[:plen], set()
            if key in self.policy:  # (checked again on the loop: the index changes meanwhile)
                here.add(key)
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if e.is_file(follow_symlinks=False):
                unknown.append((key, _size(st.st_size), max(st.st_atime, st.st_mtime)))
        missing += (k for k in by_shard.pop(shard, ()) if k not in here)
        for keys in by_shard.values():  # shard directories that are gone altogether
            missing += keys
        return unknown, missing

    def _path(self, key: bytes) -> str:
        return self.disk.path_of(key.hex())

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
        key = blob_key(blob_hash)
        return key is not None and key in self.policy

    def get_now(self, blob_hash: str) -> BlobRef | None:
        """A verified blob the index holds, its file opened; None otherwise (`get` decides)."""
        key = blob_key(blob_hash)
        if key is None or key not in self.policy or key in self._unverified:
            return None
        timer = Timer()
        ref = self.disk.get_now(blob_hash)
        if ref is not None:
            self._hit(key, ref, timer)
        return ref

    async def get(self, blob_hash: str) -> BlobRef:
        ref = self.get_now(blob_hash)
        if ref is not None:
            return ref
        key = blob_key(blob_hash)
        if key is None or key not in self.policy:
            raise BlobNotFound(blob_hash)
        timer = Timer()
        try:
            ref = await self.disk.get(blob_hash)
        except BlobNotFound:
            # Removed behind our back (an operator, check-integrity): forget it.
            self._forget(key)
            raise
        if key in self._unverified:
            await self._verify(key, ref)
        self._hit(key, ref, timer)
        return ref

    def _hit(self, key: bytes, ref: BlobRef, timer: Timer) -> None:
        self.policy.touch(key)
        if self.index is not None:
            self.index.record_access(ref.hash)
        self.hits += 1
        ref.trace = ref.trace.stack(timer.elapsed(), self.name)

    async def _verify(self, key: bytes, ref: BlobRef) -> None:
        """Hash a blob found after an unclean shutdown; a bad one is removed (a miss)."""
        try:
            if ref.size <= HASH_INLINE_MAX:
                verify_blob(ref.hash, ref.read())
            else:
                await asyncio.to_thread(lambda: verify_blob(ref.hash, ref.read()))
        except (BlobError, StoreError, OSError) as e:
            ref.close()
            if key in self._unverified:  # (not if a put rewrote it meanwhile)
                log.warning("removing corrupt cached blob %s: %s", ref.hash[:16], e)
                self.corrupt += 1
                self._forget(key)
                self.disk.drop_open_file(ref.hash)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(key))
            raise BlobNotFound(ref.hash) from None
        if key in self._unverified:
            self._unverified.discard(key)
            self.verified += 1

    async def put(self, blob_hash: str, data: bytes) -> None:
        validate_hash(blob_hash)
        if not self._started:
            raise StoreError(f"disk cache {self.root} is not started")
        key = bytes.fromhex(blob_hash)
        size = _size(len(data))
        if size > self.capacity:
            log.debug("not caching %s: %d bytes is more than the whole cache", blob_hash[:16], size)
            return
        if (
            key not in self._unverified
            and self.policy.size_of(key) == size
            and os.path.exists(self.disk.path_of(blob_hash))
        ):
            self.policy.touch(key)
            return
        if not await self._room_on_disk(size):
            return
        while True:
            pending = self._evicting.get(key)
            if pending is not None:  # its unlink must not remove the file we write
                await asyncio.shield(pending)
            await self.disk.put(blob_hash, data)
            if key not in self._evicting:  # (an eviction may have picked it meanwhile)
                break
        self._unverified.discard(key)
        self.policy.remove(key)
        over = self.policy.bytes + size > self.capacity
        target = int(self.capacity * self.low_watermark) if over else self.capacity
        victims = [k for k, _ in self.policy.admit(key, size, target)]
        self.evictions += len(victims)
        if self.index is not None:
            for k in victims:  # (the newcomer too, if the policy refused it)
                self.index.record_delete(k.hex())
            if key in self.policy:
                self.index.record_add(blob_hash, size)
        if key in self.policy:
            self.holdings.stored(blob_hash)
        if victims:
            await self._remove_files(victims)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    def borrows_put_data(self) -> bool:
        return put_borrows_data(self.disk)  # `put` writes through `disk` (or skips the blob)

    async def delete(self, blob_hash: str) -> None:
        validate_hash(blob_hash)
        self._forget(bytes.fromhex(blob_hash))
        self.disk.drop_open_file(blob_hash)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.disk.path_of(blob_hash))

    async def list_hashes(self) -> list[str]:
        return [k.hex() for k in self.policy.keys()]

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

    def _forget(self, key: bytes) -> None:
        self._unverified.discard(key)
        if self.policy.remove(key) is not None:
            self.holdings.removed(key.hex())
            if self.index is not None:
                self.index.record_delete(key.hex())

    async def _evict_to(self, target: int, threshold: int | None = None) -> int:
        """Evict until at most `target` bytes remain (if over `threshold`, default target)."""
        if self.policy.bytes <= (target if threshold is None else threshold):
            return 0
        victims = self._select_victims(target)
        await self._remove_files(victims)
        return len(victims)

    def _select_victims(self, target: int) -> list[bytes]:
        """Take victims out of the index (synchronously) until at most `target` bytes remain."""
        victims: list[bytes] = []
        while self.policy.bytes > target:
            v = self.policy.pop_victim()
            if v is None:
                break
            victims.append(v[0])
        self.evictions += len(victims)
        if self.index is not None:
            for k in victims:
                self.index.record_delete(k.hex())
        return victims

    async def _remove_files(self, victims: list[bytes]) -> None:
        if not victims:
            return
        for k in victims:
            self._unverified.discard(k)
            self.holdings.removed(k.hex())
            self.disk.drop_open_file(k.hex())  # (here, not in the unlinking thread: the loop's)
        log.debug("evicting %d blobs from %s", len(victims), self.root)
        if len(victims) <= 8:
            self._unlink_many(victims)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in victims:
            self._evicting[k] = done
        try:
            await asyncio.to_thread(self._unlink_many, victims)
        finally:
            for k in victims:
                if self._evicting.get(k) is done:
                    del self._evicting[k]
            done.set_result(None)

    def _unlink_many(self, keys: list[bytes]) -> None:
        for k in keys:
            try:
                os.unlink(self._path(k))
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot evict %s: %s", k.hex()[:16], e)


# -- snapshot and clean-shutdown mark ---------------------------------------------------------


class IndexSnapshot(NamedTuple):
    stamp: str  # names this snapshot in the clean-shutdown mark
    written_at: float
    entries: Iterable[PolicyEntry]  # coldest first; keys are raw hash bytes; read once


def _write_atomically(root: str, name: str, data: bytes) -> None:
    path = os.path.join(root, name)
    tmp = os.path.join(root, TMP_DIR, f"{name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(root)


def write_snapshot(root: str, policy_name: str, entries: Iterable[PolicyEntry]) -> str:
    """Atomically write the policy's order (coldest first) to `<root>/cache-index.bin`.

    A text header line, then one fixed-size record per entry; returns the header's stamp.
    """
    body = b"".join(_RECORD.pack(e.key, e.size, e.freq, e.score) for e in entries)
    stamp = f"{time.time():.6f}"
    header = f"{SNAPSHOT_MAGIC} {policy_name} {stamp} {len(body) // _RECORD.size}\n".encode("ascii")
    _write_atomically(root, SNAPSHOT_NAME, header + body)
    return stamp


def read_snapshot(root: str) -> IndexSnapshot | None:
    """The snapshot written by the last `stop()`; None when absent or unreadable."""
    return _read_index_file(root, SNAPSHOT_NAME, _parse_snapshot)


def read_legacy_snapshot(root: str) -> IndexSnapshot | None:
    """The text snapshot of earlier versions (only its order is used, at a cold start)."""
    return _read_index_file(root, LEGACY_SNAPSHOT_NAME, _parse_legacy_snapshot)


def _read_index_file(root: str, name: str, parse: Callable[[bytes], IndexSnapshot]) -> IndexSnapshot | None:
    path = os.path.join(root, name)
    try:
        with open(path, "rb") as f:
            return parse(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("ignoring unreadable cache index %s: %s", path, e)
        return None


def _parse_snapshot(data: bytes) -> IndexSnapshot:
    end = data.index(b"\n")
    header = data[:end].decode("ascii").split()
    if len(header) != 5 or " ".join(header[:2]) != SNAPSHOT_MAGIC:
        raise ValueError("not a prism cache index")
    body = memoryview(data)[end + 1 :]
    if len(body) != int(header[4]) * _RECORD.size:
        raise ValueError("truncated")
    entries = (PolicyEntry(k, _size(n), f, sc) for k, n, f, sc in _RECORD.iter_unpack(body))
    return IndexSnapshot(header[3], float(header[3]), entries)


def _parse_legacy_snapshot(data: bytes) -> IndexSnapshot:
    lines = data.decode("ascii").splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 4 or " ".join(header[:2]) != LEGACY_SNAPSHOT_MAGIC:
        raise ValueError("not a prism cache index")
    entries = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 4 and is_valid_hash(parts[0]):
            key = bytes.fromhex(parts[0])
            entries.append(PolicyEntry(key, int(parts[1]), int(parts[2]), float(parts[3])))
    return IndexSnapshot(header[3], float(header[3]), entries)


def sync_filesystem(path: str) -> None:
    """Flush every dirty page of the file system holding `path` (cache files are not fsynced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


class CleanMark(NamedTuple):
    stamp: str  # the snapshot's stamp, or `localdb`
    written_at: float
    unverified: list[bytes]


def write_clean_mark(root: str, stamp: str, unverified: Iterable[bytes]) -> None:
    """Mark the shutdown clean: every cached file is on stable storage and the index at `stamp`
    (a snapshot's, or `localdb`) describes them; `unverified` blobs still need hashing."""
    sync_filesystem(root)
    header = b"%s %s %.6f\n" % (CLEAN_MAGIC, stamp.encode("ascii"), time.time())
    _write_atomically(root, CLEAN_NAME, header + b"".join(unverified))


def take_clean_mark(root: str) -> CleanMark | None:
    """Remove the clean-shutdown mark (durably, before anything is written) and return it;
    None when there was none or it is unreadable."""
    path = os.path.join(root, CLEAN_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    os.unlink(path)
    fsync_directory(root)
    end = data.find(b"\n")
    header = data[:end].split()
    rest = data[end + 1 :]
    try:
        if end < 0 or len(header) != 4 or b" ".join(header[:2]) != CLEAN_MAGIC or len(rest) % HASH_BYTES:
            raise ValueError("malformed")
        keys = [rest[i : i + HASH_BYTES] for i in range(0, len(rest), HASH_BYTES)]
        return CleanMark(header[2].decode("ascii"), float(header[3]), keys)
    except (ValueError, UnicodeDecodeError):
        log.warning("ignoring unreadable clean-shutdown mark %s", path)
        return None
