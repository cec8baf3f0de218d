"""A durable blob store on a local file system: `<root>/<hash[0:2]>/<hash>`.

A put writes `<root>/tmp/<hash>.<random>` (locked with `flock` while it is written), fsyncs
it, renames it into place and fsyncs the shard directory (and the root, the first time a
shard directory is used), so a crash never leaves a partial blob under a blob's name and a
blob whose `put` returned survives power loss. Directory fsyncs of concurrent puts into one
directory are coalesced (`DirectorySyncer`). A cache tier is a `DiskStore(durable=False)` (no fsync
at all: the origin holds the durable copy; the rename still keeps partial files out of sight).
Temporary files nobody holds locked are removed when a DiskStore opens the directory: a lock
dies with its process, whatever its pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from time import perf_counter_ns
from typing import NamedTuple

from prism.blob import is_valid_hash, validate_hash
from prism.store.base import BlobNotFound, BlobRef, HoldingsEvents, HoldingsListener
from prism.store.open_files import OpenFiles, default_open_files
from prism.store.trace import BlobTrace

log = logging.getLogger("prism.store.disk")

TMP_DIR = "tmp"
_HEX = frozenset("0123456789abcdef")


class DiskStore:
    """Blobs as files under `root`, sharded by the first `prefix_length` hex characters."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        prefix_length: int = 2,
        name: str = "disk",
        durable: bool = True,
        open_files: int | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        """False for a cache tier (a disk cache, getstream's resume directory), whose blobs are kept
        durably elsewhere or checked when read: a put is then write + rename, with no fsync."""
        self.root = os.path.abspath(os.fspath(root))
        self._root_slash = os.path.join(self.root, "")
        self.prefix_length = prefix_length
        self.tmp_dir = os.path.join(self.root, TMP_DIR)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.removed_temp_files = self._remove_stale_temp_files()
        self.holdings = HoldingsEvents()
        self.syncer = DirectorySyncer()
        self.open_files = OpenFiles(default_open_files() if open_files is None else open_files)
        """Hot blobs' descriptors, kept between gets; `drop_open_file` before a file goes away."""
        # Shard directories whose entry in the root is known durable: those found at start, after
        # one fsync of the root (a crash may have come right after one was created).
        self._durable_dirs: set[str] = set(shard_dirs(self.root, prefix_length))
        if self._durable_dirs and durable:
            self.syncer.sync(self.root)

    def watch_holdings(self, listener: HoldingsListener) -> None:
        self.holdings.add(listener)

    def path_of(self, blob_hash: str) -> str:
        """Where the blob with this (already validated) hash lives."""
        if self.prefix_length <= 0:
            return self._root_slash + blob_hash
        return f"{self._root_slash}{blob_hash[: self.prefix_length]}/{blob_hash}"

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        return os.path.isfile(self.path_of(blob_hash))

    def get_now(self, blob_hash: str) -> BlobRef | None:
        """The blob's file, opened; None when there is none (`get` raises BlobNotFound then)."""
        validate_hash(blob_hash)
        start = perf_counter_ns()
        path = self.path_of(blob_hash)
        cached = self.open_files.get(blob_hash)
        if cached is not None:
            file, size = cached
        else:
            try:
                fd = self._open(path)
            except FileNotFoundError:
                return None
            try:
                size = os.fstat(fd).st_size
            except OSError:
                os.close(fd)
                raise
            file = self.open_files.add(blob_hash, fd, size)
        trace = BlobTrace.new(perf_counter_ns() - start, self.name)
        return BlobRef(blob_hash, size, trace, file=file, path=path)

    def _open(self, path: str) -> int:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.EMFILE or not len(self.open_files):
                raise
        self.open_files.clear()  # out of descriptors: the cached ones go first
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def drop_open_file(self, blob_hash: str) -> None:
        """The blob's file is about to be removed or replaced: stop serving a cached descriptor of it."""
        self.open_files.forget(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        ref = self.get_now(blob_hash)
        if ref is None:
            raise BlobNotFound(blob_hash)
        return ref

    async def put(self, blob_hash: str, data: bytes) -> None:
        validate_hash(blob_hash)
        await asyncio.to_thread(self.write_blob, blob_hash, data)
        self.drop_open_file(blob_hash)  # (a rewrite may replace a damaged file)
        self.holdings.stored(blob_hash)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    def borrows_put_data(self) -> bool:
        return True  # written to its file before `put` returns

    def write_blob(self, blob_hash: str, data: bytes | bytearray | memoryview) -> None:
        """Blocking write-fsync-rename-dirsync of one blob (callers in the event loop use `put`).

        When it returns, the blob survives a crash or power loss; if it raises, no partial blob
        is visible under the blob's name. A store made with `durable=False` skips every fsync.
        """
        final = self.path_of(blob_hash)
        tmp = os.path.join(self.tmp_dir, f"{blob_hash}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # Held until the rename: a DiskStore starting meanwhile leaves a locked temp file alone.
            fcntl.flock(fd, fcntl.LOCK_EX)
            _write_all(fd, data)
            if self.durable:
                os.fsync(fd)
                self._ensure_dir(os.path.dirname(final))
            else:
                os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        if self.durable:
            self.syncer.sync(os.path.dirname(final))

    def _ensure_dir(self, directory: str) -> None:
        """Create `directory` if needed; its own entry in the parent is synced before first use."""
        if directory in self._durable_dirs or directory == self.root:
            return
        os.makedirs(directory, exist_ok=True)
        # Also when it existed: it may have been created just before a crash, never synced.
        self.syncer.sync(os.path.dirname(directory))
        self._durable_dirs.add(directory)

    async def delete(self, blob_hash: str) -> None:
        validate_hash(blob_hash)
        self.drop_open_file(blob_hash)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_of(blob_hash))
        self.holdings.removed(blob_hash)

    async def list_hashes(self) -> list[str]:
        return await asyncio.to_thread(lambda: list(self.iter_hashes()))

    def iter_hashes(self) -> Iterator[str]:
        """Every stored blob hash (blocking; skips tmp/ and anything not named like a blob)."""
        for blob in scan_blobs(self.root, self.prefix_length):
            yield blob.hash

    async def close(self) -> None:
        self.open_files.clear()

    def _remove_stale_temp_files(self) -> int:
        """Remove temp files no live writer holds locked (pids lie: PID 1, a reused pid)."""
        removed = 0
        with os.scandir(self.tmp_dir) as it:
            for e in it:
                if _locked_by_a_writer(e.path):
                    continue
                with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                    os.unlink(e.path)
                    removed += 1
        if removed:
            log.info("removed %d stale temporary file(s) from %s", removed, self.tmp_dir)
        return removed


WRITE_PIECE = 256 * 1024
"""Bytes handed to one write() of a blob file.

A 2 MiB write makes the page cache allocate 2 MiB folios. On a VM with free page reporting
(virtio-balloon) such a block, once freed (a deleted or evicted blob) and left a few seconds, is
handed back to the host, and the next write into it pays the host's fault: measured 1.6-2.4 CPU
s/GB against 0.2-0.6 for the same files written in 256 KiB pieces (docs/architecture.md).
"""


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view[:WRITE_PIECE])
        view = view[written:]


