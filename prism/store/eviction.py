"""Eviction policies for the caches: which blob leaves when a cache is over capacity.

A policy only keeps bookkeeping (keys and their sizes); the cache that owns it moves bytes.
Keys are any hashable values: the disk cache uses a blob's 48 raw hash bytes (half the
memory of its 96-character name), the benches small strings. Entries are plain dict values
(a size, or one small slotted record for LFUDA), never a dataclass per entry.
Every policy weighs entries by size in bytes (the memory cache uses size 1 per blob), and
its hit path (`touch`) is O(1): no I/O, no sorting, no heap operations.

Policies:

- `LRUPolicy`: least recently used first.
- `LFUDAPolicy`: LFU with dynamic aging (Arlitt et al.). Priority ``K = hits + L``, where
  ``L`` is the priority of the last evicted entry, so a blob that was popular long ago
  ages out instead of staying forever. Ties go to the least recently used.
- `TinyLFUPolicy`: W-TinyLFU (Einziger, Friedman, Manes): a small LRU window in front of a
  segmented LRU main area; a blob leaving the window enters the main area only if a
  frequency sketch (with a doorkeeper) says it is requested more often than the main
  area's next victim.
  Resists one-time scans and keeps a popular set through bursts of new blobs.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

Key = Hashable


class PolicyEntry(NamedTuple):
    """One entry as exported for an index snapshot (coldest first) and restored from it."""

    key: Any
    size: int
    freq: int = 1
    score: float = 0.0


class EvictionPolicy(ABC):
    """Bookkeeping of the keys a cache holds, ordered by how much they deserve to stay."""

    name: str = "?"

    def __init__(self) -> None:
        self.bytes = 0

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def keys(self) -> Iterator[Any]: ...

    @abstractmethod
    def size_of(self, key: Key) -> int | None: ...

    @abstractmethod
    def insert(self, key: Key, size: int) -> None:
        """Admit a new key (a cache fill or upload), or refresh an existing one as an access."""

    @abstractmethod
    def touch(self, key: Key) -> None:
        """Record a hit on `key` (no-op when absent). O(1)."""

    @abstractmethod
    def remove(self, key: Key) -> int | None:
        """Forget `key`; returns its size, or None when absent."""

    @abstractmethod
    def pop_victim(self) -> tuple[Any, int] | None:
        """Remove and return (key, size) of the entry to evict next; None when empty."""

    def admit(self, key: Key, size: int, target: int) -> list[tuple[Any, int]]:
        """Add a new `key` and evict until at most `target` bytes remain; returns the victims.

        The default makes room among the entries already there first, so a newcomer is never
        its own victim on arrival (LRU; LFUDA as Arlitt et al. run it). `target` is lowered to
        leave room for the newcomer when it is smaller than the capacity.
        """
        victims = []
        while self.bytes + size > target:
            v = self.pop_victim()
            if v is None:
                break
            victims.append(v)
        self.insert(key, size)
        return victims

    @abstractmethod
    def export(self) -> list[PolicyEntry]:
        """Every entry, coldest first, with what `restore` needs to rebuild the same order."""

    @abstractmethod
    def restore(self, entries: Iterable[PolicyEntry]) -> None:
        """Add entries from `export` (coldest first) on top of the current ones as colder."""


class _DictPolicy(EvictionPolicy):
    """A policy whose entries are the keys of one dict, `_d`."""

    _d: Mapping[Any, object]

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def keys(self) -> Iterator[Any]:
        return iter(list(self._d))


class LRUPolicy(_DictPolicy):
    """Least recently used first."""

    name = "lru"

    def __init__(self, capacity: int = 0) -> None:
        super().__init__()
        self._d: OrderedDict[Any, int] = OrderedDict()

    def size_of(self, key: Key) -> int | None:
        return self._d.get(key)

    def insert(self, key: Key, size: int) -> None:
        old = self._d.get(key)
        if old is not None:
            self.bytes -= old
            self._d.move_to_end(key)
        self._d[key] = size
        self.bytes += size

    def touch(self, key: Key) -> None:
        if key in self._d:
            self._d.move_to_end(key)

    def remove(self, key: Key) -> int | None:
        size = self._d.pop(key, None)
        if size is not None:
            self.bytes -= size
        return size

    def pop_victim(self) -> tuple[Any, int] | None:
        if not self._d:
            return None
        key, size = self._d.popitem(last=False)
        self.bytes -= size
        return key, size

    def export(self) -> list[PolicyEntry]:
        return [PolicyEntry(k, s) for k, s in self._d.items()]

    def restore(self, entries: Iterable[PolicyEntry]) -> None:
        existing = list(self._d.items())
        self._d.clear()
        for e in entries:
            if e.key not in self._d:
                self._d[e.key] = e.size
                self.bytes += e.size
        for k, s in existing:
            old = self._d.pop(k, None)
            if old is not None:
                self.bytes -= old
            self._d[k] = s


_SIZE_BITS = 40
_SIZE_MASK = (1 << _SIZE_BITS) - 1
_FREQ_MASK = (1 << 32) - 1
_K_SHIFT = _SIZE_BITS + 32


class LFUDAPolicy(_DictPolicy):
    """LFU with dynamic aging; O(1) hits, evictions O(log p) over p distinct priorities.

    Entries with the same priority K share a bucket (an OrderedDict, least recently given that
    priority first, so ties go to the least recently used); a heap holds the buckets'
    priorities, corrected lazily (a priority whose bucket emptied is dropped when it surfaces).
    Per entry there is one int packing (K, hits, size) and one bucket slot, no object.
    """

    name = "lfuda"

    def __init__(self, capacity: int = 0) -> None:
        super().__init__()
        self._d: dict[Any, int] = {}  # key -> K << 72 | hits << 40 | size
        self._buckets: dict[int, OrderedDict[Any, None]] = {}
        self._heap: list[int] = []  # priorities of buckets (with stale and duplicate ones)
        self.age = 0  # L: priority of the last evicted entry (priorities are whole numbers)

    def size_of(self, key: Key) -> int | None:
        v = self._d.get(key)
        return None if v is None else v & _SIZE_MASK

    def frequency(self, key: Key) -> int:
        v = self._d.get(key)
        return 0 if v is None else (v >> _SIZE_BITS) & _FREQ_MASK

    def _place(self, key: Key, k: int, freq: int, size: int) -> None:
        if not 0 <= size <= _SIZE_MASK:
            raise ValueError(f"entry size {size} out of range")
        self._d[key] = (k << _K_SHIFT) | (min(freq, _FREQ_MASK) << _SIZE_BITS) | size
        bucket = self._buckets.get(k)
        if bucket is None:
            bucket = self._buckets[k] = OrderedDict()
            heapq.heappush(self._heap, k)
            if len(self._heap) > 2 * len(self._buckets) + 64:
                self._heap = sorted(self._buckets)  # (a sorted list is a heap)
        bucket[key] = None

    def _unplace(self, key: Key) -> int | None:
        v = self._d.pop(key, None)
        if v is None:
            return None
        k = v >> _K_SHIFT
        bucket = self._buckets[k]
        del bucket[key]
        if not bucket:
            del self._buckets[k]
        return v

    def insert(self, key: Key, size: int) -> None:
        v = self._d.get(key)
        if v is not None:
            self.bytes += size - (v & _SIZE_MASK)
            self._d[key] = (v & ~_SIZE_MASK) | size
            self.touch(key)
            return
        self._place(key, 1 + self.age, 1, size)
        self.bytes += size

    def touch(self, key: Key) -> None:
        v = self._unplace(key)
        if v is not None:
            freq = ((v >> _SIZE_BITS) & _FREQ_MASK) + 1
            self._place(key, freq + self.age, freq, v & _SIZE_MASK)

    def remove(self, key: Key) -> int | None:
        v = self._unplace(key)
        if v is None:
            return None
        self.bytes -= v & _SIZE_MASK
        return v & _SIZE_MASK

    def pop_victim(self) -> tuple[Any, int] | None:
        heap, buckets = self._heap, self._buckets
        while heap:
            k = heap[0]
            bucket = buckets.get(k)
            if bucket is None:
                heapq.heappop(heap)  # emptied by hits or removals since it was pushed
                continue
            key, _ = bucket.popitem(last=False)
            if not bucket:
                del buckets[k]
            size = self._d.pop(key) & _SIZE_MASK
            self.age = k
            self.bytes -= size
            return key, size
        return None

    def export(self) -> list[PolicyEntry]:
        out = []
        for k in sorted(self._buckets):
            for key in self._buckets[k]:
                v = self._d[key]
                out.append(PolicyEntry(key, v & _SIZE_MASK, (v >> _SIZE_BITS) & _FREQ_MASK, k - self.age))
        return out

    def restore(self, entries: Iterable[PolicyEntry]) -> None:
        # Scores are priorities relative to the age at export time; keep them relative to ours.
        for e in entries:
            if e.key in self._d:
                continue
            self._place(e.key, round(e.score) + self.age, max(1, e.freq), e.size)
            self.bytes += e.size


class FrequencySketch:
    """TinyLFU's popularity estimate: a count-min sketch of 4 rows of saturating 4-bit
    counters (kept in bytes) behind a doorkeeper Bloom filter.

    A key's first sighting only sets its doorkeeper bits, so one-hit wonders never reach
    the counters; the estimate is the counters' minimum plus one if the doorkeeper knows the
    key. Every `sample` (10 x width) additions all counters are halved and the doorkeeper
    cleared, so old popularity fades.
    """

    _HALVE = bytes(i >> 1 for i in range(256))
    _M64 = (1 << 64) - 1

    def __init__(self, width_hint: int) -> None:
        self.width_bits = 6
        while (1 << self.width_bits) < width_hint and self.width_bits < 30:
            self.width_bits += 1
        width = 1 << self.width_bits
        self.mask = width - 1
        self.rows = [bytearray(width) for _ in range(4)]
        self.sample = 10 * width
        self.additions = 0
        self.door_bits = 6
        while (1 << self.door_bits) < 8 * self.sample and self.door_bits < 32:
            self.door_bits += 1
        self.door_mask = (1 << self.door_bits) - 1
        self.door = bytearray(1 << (self.door_bits - 3))

    # Positions come from the high bits of multiplicative hashes (low bits of a product
    # depend only on the low bits of the key's hash, which would correlate the rows).
    def _positions(self, key: Key) -> tuple[int, int, int, int, int, int]:
        h = hash(key) & self._M64
        p1 = (h * 0x9E3779B97F4A7C15) & self._M64
        p2 = (h * 0xC2B2AE3D27D4EB4F) & self._M64
        p3 = (h * 0x165667B19E3779F9) & self._M64
        wb, db = self.width_bits, self.door_bits
        m, dm = self.mask, self.door_mask
        return (
            p1 >> (64 - wb),
            (p1 >> (64 - 2 * wb)) & m,
            p2 >> (64 - wb),
            (p2 >> (64 - 2 * wb)) & m,
            p3 >> (64 - db),
            (p3 >> (64 - 2 * db)) & dm,
        )

    def increment(self, key: Key) -> None:
        i0, i1, i2, i3, a, b = self._positions(key)
        door = self.door
        if not ((door[a >> 3] >> (a & 7)) & 1 and (door[b >> 3] >> (b & 7)) & 1):
            door[a >> 3] |= 1 << (a & 7)
            door[b >> 3] |= 1 << (b & 7)
        else:
            r = self.rows
            added = False
            for row, i in ((r[0], i0), (r[1], i1), (r[2], i2), (r[3], i3)):
                if row[i] < 15:
                    row[i] += 1
                    added = True
            if not added:
                return
        self.additions += 1
        if self.additions >= self.sample:
            self.additions //= 2
            self.rows = [row.translate(self._HALVE) for row in self.rows]
            self.door = bytearray(len(self.door))

    def estimate(self, key: Key) -> int:
        i0, i1, i2, i3, a, b = self._positions(key)
        r, door = self.rows, self.door
        seen = (door[a >> 3] >> (a & 7)) & 1 and (door[b >> 3] >> (b & 7)) & 1
        return min(r[0][i0], r[1][i1], r[2][i2], r[3][i3]) + (1 if seen else 0)


class TinyLFUPolicy(EvictionPolicy):
    """W-TinyLFU: 1% LRU window, then a segmented LRU (20% probation, 80% protected) guarded
    by a frequency-based admission filter. Needs the cache capacity (same unit as sizes)."""

    name = "tinylfu"

    def __init__(self, capacity: int, window_fraction: float = 0.01, item_size_hint: int = 1) -> None:
        super().__init__()
        if capacity <= 0:
            raise ValueError("TinyLFU needs a positive capacity")
        self.capacity = capacity
        self.window_cap = max(1, int(capacity * window_fraction))
        self.main_cap = capacity - self.window_cap
        self.protected_cap = int(self.main_cap * 0.8)
        self.sketch = FrequencySketch(max(64, capacity // max(1, item_size_hint)))
        self.window: OrderedDict[Any, int] = OrderedDict()
        self.probation: OrderedDict[Any, int] = OrderedDict()
        self.protected: OrderedDict[Any, int] = OrderedDict()
        self.window_bytes = 0
        self.protected_bytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self.window or key in self.probation or key in self.protected

    def __len__(self) -> int:
        return len(self.window) + len(self.probation) + len(self.protected)

    def keys(self) -> Iterator[Any]:
        return iter([*self.probation, *self.protected, *self.window])

    def size_of(self, key: Key) -> int | None:
        for seg in (self.window, self.probation, self.protected):
            s = seg.get(key)
            if s is not None:
                return s
        return None

    def insert(self, key: Key, size: int) -> None:
        if key in self:
            self.remove(key)
        self.sketch.increment(key)
        self.window[key] = size
        self.window_bytes += size
        self.bytes += size
        # While the cache has room, window overflow enters the main area without a duel;
        # otherwise it waits in the window as candidates for the next `pop_victim`.
        while self.window_bytes > self.window_cap and len(self.window) > 1 and self.bytes <= self.capacity:
            k, s = self.window.popitem(last=False)
            self.window_bytes -= s
            self.probation[k] = s

    def touch(self, key: Key) -> None:
        self.sketch.increment(key)
        if key in self.window:
            self.window.move_to_end(key)
        elif key in self.protected:
            self.protected.move_to_end(key)
        else:
            size = self.probation.pop(key, None)
            if size is None:
                return
            self.protected[key] = size
            self.protected_bytes += size
            while self.protected_bytes > self.protected_cap and len(self.protected) > 1:
                k, s = self.protected.popitem(last=False)
                self.protected_bytes -= s
                self.probation[k] = s

    def remove(self, key: Key) -> int | None:
        size = self.window.pop(key, None)
        if size is not None:
            self.window_bytes -= size
        else:
            size = self.probation.pop(key, None)
            if size is None:
                size = self.protected.pop(key, None)
                if size is None:
                    return None
                self.protected_bytes -= size
        self.bytes -= size
        return size

    def admit(self, key: Key, size: int, target: int) -> list[tuple[Any, int]]:
        """Insert first, then evict: the blobs pushed out of the window duel with the main
        area's victims, so a newcomer that loses (seen less often) is rejected."""
        self.insert(key, size)
        victims = []
        while self.bytes > target:
            v = self.pop_victim()
            if v is None:
                break
            victims.append(v)
        return victims

    def _main_victim(self) -> tuple[Any, int] | None:
        if self.probation:
            return next(iter(self.probation.items()))
        if self.protected:
            return next(iter(self.protected.items()))
        return None

    def pop_victim(self) -> tuple[Any, int] | None:
        if self.window_bytes > self.window_cap and self.window:
            cand, cand_size = next(iter(self.window.items()))
            victim = self._main_victim()
            if victim is not None and self.sketch.estimate(cand) > self.sketch.estimate(victim[0]):
                # The candidate wins: it enters probation and the main victim leaves.
                self.window.popitem(last=False)
                self.window_bytes -= cand_size
                self.probation[cand] = cand_size
                self.remove(victim[0])
                return victim
            self.remove(cand)
            return cand, cand_size
        victim = self._main_victim()
        if victim is None and self.window:
            victim = next(iter(self.window.items()))
        if victim is None:
            return None
        self.remove(victim[0])
        return victim

    def export(self) -> list[PolicyEntry]:
        out: list[PolicyEntry] = []
        for seg in (self.probation, self.protected, self.window):
            out.extend(PolicyEntry(k, s, self.sketch.estimate(k)) for k, s in seg.items())
        return out

    def restore(self, entries: Iterable[PolicyEntry]) -> None:
        # Restored entries go to probation (coldest first); their frequencies prime the sketch.
        old = list(self.probation.items())
        self.probation.clear()
        for e in entries:
            if e.key in self:
                continue
            self.probation[e.key] = e.size
            self.bytes += e.size
            for _ in range(min(e.freq, 15)):
                self.sketch.increment(e.key)
        for k, s in old:
            self.probation[k] = s


POLICIES: dict[str, type[EvictionPolicy]] = {
    "lru": LRUPolicy,
    "lfuda": LFUDAPolicy,
    "tinylfu": TinyLFUPolicy,
}


def make_policy(name: str, capacity: int, item_size_hint: int = 1) -> EvictionPolicy:
    """A policy by its canonical name (see `prism.app.cache_chain` for the CLI name mapping)."""
    if name == "tinylfu":
        return TinyLFUPolicy(capacity, item_size_hint=item_size_hint)
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; choose from {', '.join(POLICIES)}") from None
