"""Request collapsing: concurrent `get`s of one hash share one call to the store below.

Every caller still receives its own `BlobRef` (each must close its own): blobs in memory
share the bytes, blobs in an open file get a duplicated file descriptor, created before
the first caller can close the original. Writes are never folded into reads (unlike
reflector.go, whose singleflight also grouped `Put` with `Get` of the same hash).
A blob still arriving (`get_arriving`) stays shared until it is verified or fails: a caller
that comes meanwhile gets it too, and `get` waits for it to be whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter_ns

from prism.store.base import (
    BlobNotFound,
    BlobRef,
    BlobStore,
    WrappingStore,
    arrived,
    arriving_getter,
    immediate_getter,
)
from prism.store.stats import StoreSnapshot

log = logging.getLogger("prism.store.singleflight")


class _Retry:
    """Sent to waiters when the leading caller was cancelled: one of them leads next."""


_RETRY = _Retry()


def clone_ref(ref: BlobRef) -> BlobRef:
    """An independent BlobRef for the same blob (own file descriptor if file-backed)."""
    if ref.file is not None:
        dup = os.fdopen(os.dup(ref.file.fileno()), "rb", buffering=0)
        return BlobRef(ref.hash, ref.size, ref.trace, data=ref.data, file=dup, path=ref.path)
    return BlobRef(ref.hash, ref.size, ref.trace, data=ref.data, path=ref.path, arrival=ref.arrival)


def _copy_error(err: BaseException, key: str) -> BaseException:
    # Waiters get their own not-found (a fresh traceback each); other errors are shared.
    if isinstance(err, BlobNotFound):
        return BlobNotFound(err.blob_hash or key, str(err))
    return err


class Flights:
    """Per-key request collapsing for coroutines returning `BlobRef`s.

    The first caller of a key (the leader) runs the work inline, so an uncontended call
    costs one dict lookup; later callers wait for its result. If the leader is cancelled
    the work is not lost for the others: a waiter takes over.
    """

    def __init__(self) -> None:
        self._flights: dict[str, list[asyncio.Future[BlobRef | _Retry]]] = {}
        self._arriving: dict[str, BlobRef] = {}
        """Results whose bytes are still arriving, handed to every caller until they are done."""
        self.waiting = 0  # callers currently waiting on another caller's work
        self.leaders = 0  # callers currently doing the work
        self.calls = 0  # works actually started

    def __contains__(self, key: str) -> bool:
        return key in self._flights or key in self._arriving

    async def run(self, key: str, work: Callable[[str], Awaitable[BlobRef]]) -> BlobRef:
        """`await work(key)` once for all concurrent callers of `key`; each gets its own ref."""
        arriving = self._arriving.get(key)
        if arriving is not None:
            return clone_ref(arriving)
        while True:
            waiters = self._flights.get(key)
            if waiters is None:
                break
            fut: asyncio.Future[BlobRef | _Retry] = asyncio.get_running_loop().create_future()
            waiters.append(fut)
            self.waiting += 1
            try:
                result = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    r = fut.result()
                    if isinstance(r, BlobRef):
                        r.close()
                raise
            finally:
                self.waiting -= 1
            if isinstance(result, BlobRef):
                return result
            # The leader was cancelled: loop and either lead or wait for the new leader.

        # Leading (inline, so an uncontended call costs one dict insert and delete).
        waiters = []
        self._flights[key] = waiters
        self.leaders += 1
        self.calls += 1
        try:
            ref = await work(key)
        except asyncio.CancelledError:
            self._finish(key, waiters)
            for w in waiters:
                if not w.done():
                    w.set_result(_RETRY)
            raise
        except BaseException as err:
            self._finish(key, waiters)
            for w in waiters:
                if not w.done():
                    w.set_exception(_copy_error(err, key))
            raise
        self._finish(key, waiters)
        if ref.arrival is not None and not ref.arrival.done:
            self._share_arriving(key, ref)
        for w in waiters:
            if not w.done():
                try:
                    w.set_result(clone_ref(ref))
                except OSError as err:  # out of file descriptors: that waiter gets the error
                    w.set_exception(err)
        return ref

    def _share_arriving(self, key: str, ref: BlobRef) -> None:
        shared = clone_ref(ref)
        assert shared.arrival is not None
        self._arriving[key] = shared
        # A partial, not a closure naming itself: that cycle would hold the buffer until a GC.
        shared.arrival.listen(partial(self._unshare_when_done, key, shared))

    def _unshare_when_done(self, key: str, shared: BlobRef) -> None:
        arrival = shared.arrival
        if arrival is not None and arrival.done and self._arriving.get(key) is shared:
            del self._arriving[key]

    def _finish(self, key: str, waiters: list[asyncio.Future[BlobRef | _Retry]]) -> None:
        self.leaders -= 1
        if self._flights.get(key) is waiters:
            del self._flights[key]


class SingleFlightStore(WrappingStore):
    """Collapses concurrent `get`s of one hash into one `get` of `inner` (`sf_<inner name>`)."""

    def __init__(self, inner: BlobStore, component: str = "") -> None:
        self.inner = inner
        self.component = component
        self.name = f"sf_{inner.name}"
        self.flights = Flights()
        self._inner_now = immediate_getter(inner)
        self._inner_arriving = arriving_getter(inner)

    def get_now(self, blob_hash: str) -> BlobRef | None:
        """What `inner` hands over at once, unless a `get` of the hash is already under way."""
        if self._inner_now is None or blob_hash in self.flights:
            return None
        start = perf_counter_ns()
        ref = self._inner_now(blob_hash)
        if ref is not None:
            ref.trace = ref.trace.stack(perf_counter_ns() - start, self.name)
        return ref

    async def get(self, blob_hash: str) -> BlobRef:
        return await arrived(await self.get_arriving(blob_hash))

    async def get_arriving(self, blob_hash: str) -> BlobRef:
        ref = self.get_now(blob_hash)
        if ref is not None:
            return ref
        start = perf_counter_ns()
        ref = await self.flights.run(blob_hash, self._inner_arriving)
        ref.trace = ref.trace.stack(perf_counter_ns() - start, self.name)
        return ref

    def snapshot(self) -> StoreSnapshot:
        flights = self.flights
        return StoreSnapshot(self.name, self.component, in_flight=flights.leaders, waiting=flights.waiting)

    @property
    def origin_calls(self) -> int:
        """Inner gets actually made."""
        return self.flights.calls
