"""Memory that goes back down: one bounded pool of large receive buffers, and glibc's malloc_trim.

CPython frees a 2 MiB bytearray to glibc, which keeps it in its heap once its dynamic mmap
threshold has grown past that size; after a burst of uploads the process would stay large.
The pool reuses a few buffers, refuses to hand out more than its byte budget, and says when it
dropped buffers so the caller can hand freed heap back with `malloc_trim(0)`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
