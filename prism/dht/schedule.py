"""When the node acts on its own: announcing hashes, joining and refreshing the routing table.

Sans-IO: each object is fed `now` and answers what to do and when; the asyncio workers (`prism.dht.workers`)
only sleep until then and run the lookups and stores.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Iterable

from prism.dht.config import DhtConfig
from prism.dht.routing import RoutingTable


class RateLimiter:
    """A token bucket: `rate` actions a second, bursts of up to `rate`; starts full."""

    def __init__(self, rate: float, now: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._allowance = rate
        self._last = now

    def _refill(self, now: float) -> float:
        return min(self.rate, self._allowance + max(0.0, now - self._last) * self.rate)

    def ready_at(self, now: float) -> float:
        """When the next action is allowed (now, or later)."""
        allowance = self._refill(now)
        return now if allowance >= 1.0 else now + (1.0 - allowance) / self.rate

    def try_take(self, now: float) -> bool:
        """Spend one action if allowed now."""
        self._allowance = self._refill(now)
        self._last = now
        if self._allowance >= 1.0:
            self._allowance -= 1.0
            return True
        return False


FRESH = float("-inf")
"""The due time of a hash never announced (or added again): it goes before every re-announcement."""


class AnnounceSchedule:
    """Which hashes to announce, and when.

    A hash added is new: new hashes are announced first, in the order added, before any re-announcement.
    After each announcement a hash is due again `interval` seconds later (keep it below the 24 h expiry of
    stored peers). Hashes `restore`d after a restart were announced before: they are spread at random over
    the time the rate needs for them, so a restart is no burst. Announcements start at most `rate` a second
    (bursts of `rate`). Drive it with `due(now)` (when to look again) and `take_ready(now)` (the hashes to
    announce now).
    """

    def __init__(self, rate: float, interval: float, now: float, rng: random.Random | None = None) -> None:
        self.interval = interval
        self.limiter = RateLimiter(rate, now)
        self.rng = rng or random.Random()
        self._heap: list[tuple[float, int, bytes]] = []
        self._fresh: dict[bytes, None] = {}
        """New hashes, in the order added (a dict: ordered, and removal is O(1))."""
        self._due: dict[bytes, float] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    @property
    def capacity(self) -> float:
        """How many hashes the rate can re-announce every interval."""
        return self.limiter.rate * self.interval

    def backlog(self, now: float) -> int:
        """Hashes due now and not yet announced (new ones included)."""
        return sum(1 for at in self._due.values() if at <= now)

    def _push(self, key: bytes, at: float) -> None:
        self._fresh.pop(key, None)
        self._due[key] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, key))

    def add(self, keys: Iterable[bytes], now: float) -> None:
        """Announce these hashes before any re-announcement, as soon as the rate allows (again, for those
        already scheduled), then every interval."""
        for key in keys:
            self._fresh.pop(key, None)
            self._fresh[key] = None
            self._due[key] = FRESH

    def restore(self, keys: Iterable[bytes], now: float, spread: float | None = None) -> None:
        """Hashes announced before a restart: each due at a random time in the next `spread` seconds
        (default: the time the rate needs to announce them all, at most one interval). Hashes already
        scheduled keep their time."""
        todo = [k for k in keys if k not in self._due]
        if spread is None:
            spread = min(self.interval, len(todo) / self.limiter.rate)
        for key in todo:
            self._push(key, now + self.rng.uniform(0.0, spread))

    def retry(self, key: bytes, at: float) -> None:
        """An announcement that failed: due again at `at` (if the hash is still scheduled)."""
        if key in self._due:
            self._push(key, at)

    def remove(self, keys: Iterable[bytes]) -> None:
        """Stop announcing these hashes (an announcement already started still finishes)."""
        for key in keys:
            self._due.pop(key, None)
            self._fresh.pop(key, None)

    def _next_due(self) -> float | None:
        if self._fresh:
            return FRESH
        heap = self._heap
        while heap:
            at, _, key = heap[0]
            if self._due.get(key) == at:
                return at
            heapq.heappop(heap)  # removed, or rescheduled since
        return None

    def due(self, now: float) -> float | None:
        """When the next announcement may start (now or earlier: at once); None if no hash is scheduled."""
        at = self._next_due()
        if at is None or at > now:
            return at
        return self.limiter.ready_at(now)

    def take_ready(self, now: float, limit: int | None = None) -> list[bytes]:
        """The hashes to announce now (new first, then due ones, as the rate allows), each due again
        `interval` later."""
        out: list[bytes] = []
        while limit is None or len(out) < limit:
            at = self._next_due()
            if at is None or at > now or not self.limiter.try_take(now):
                break
            if self._fresh:
                key = next(iter(self._fresh))
            else:
                _, _, key = heapq.heappop(self._heap)
            self._push(key, now + self.interval)
            out.append(key)
        return out


class StoreBackOff:
    """Pause announcing while no node accepts our stores (we cannot be reached, or the network is gone).

    After `threshold` announcements in a row that no node accepted, announcing pauses for `initial`
    seconds, then twice as long after each further failure once the pause is over, up to `maximum`. One
    accepted announcement resumes at once.
    """

    def __init__(self, initial: float = 5.0, maximum: float = 300.0, threshold: int = 3) -> None:
        self.initial = initial
        self.maximum = maximum
        self.threshold = threshold
        self.failures = 0
        """Announcements in a row that no node accepted."""
        self.pauses = 0
        self.paused_until = 0.0

    def on_result(self, stored: int, now: float) -> None:
        """An announcement finished; `stored` nodes accepted it."""
        if stored > 0:
            self.failures = self.pauses = 0
            self.paused_until = 0.0
            return
        self.failures += 1
        if self.failures >= self.threshold and now >= self.paused_until:
            self.pauses += 1
            self.paused_until = now + min(self.maximum, self.initial * 2 ** (self.pauses - 1))

    def ready_at(self, now: float) -> float:
        """When announcing may go on (now, or the end of the pause)."""
        return max(now, self.paused_until)

    def retry_at(self, now: float) -> float:
        """When a hash whose announcement failed should be tried again."""
        return max(now + self.initial, self.paused_until)


class Maintenance(enum.Enum):
    """What a maintenance round does."""

    JOIN = "join"
    """Nobody is in the table: ping the seeds and saved contacts again, then look up our own id."""
    TOP_UP = "top up"
    """Fewer than k contacts: look up our own id, then every bucket."""
    REFRESH = "refresh"
    """Look up a random id in each bucket not updated for a while."""


class MaintenanceSchedule:
    """The join and refresh rule: retry a failed join every `join_retry` seconds; then every
    `refresh_interval` seconds (every `join_retry` while the table holds fewer than k contacts) refresh the
    stale buckets, or top up a small table, or join again if the table emptied."""

    def __init__(self, config: DhtConfig, can_join: bool, rng: random.Random | None = None) -> None:
        self.config = config
        self.can_join = can_join
        """Whether there is anybody to join through (seeds or saved contacts)."""
        self.rng = rng or random.Random()
        self._top_up = False

    @property
    def join_retry(self) -> float:
        """Seconds between two join attempts when nobody answered."""
        return self.config.join_retry

    def delay(self, table_size: int) -> float:
        """Seconds until the next maintenance round. A table smaller than k (e.g. joined while the seed knew
        nobody) is topped up sooner, and that round will be a top-up."""
        self._top_up = table_size < self.config.k
        return self.config.join_retry if self._top_up else self.config.refresh_interval

    def action(self, table_size: int) -> Maintenance:
        """What the round scheduled by the last `delay()` does, given the table's size now."""
        if table_size == 0 and self.can_join:
            return Maintenance.JOIN
        return Maintenance.TOP_UP if self._top_up else Maintenance.REFRESH

    def refresh_targets(self, routing: RoutingTable, now: float, max_age: float | None = None) -> list[bytes]:
        """A random id in each bucket not updated for `refresh_age` (or max_age) seconds; those buckets
        count as refreshed from now."""
        age = self.config.refresh_age if max_age is None else max_age
        targets = []
        for idx in routing.stale_buckets(now, age):
            targets.append(routing.random_id_in_bucket(idx, self.rng))
            routing.mark_refreshed(idx, now)
        return targets
