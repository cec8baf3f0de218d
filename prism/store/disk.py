"""A durable blob store on a local file system: `<root>/<hash[0:2]>/<hash>`.

A put writes `<root>/tmp/<hash>.<pid>.<random>`, fsyncs it and renames it into place, so a
crash never leaves a partial blob under a blob's name. Temporary files of processes that
no longer run are removed when a DiskStore opens the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from prism.blob import is_valid_hash, validate_hash
from prism.store.base import BlobNotFound, BlobRef, HoldingsEvents, HoldingsListener, Timer
from prism.store.trace import BlobTrace

log = logging.getLogger("prism.store.disk")

TMP_DIR = "tmp"
_HEX = frozenset("0123456789abcdef")


class DiskStore:
    """Blobs as files under `root`, sharded by the first `prefix_length` hex characters."""

    def __init__(
        self, root: str | os.PathLike[str], prefix_length: int = 2, name: str = "disk", fsync: bool = True
    ) -> None:
        self.name = name
        self.fsync = fsync
        """False for a directory that is only a cache whose readers check every blob's hash
        (getstream's resume directory): a put is then write + rename, without the fsync."""
        self.root = os.path.abspath(os.fspath(root))
        self.prefix_length = prefix_length
        self.tmp_dir = os.path.join(self.root, TMP_DIR)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.removed_temp_files = self._remove_stale_temp_files()
        self.holdings = HoldingsEvents()

    def watch_holdings(self, listener: HoldingsListener) -> None:
        self.holdings.add(listener)

    def path_of(self, blob_hash: str) -> str:
        """Where the blob with this (already validated) hash lives."""
        if self.prefix_length <= 0:
            return os.path.join(self.root, blob_hash)
        return os.path.join(self.root, blob_hash[: self.prefix_length], blob_hash)

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        return os.path.isfile(self.path_of(blob_hash))

    async def get(self, blob_hash: str) -> BlobRef:
        validate_hash(blob_hash)
        timer = Timer()
        path = self.path_of(blob_hash)
        try:
            f: BinaryIO = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise BlobNotFound(blob_hash) from None
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError:
            f.close()
            raise
        return BlobRef(blob_hash, size, BlobTrace.new(timer.elapsed(), self.name), file=f, path=path)

    async def put(self, blob_hash: str, data: bytes) -> None:
        validate_hash(blob_hash)
        await asyncio.to_thread(self.write_blob, blob_hash, data)
        self.holdings.stored(blob_hash)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    def borrows_put_data(self) -> bool:
        return True  # written to its file before `put` returns

    def write_blob(self, blob_hash: str, data: bytes | bytearray | memoryview) -> None:
        """Blocking write-fsync-rename of one blob (callers in the event loop use `put`)."""
        final = self.path_of(blob_hash)
        tmp = os.path.join(self.tmp_dir, f"{blob_hash}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def delete(self, blob_hash: str) -> None:
        validate_hash(blob_hash)
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
        pass

    def _remove_stale_temp_files(self) -> int:
        removed = 0
        with os.scandir(self.tmp_dir) as it:
            for e in it:
                parts = e.name.split(".")
                pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
                if pid is not None and pid != os.getpid() and _pid_alive(pid):
                    continue
                if pid == os.getpid():
                    continue
                with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                    os.unlink(e.path)
                    removed += 1
        if removed:
            log.info("removed %d stale temporary file(s) from %s", removed, self.tmp_dir)
        return removed


class DiskBlob(NamedTuple):
    hash: str
    size: int
    stamp: float  # last access or modification (unix time), whichever is later
    path: str


def scan_blobs(root: str, prefix_length: int = 2) -> Iterable[DiskBlob]:
    """Every blob file under a DiskStore root (blocking). Skips tmp/, quarantine/, other files."""
    if prefix_length > 0:
        try:
            with os.scandir(root) as it:
                dirs = [
                    e.path
                    for e in it
                    if len(e.name) == prefix_length
                    and _HEX.issuperset(e.name)
                    and e.is_dir(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return
    else:
        dirs = [root]
    for d in dirs:
        try:
            with os.scandir(d) as it:
                for e in it:
                    if not is_valid_hash(e.name):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if e.is_file(follow_symlinks=False):
                        yield DiskBlob(e.name, st.st_size, max(st.st_atime, st.st_mtime), e.path)
        except FileNotFoundError:
            continue


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
