"""`prism check-integrity`: re-hash every blob of a disk store in parallel.

Each blob file is read and hashed on one of `threads` worker threads (hashlib releases the
GIL on large buffers, so the threads really run side by side). A blob whose bytes do not
hash to its name, or whose size is outside 1..2 MiB, is corrupt: it is moved to
`<store>/quarantine/<hash>.corrupt` (a name no store lists), or deleted with `delete=True`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prism.app.progress import ProgressBar, megabytes
from prism.blob import MAX_BLOB_SIZE
from prism.store.disk import DiskBlob, scan_blobs
from prism.store.disk_cache import QUARANTINE_DIR

log = logging.getLogger("prism.store.integrity")

OK, CORRUPT, UNREADABLE, VANISHED = "ok", "corrupt", "unreadable", "vanished"


def default_threads() -> int:
    """reflector.go's default: one fewer than the CPUs, at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class IntegrityReport:
    store_path: str
    threads: int
    delete: bool
    checked: int = 0
    ok: int = 0
    corrupt: int = 0
    unreadable: int = 0
    vanished: int = 0
    bytes: int = 0
    seconds: float = 0.0
    corrupt_hashes: list[str] = field(default_factory=list)
    unreadable_hashes: list[str] = field(default_factory=list)
    threads_used: set[str] = field(default_factory=set)

    @property
    def failed(self) -> bool:
        return self.corrupt > 0 or self.unreadable > 0

    def summary(self) -> str:
        where = "deleted" if self.delete else f"moved to {os.path.join(self.store_path, QUARANTINE_DIR)}"
        return (
            f"checked {self.checked} blobs ({self.bytes} bytes) in {self.seconds:.2f}s with {self.threads} "
            f"threads: {self.ok} ok, {self.corrupt} corrupt ({where}), {self.unreadable} unreadable, "
            f"{self.vanished} vanished while checking"
        )


def integrity_progress(total_blobs: int) -> ProgressBar:
    """Blobs checked, bytes read and rate on one line on stderr, only when stderr is a terminal."""
    return ProgressBar(_integrity_status, total=total_blobs)


def _integrity_status(bar: ProgressBar) -> str:
    return f"checking blobs: {bar.done}/{bar.total}, {megabytes(bar.bytes)} read, {bar.rate / 1e6:.1f} MB/s"


def list_blobs(store_path: str) -> list[DiskBlob]:
    return list(scan_blobs(os.path.abspath(store_path)))


def _check_one(blob: DiskBlob, buf: bytearray) -> str:
    try:
        with open(blob.path, "rb", buffering=0) as f:
            h = hashlib.sha384()
            view = memoryview(buf)
            total = 0
            while True:
                n = f.readinto(view)
                if not n:
                    break
                h.update(view[:n])
                total += n
                if total > MAX_BLOB_SIZE:
                    return CORRUPT
    except FileNotFoundError:
        return VANISHED
    except OSError as e:
        log.warning("cannot read %s: %s", blob.path, e)
        return UNREADABLE
    if total == 0 or h.hexdigest() != blob.hash:
        return CORRUPT
    return OK


def _dispose(store_path: str, blob: DiskBlob, delete: bool) -> None:
    if delete:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(blob.path)
        return
    qdir = os.path.join(store_path, QUARANTINE_DIR)
    os.makedirs(qdir, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(blob.path, os.path.join(qdir, f"{blob.hash}.corrupt"))


def check_integrity(
    store_path: str,
    threads: int | None = None,
    delete: bool = False,
    progress: Callable[[int, int], None] | None = None,
    blobs: list[DiskBlob] | None = None,
) -> IntegrityReport:
    """Re-hash every blob under `store_path`; `progress(blobs, nbytes)` is called (in this
    thread) as blobs complete. Blocking: run it from a command, or in a thread."""
    store_path = os.path.abspath(store_path)
    threads = threads or default_threads()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    report = IntegrityReport(store_path, threads, delete)
    t0 = time.monotonic()
    todo = iter(list_blobs(store_path) if blobs is None else blobs)
    lock = threading.Lock()
    done: queue.SimpleQueue[tuple[DiskBlob, str, str] | None] = queue.SimpleQueue()
    workers = [
        threading.Thread(
            target=_worker, args=(todo, lock, done, store_path, delete), name=f"integrity-{i}", daemon=True
        )
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    running = len(workers)
    while running:
        item = done.get()
        if item is None:
            running -= 1
            continue
        _tally(report, *item)
        if progress is not None:
            progress(1, item[0].size)
    for w in workers:
        w.join()
    report.seconds = time.monotonic() - t0
    return report


def _worker(
    todo: Iterator[DiskBlob],
    lock: threading.Lock,
    done: queue.SimpleQueue[tuple[DiskBlob, str, str] | None],
    store_path: str,
    delete: bool,
) -> None:
    """Check blobs from `todo` until it is empty; report each, then None, on `done`."""
    buf = bytearray(MAX_BLOB_SIZE + 1)
    name = threading.current_thread().name
    try:
        while True:
            with lock:
                blob = next(todo, None)
            if blob is None:
                return
            status = _check_one(blob, buf)
            if status == CORRUPT:
                try:
                    _dispose(store_path, blob, delete)
                except OSError as e:
                    log.error("cannot %s corrupt blob %s: %s", "delete" if delete else "move", blob.path, e)
            done.put((blob, status, name))
    finally:
        done.put(None)


def _tally(report: IntegrityReport, blob: DiskBlob, status: str, thread_name: str) -> None:
    report.checked += 1
    report.threads_used.add(thread_name)
    if status == OK:
        report.ok += 1
        report.bytes += blob.size
    elif status == CORRUPT:
        report.corrupt += 1
        report.corrupt_hashes.append(blob.hash)
        log.warning("corrupt blob %s", blob.hash)
    elif status == UNREADABLE:
        report.unreadable += 1
        report.unreadable_hashes.append(blob.hash)
    else:
        report.vanished += 1
