"""The GET of a blob shared by the HTTP/1.1 and HTTP/3 servers; each renders the outcome its own way.

Order of checks (reflector.md §4.4, §4.5): protected content, the negative cache, then a slot of
the request queue for the store lookup and the send.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prism.http.negcache import NegativeCache
from prism.http.queue import QueueFull, RequestQueue
from prism.logs import RepeatFilter, access_line
from prism.stats import ErrorType, ServerStats
from prism.store.base import BlobNotFound, BlobRef, BlobStore, StoreUnavailable, Timer, arriving_getter
from prism.store.trace import BlobTrace

log = logging.getLogger("prism.http")
access_log = logging.getLogger("prism.http.access")
"""One DEBUG line per GET (`-v http`)."""

ProtectedCheck = Callable[[str], Awaitable[bool]]


class Refused(enum.Enum):
    PROTECTED = "protected"
    BUSY = "busy"
    """The request queue is full."""


@dataclass(frozen=True, slots=True)
class Found:
    ref: BlobRef
    """Open until the responder returns; the responder sends it and counts it (`ServerStats.sent`)."""


@dataclass(frozen=True, slots=True)
class Missing:
    trace: BlobTrace


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception
    trace: BlobTrace


GetOutcome = Found | Missing | Failed | Refused
Responder = Callable[[GetOutcome], Awaitable[None]]


@dataclass(slots=True)
class BlobGetter:
    """Looks a blob up for a server and hands the outcome to that server's responder."""

    store: BlobStore
    queue: RequestQueue
    stats: ServerStats
    protected: ProtectedCheck | None
    negative_cache: NegativeCache | None
    name: str
    """Names the server in traces and logs (`http`, `http3`)."""
    repeats: RepeatFilter = field(default_factory=RepeatFilter)
    """An upstream that is down fails every miss alike: logged once, not per request."""
    arriving: bool = False
    """The responder can send a blob whose bytes are still arriving (`BlobRef.arrival`)."""
    _fetch: Callable[[str], Awaitable[BlobRef]] = field(init=False)

    def __post_init__(self) -> None:
        self._fetch = arriving_getter(self.store) if self.arriving else self.store.get

    def log_failure(self, blob_hash: str, error: Exception) -> None:
        """A lookup failed: one log line per error class and window."""
        more = self.repeats.suffix(type(error).__name__, time.monotonic())
        if more is not None:
            log.warning("%s GET %s: %s%s", self.name, blob_hash[:16], error, more)

    async def get(
        self,
        blob_hash: str,
        respond: Responder,
        *,
        may_be_protected: bool = True,
        client: Callable[[], str] | None = None,
    ) -> None:
        """Answer a GET of a valid `blob_hash` through `respond` (called once).

        `client` names the peer for the access log; it is called only when that log is on.
        """
        if not access_log.isEnabledFor(logging.DEBUG):
            await self._get(blob_hash, respond, may_be_protected)
            return
        timer = Timer()
        outcomes: list[GetOutcome] = []

        async def logged(outcome: GetOutcome) -> None:
            outcomes.append(outcome)
            await respond(outcome)

        try:
            await self._get(blob_hash, logged, may_be_protected)
        finally:
            status, nbytes, layer = _summary(outcomes[0] if outcomes else None)
            who = client() if client else "-"
            seconds = timer.elapsed() / 1e9
            line = access_line(who, f"{self.name} GET", blob_hash, status, nbytes, seconds, layer)
            access_log.debug(line)

    async def _get(self, blob_hash: str, respond: Responder, may_be_protected: bool) -> None:
        if may_be_protected and self.protected is not None and await self.protected(blob_hash):
            self.stats.error(ErrorType.PROTECTED_BLOB)
            await respond(Refused.PROTECTED)
            return
        if self.negative_cache is not None and blob_hash in self.negative_cache:
            await respond(Missing(BlobTrace.new(0, self.name)))
            return
        try:
            async with self.queue.slot():
                await self._lookup(blob_hash, respond)
        except QueueFull:
            self.stats.error(ErrorType.OTHER)
            await respond(Refused.BUSY)

    async def _lookup(self, blob_hash: str, respond: Responder) -> None:
        timer = Timer()
        outcome: Missing | Failed
        try:
            ref = await self._fetch(blob_hash)
        except BlobNotFound:
            if self.negative_cache is not None:
                self.negative_cache.add(blob_hash)
            outcome = Missing(BlobTrace.new(timer.elapsed(), self.name))
        except Exception as e:
            self.stats.error(e)
            self.log_failure(blob_hash, e)
            outcome = Failed(e, BlobTrace.new(timer.elapsed(), self.name))
        else:
            with ref:
                await respond(Found(ref))
            return
        await respond(outcome)


RETRY_AFTER = "5"
"""Seconds a client is told to wait while a service the store depends on is down."""


def failure_answer(error: BaseException) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers for a failed lookup: generic words; the detail stays in the log."""
    if isinstance(error, StoreUnavailable):
        return 503, b"service temporarily unavailable, retry later\n", [("Retry-After", RETRY_AFTER)]
    return 500, b"internal error\n", []


_REFUSED_STATUS = {Refused.PROTECTED: 403, Refused.BUSY: 503}


def _summary(outcome: GetOutcome | None) -> tuple[int | str, int, str]:
    """Status, bytes and answering layer of an outcome, for the access log."""
    if isinstance(outcome, Found):
        return 200, outcome.ref.size, outcome.ref.trace.path()
    if isinstance(outcome, Missing):
        return 404, 0, "-"
    if isinstance(outcome, Failed):
        return 500, 0, "-"
    if outcome is None:
        return "dropped", 0, "-"
    return _REFUSED_STATUS[outcome], 0, "-"