def _locked_by_a_writer(path: str) -> bool:
    """Whether some open file description (this process's or another's) holds `path` flocked."""
    try:
        # Read-write: where flock is emulated with POSIX locks (NFS) an exclusive lock needs it.
        # Non-blocking: a FIFO left in tmp/ must not hang the start.
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # gone, a directory, a symlink: not a live writer's temp file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the lock we may just have taken
    return False


def fsync_directory(path: str) -> None:
    """Make the entries of directory `path` (renames, new files, new subdirectories) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class GroupCommit:
    """*sans-IO*: which waiters one fsync covers. An fsync covers every request made before it began.

    `request()` gives a ticket (call it after the change to persist was made); `begin()` returns
    the highest ticket the fsync about to start covers, or None when one is already running
    (wait for it, then ask again); `finish(target, ok)` records the outcome.
    """

    requested: int = 0
    synced: int = 0
    running: bool = False

    def request(self) -> int:
        self.requested += 1
        return self.requested

    def covered(self, ticket: int) -> bool:
        return self.synced >= ticket

    def begin(self) -> int | None:
        if self.running:
            return None
        self.running = True
        return self.requested

    def finish(self, target: int, ok: bool) -> None:
        self.running = False
        if ok:
            self.synced = max(self.synced, target)


class DirectorySyncer:
    """Directory fsyncs for blocking writers in threads, one per burst per directory.

    `sync(path)` returns once an fsync of `path` that began after the call finished. While one
    runs, later callers wait; the next fsync then covers them all, so a burst of renames into one
    directory costs two fsyncs, not one each. A failed fsync raises in its caller; each waiter
    then tries again itself.
    """

    def __init__(self, fsync: Callable[[str], None] | None = None) -> None:
        self._fsync = fsync or fsync_directory
        self._cond = threading.Condition()
        self._dirs: dict[str, GroupCommit] = {}
        self.fsyncs = 0
        """fsyncs run (for tests and the bench)."""

    def sync(self, path: str) -> None:
        with self._cond:
            state = self._dirs.get(path)
            if state is None:
                state = self._dirs[path] = GroupCommit()
            ticket = state.request()
            while not state.covered(ticket):
                target = state.begin()
                if target is None:
                    self._cond.wait()
                    continue
                self._cond.release()
                try:
                    self._fsync(path)
                except BaseException:
                    self._cond.acquire()
                    state.finish(target, ok=False)
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                self.fsyncs += 1
                state.finish(target, ok=True)
                self._cond.notify_all()


class DiskBlob(NamedTuple):
    hash: str
    size: int
    stamp: float  # last access or modification (unix time), whichever is later
    path: str


def shard_dirs(root: str, prefix_length: int) -> list[str]:
    """The shard directories (`prefix_length` hex characters) under a DiskStore root (blocking)."""
    if prefix_length <= 0:
        return []
    try:
        with os.scandir(root) as it:
            return [
                e.path
                for e in it
                if len(e.name) == prefix_length
                and _HEX.issuperset(e.name)
                and e.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return []


def scan_blobs(root: str, prefix_length: int = 2) -> Iterable[DiskBlob]:
    """Every blob file under a DiskStore root (blocking). Skips tmp/, quarantine/, other files."""
    for e in scan_blob_entries(root, prefix_length):
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if e.is_file(follow_symlinks=False):
            yield DiskBlob(e.name, st.st_size, max(st.st_atime, st.st_mtime), e.path)


def scan_blob_entries(root: str, prefix_length: int = 2) -> Iterator[os.DirEntry[str]]:
    """Directory entries named like a blob under a DiskStore root (blocking, no stat: a caller
    that only needs names, such as a disk cache checking its index, skips that cost)."""
    dirs = shard_dirs(root, prefix_length) if prefix_length > 0 else [root]
    for d in dirs:
        try:
            with os.scandir(d) as it:
                for e in it:
                    if is_valid_hash(e.name):
                        yield e
        except FileNotFoundError:
            continue
