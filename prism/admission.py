"""Sans-IO: which TCP connections a process keeps when its file descriptors run short.

One `Admission` is shared by the peer, HTTP and receiver servers of a process (each may also have
its own, in tests). It holds every open connection in one of three states: *fresh* (no request
yet), *idle* (waiting on the client since some time) or *busy* (the server is working for it).
At the cap, a new connection takes the place of the one that has waited longest on its client:
without a request for at least `min_fresh`, or idle after one for at least `min_idle` (an
attacker's idle socket costs it nothing to reopen; a real client's request is worth serving,
and its first one is on its way). Busy connections never go. When none can go, the new
connection is refused. Fresh connections older than `first_request_timeout` are handed out by
`expired` to be closed.
Counts of what was shed and refused are reported at most once per `log_window` seconds,
never per connection.
"""

from __future__ import annotations

import resource
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

FIRST_REQUEST_TIMEOUT = 10.0
"""Seconds a connection may stay open without a request."""
MIN_FRESH = 0.1
"""A new connection is not shed for this long: a real client's first request arrives within it."""
MIN_IDLE = 0.5
"""A connection that made a request and is idle for less is not shed: it has just been answered."""
LOG_WINDOW = 10.0
HEADROOM_FRACTION = 4
"""A quarter of the descriptors is kept for blob files, the database, caches and logs..."""
MIN_HEADROOM = 128
"""... and never fewer than this many."""


@dataclass(frozen=True, slots=True)
class Decision(Generic[K]):
    """What to do with a new connection: keep it or not, and which old one to close for it."""

    admitted: bool
    shed: K | None = None


class Admission(Generic[K]):
    """The connection table of a process (see the module docstring); fed `now`, never reads a clock."""

    def __init__(
        self,
        cap: int,
        *,
        first_request_timeout: float = FIRST_REQUEST_TIMEOUT,
        min_fresh: float = MIN_FRESH,
        min_idle: float = MIN_IDLE,
        log_window: float = LOG_WINDOW,
    ) -> None:
        self.cap = cap
        self.first_request_timeout = first_request_timeout
        self.min_fresh = min_fresh
        self.min_idle = min_idle
        self.log_window = log_window
        # Insertion order is time order: the oldest entry of each dict is its first.
        self._fresh: dict[K, float] = {}
        self._idle: dict[K, float] = {}
        self._busy: set[K] = set()
        self.shed_total = 0
        self.refused_total = 0
        self.timed_out_total = 0
        self.out_of_descriptors_total = 0
        self._reported = (0, 0, 0, 0)
        self._last_report: float | None = None

    def __len__(self) -> int:
        return len(self._fresh) + len(self._idle) + len(self._busy)

    def __contains__(self, conn: object) -> bool:
        return conn in self._fresh or conn in self._idle or conn in self._busy

    def admit(self, conn: K, now: float) -> Decision[K]:
        """Take `conn` in as fresh, shedding the longest-idle connection when at the cap."""
        shed = None
        if len(self) >= self.cap:
            shed = self._victim(now)
            if shed is None:
                self.refused_total += 1
                return Decision(False)
            self.closed(shed)
            self.shed_total += 1
        self._fresh[conn] = now
        return Decision(True, shed)

    def _victim(self, now: float) -> K | None:
        # The connection that has waited longest on its client goes: the oldest of each kind is
        # the first of its dict, so this is two lookups whatever the table's size.
        fresh = next(iter(self._fresh), None)
        if fresh is not None and now - self._fresh[fresh] < self.min_fresh:
            fresh = None
        idle = next(iter(self._idle), None)
        if idle is not None and now - self._idle[idle] < self.min_idle:
            idle = None
        if fresh is None or idle is None:
            return fresh if fresh is not None else idle
        return fresh if self._fresh[fresh] <= self._idle[idle] else idle

    def busy(self, conn: K) -> None:
        """The server works for `conn` (a request is being answered): it is never shed."""
        if self._fresh.pop(conn, None) is not None or self._idle.pop(conn, None) is not None:
            self._busy.add(conn)

    def idle(self, conn: K, now: float) -> None:
        """`conn` made a request (or progress) and now waits on its client, since `now`."""
        if self._fresh.pop(conn, None) is None and self._idle.pop(conn, None) is None:
            if conn not in self._busy:
                return  # already closed
            self._busy.discard(conn)
        self._idle[conn] = now

    def closed(self, conn: K) -> None:
        """Forget `conn` (safe to call more than once)."""
        self._fresh.pop(conn, None)
        self._idle.pop(conn, None)
        self._busy.discard(conn)

    def expired(self, now: float, limit: int | None = None) -> list[K]:
        """Fresh connections older than `first_request_timeout` (at most `limit`), removed: close them."""
        out: list[K] = []
        for conn, since in self._fresh.items():
            if now - since < self.first_request_timeout or len(out) == limit:
                break
            out.append(conn)
        for conn in out:
            del self._fresh[conn]
        self.timed_out_total += len(out)
        return out

    def out_of_descriptors(self) -> K | None:
        """accept() failed for want of descriptors: count it; the oldest fresh connection to close, if any."""
        self.out_of_descriptors_total += 1
        for conn in self._fresh:
            self.closed(conn)
            self.shed_total += 1
            return conn
        return None

    def report(self, now: float) -> str | None:
        """A line saying what was shed or refused since the last one; None if nothing or too soon."""
        if self._last_report is not None and now - self._last_report < self.log_window:
            return None
        totals = (self.shed_total, self.refused_total, self.timed_out_total, self.out_of_descriptors_total)
        shed, refused, timed_out, emfile = (t - r for t, r in zip(totals, self._reported, strict=True))
        if not (shed or refused or emfile):
            return None  # first-request timeouts alone are ordinary
        self._reported = totals
        self._last_report = now
        return (
            f"connection cap {self.cap} reached: shed {shed} idle connection(s), refused {refused},"
            f" closed {timed_out} without a request, {emfile} accept(s) out of descriptors"
        )


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # e.g. a hard limit above the kernel's nr_open: keep what we have
    return soft, hard


def connection_cap(nofile: int | None = None) -> int:
    """Connections the servers of a process may hold, from the soft file limit, with headroom."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(16, nofile - max(MIN_HEADROOM, nofile // HEADROOM_FRACTION))
