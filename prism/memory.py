"""Memory that goes back down: one bounded pool of large receive buffers, and glibc's malloc_trim.

CPython frees a 2 MiB bytearray to glibc, which keeps it in its heap once its dynamic mmap
threshold has grown past that size; after a burst of uploads the process would stay large.
The pool reuses a few buffers, refuses to hand out more than its byte budget, and says when it
dropped buffers so the caller can hand freed heap back with `malloc_trim(0)`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


MALLOC_TRIM = _malloc_trim()


class BufferPool:
    """Sans-IO: full-size buffers of `size` bytes, at most `budget` bytes of them out at once.

    Up to `keep` returned buffers are kept for reuse while any is in use; when the last one comes
    back, the pool shrinks to `keep_idle`. `give` says whether buffers were dropped (time to trim).
    """

    def __init__(self, size: int, *, budget: int, keep: int = 8, keep_idle: int = 1) -> None:
        self.size = size
        self.budget = budget
        self.keep = keep
        self.keep_idle = keep_idle
        self.in_use = 0
        self._free: list[bytearray] = []

    @property
    def pooled(self) -> int:
        return len(self._free)

    def take(self) -> bytearray | None:
        """A buffer, or None when `budget` bytes are already out."""
        if (self.in_use + 1) * self.size > self.budget:
            return None
        self.in_use += 1
        return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray | None) -> bool:
        """Return a buffer taken from the pool (None: it was lost, e.g. a store thread may keep it).

        True if the pool dropped buffers: their memory can go back to the system.
        """
        self.in_use -= 1
        if buf is not None:
            self._free.append(buf)
        limit = self.keep if self.in_use else self.keep_idle
        if len(self._free) <= limit:
            return buf is None and self.in_use == 0
        del self._free[limit:]
        return True


class RecycledBuffers:
    """Sans-IO: blob-sized bytearrays handed out again once nobody holds them any more.

    A body buffer goes on to a `BlobRef` that the server sends and the cache writer writes,
    each dropping it when done, in whatever order: rather than tracking every holder, a buffer
    is free again when its reference count says only this pool holds it (a memoryview or a
    C call's buffer export holds a reference too). Touching fresh memory costs far more than
    reusing warm pages on a VM (host faults, free-page reporting), so bodies of `size` bytes
    (or not much smaller: a bytearray shrinks in place down to half its size) reuse up to
    `keep` buffers; more at once, or smaller bodies, get plain new ones. `release_idle` drops
    them all once none was taken for `idle_after` seconds.
    """

    def __init__(self, size: int, *, keep: int = 96, idle_after: float = 10.0) -> None:
        self.size = size
        self.keep = keep
        self.idle_after = idle_after
        self.reused = 0
        """Buffers handed out again (for tests and stats)."""
        self._all: list[bytearray] = []
        self._zeros = bytes(size)
        self._last_take = 0.0
        self._free_refs = _free_refcount()

    @property
    def held(self) -> int:
        """Buffers this pool owns (in use or free)."""
        return len(self._all)

    def take(self, length: int, now: float) -> bytearray:
        """A bytearray of exactly `length` bytes; its contents are undefined (old data)."""
        if length > self.size or length <= self.size // 2:
            return bytearray(length)
        self._last_take = now
        refs = self._free_refs
        for buf in self._all:
            if sys.getrefcount(buf) == refs:
                self.reused += 1
                return _resize(buf, length, self._zeros)
        if len(self._all) >= self.keep:
            return bytearray(length)
        # Allocated at full size and shrunk: it can grow back in place for a larger body later.
        buf = bytearray(self.size)
        self._all.append(buf)
        return _resize(buf, length, self._zeros)

    def release_idle(self, now: float) -> bool:
        """Drop every buffer when none was taken for `idle_after` seconds; True if some were."""
        if not self._all or now - self._last_take < self.idle_after:
            return False
        self._all.clear()
        return True


def _free_refcount() -> int:
    """What `sys.getrefcount` says, inside `RecycledBuffers.take`'s loop, of a buffer nobody else holds."""
    probe = [bytearray(1)]
    for buf in probe:
        return sys.getrefcount(buf)
    raise AssertionError("unreachable")  # pragma: no cover


def _resize(buf: bytearray, length: int, zeros: bytes) -> bytearray:
    """`buf` at `length` bytes, in place (within its allocation; callers keep length > size/2)."""
    have = len(buf)
    if length < have:
        del buf[length:]
    elif length > have:
        buf += memoryview(zeros)[: length - have]
    return buf
