"""A bounded negative cache: hashes recently found missing, forgotten after a TTL."""

from __future__ import annotations

import time
from collections import OrderedDict


class NegativeCache:
    """At most `capacity` hashes, each remembered for `ttl` seconds (oldest dropped first)."""

    def __init__(self, capacity: int = 2000, ttl: float = 300.0) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._entries: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str) -> None:
        self._entries[key] = time.monotonic() + self.ttl
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self._entries[key]
            return False
        return True

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
