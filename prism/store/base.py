"""The one interface every blob store implements, and what a `get` hands back."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from prism.store.arrival import BlobArrival, until_verified
from prism.store.trace import BlobTrace

T = TypeVar("T")


class StoreError(Exception):
    """Base class of store failures other than a missing blob."""


class StoreUnavailable(StoreError):
    """A service the store depends on (its database) is known to be down: clients should retry later."""


class BlobNotFound(StoreError):
    """The blob is not in this store. The message matches reflector.go's `blob not found`."""

    def __init__(self, blob_hash: str = "", message: str = "blob not found") -> None:
        super().__init__(message)
        self.blob_hash = blob_hash


class ReadOnlyStoreError(StoreError):
    """Writes are not supported by this store (reflector.go's ErrNotImplemented)."""

    def __init__(self, store_name: str) -> None:
        super().__init__(f"store {store_name!r} is read-only: this store does not implement this method")


class BlobFile(Protocol):
    """An open blob file as a BlobRef holds it: a regular file, or a hold on a shared descriptor."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


@dataclass(slots=True, eq=False)
class BlobRef:
    """A blob found by `get`: its size and its bytes, either in memory or as an open file.

    Disk stores hand back an open file (never just a path): the blob stays readable even if
    an evictor unlinks it meanwhile, and servers can `sendfile` straight from it. Whoever
    receives a BlobRef must `close()` it (or use it as a context manager).

    Only `get_arriving` (see `ArrivingGetter`) hands back a blob whose bytes are still coming in:
    `data` is then its final buffer and `arrival` says how much of it holds what (see `arrived`).
    """

    hash: str
    size: int
    trace: BlobTrace = field(default_factory=BlobTrace)
    data: bytes | None = None
    file: BlobFile | None = None
    path: str | None = None
    arrival: BlobArrival | None = None

    @classmethod
    def from_bytes(cls, blob_hash: str, data: bytes, trace: BlobTrace) -> BlobRef:
        return cls(blob_hash, len(data), trace, data=data)

    def read(self) -> bytes:
        """The whole blob as bytes (reads the file once and keeps the bytes)."""
        if self.arrival is not None and not self.arrival.is_verified:
            raise StoreError(f"blob {self.hash} is still arriving")
        if self.data is None:
            if self.file is None:
                raise StoreError(f"blob {self.hash} has neither bytes nor an open file")
            data = os.pread(self.file.fileno(), self.size, 0)
            if len(data) != self.size:
                raise StoreError(f"blob {self.hash}: short read ({len(data)} of {self.size} bytes)")
            self.data = data
            self.close()
        return self.data

    def with_trace(self, trace: BlobTrace) -> BlobRef:
        self.trace = trace
        return self

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> BlobRef:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class BlobStore(Protocol):
    """Every store, and every wrapper around stores, speaks this.

    `get` raises BlobNotFound when the blob is missing; any other failure is a StoreError
    (or an OSError from the layer below). `put` trusts the hash it is given: callers verify.
    """

    name: str

    async def has(self, blob_hash: str) -> bool: ...

    async def get(self, blob_hash: str) -> BlobRef: ...

    async def put(self, blob_hash: str, data: bytes) -> None: ...

    async def put_sd(self, blob_hash: str, data: bytes) -> None: ...

    async def delete(self, blob_hash: str) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class StoreWrapper(Protocol):
    """A store built on other stores; `wrapped()` names them so the chain can be walked."""

    def wrapped(self) -> tuple[BlobStore, ...]:
        """The stores this one calls, in the order `find_capability` should prefer them."""
        ...


class WrappingStore:
    """Base for a store that wraps `inner` and forwards every call it does not override."""

    name: str
    inner: BlobStore

    def wrapped(self) -> tuple[BlobStore, ...]:
        return (self.inner,)

    def borrows_put_data(self) -> bool:
        # Passed through only while `put`/`put_sd` are the forwarding ones below: a subclass that
        # writes differently may keep `data`, so it must answer for itself.
        forwards = type(self).put is WrappingStore.put and type(self).put_sd is WrappingStore.put_sd
        return forwards and put_borrows_data(self.inner)

    async def has(self, blob_hash: str) -> bool:
        return await self.inner.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        return await self.inner.get(blob_hash)

    async def put(self, blob_hash: str, data: bytes) -> None:
        await self.inner.put(blob_hash, data)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.inner.put_sd(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        await self.inner.delete(blob_hash)

    async def close(self) -> None:
        await self.inner.close()


class ReadOnlyStore:
    """Base for stores that can only read (upstreams, origins): every write raises ReadOnlyStoreError."""

    name: str

    async def put(self, blob_hash: str, data: bytes) -> None:
        raise ReadOnlyStoreError(self.name)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        raise ReadOnlyStoreError(self.name)

    async def delete(self, blob_hash: str) -> None:
        raise ReadOnlyStoreError(self.name)


# Optional capabilities. A wrapper that can answer them passes them through, so the
# reflector receiver can ask the chain without knowing its shape (see `find_capability`).


@runtime_checkable
class Blocklister(Protocol):
    """A store that knows blocked hashes."""

    async def block(self, blob_hash: str) -> None: ...

    async def wants(self, blob_hash: str) -> bool:
        """False when the hash is blocked or already stored."""
        ...


@runtime_checkable
class NeededBlobChecker(Protocol):
    """A store that knows which content blobs of a known stream are still missing."""

    async def missing_blobs_for_known_stream(self, sd_hash: str) -> list[str]: ...


@runtime_checkable
class Lister(Protocol):
    """A store that can list every hash it holds."""

    async def list_hashes(self) -> list[str]: ...


@runtime_checkable
class ImmediateGetter(Protocol):
    """A store that can often hand a blob over without waiting: a file it opens, bytes it holds.

    `get_now` returns the blob when it can be had at once, else None. None means "ask `get`",
    not "missing": `get` gives the answer either way. A server answers a hit through it without
    scheduling anything (the HTTP server's hot path); each such store's `get` starts with it, so
    both give the same blob, trace and counts.
    """

    def get_now(self, blob_hash: str) -> BlobRef | None: ...


def immediate_getter(store: BlobStore) -> Callable[[str], BlobRef | None] | None:
    """`store.get_now` when the store has one (a wrapper without it hides its inner stores')."""
    return store.get_now if isinstance(store, ImmediateGetter) else None


@runtime_checkable
class ArrivingGetter(Protocol):
    """A store that can hand a blob over while its bytes are still arriving from upstream.

    `get_arriving` is `get` that may return as soon as the blob's size is known, with
    `BlobRef.arrival` set: a server streams such a blob to its client as it comes in, the cache
    under it keeps it once verified. `get` of such a store is `arrived(await get_arriving(h))`.
    """

    async def get_arriving(self, blob_hash: str) -> BlobRef: ...


def arriving_getter(store: BlobStore) -> Callable[[str], Awaitable[BlobRef]]:
    """`store.get_arriving` when the store has one, else `store.get` (a wrapper without it hides
    its inner stores')."""
    return store.get_arriving if isinstance(store, ArrivingGetter) else store.get


async def arrived(ref: BlobRef) -> BlobRef:
    """`ref` once its bytes are all in and verified (at once for a blob that is whole already).

    Closes `ref` and raises the arrival's error when the blob fails to arrive.
    """
    arrival = ref.arrival
    if arrival is None:
        return ref
    try:
        await until_verified(arrival)
    except BaseException:
        ref.close()
        raise
    ref.arrival = None
    return ref


HoldingsListener = Callable[[str, bool], None]
"""Called with (blob hash, held): True when the blob was stored, False when it was deleted or evicted."""


@runtime_checkable
class Holdings(Protocol):
    """A store whose contents are worth announcing (an origin or a disk cache): it lists what it holds and
    tells listeners when a blob is stored or removed (see `HoldingsEvents`, `holdings_in_chain`)."""

    async def has(self, blob_hash: str) -> bool: ...

    async def get(self, blob_hash: str) -> BlobRef: ...

    async def list_hashes(self) -> list[str]: ...

    def watch_holdings(self, listener: HoldingsListener) -> None:
        """Call `listener` on every blob stored or removed from now on."""
        ...


class HoldingsEvents:
    """The listeners of a `Holdings` store; the store calls `stored` and `removed`."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[HoldingsListener] = []

    def add(self, listener: HoldingsListener) -> None:
        self._listeners.append(listener)

    def stored(self, blob_hash: str) -> None:
        for listener in self._listeners:
            listener(blob_hash, True)

    def removed(self, blob_hash: str) -> None:
        for listener in self._listeners:
            listener(blob_hash, False)


def holdings_in_chain(store: BlobStore) -> list[Holdings]:
    """The outermost `Holdings` stores of the chain: a disk store under a disk cache is the cache's
    business (the cache reports its evictions), so only the cache is listed."""
    found = [s for s in walk_chain(store) if isinstance(s, Holdings)]
    inner = {id(s) for h in found for s in walk_chain(h) if s is not h}
    return [h for h in found if id(h) not in inner]


@runtime_checkable
class BorrowsPutData(Protocol):
    """A store that can say whether its `put`/`put_sd` only borrow `data` (see `put_borrows_data`)."""

    def borrows_put_data(self) -> bool:
        """True when every store `put`/`put_sd` write to is done with `data` when they return."""
        ...


def put_borrows_data(store: BlobStore) -> bool:
    """Whether `store.put`/`put_sd` are done with `data` once they return (written out or copied, never kept).

    Then a caller may pass a view of a buffer it reuses afterwards (the reflector receiver's
    zero-copy path). This is a property of every store a write reaches, so it is not searched
    for down the chain like the capabilities above (`find_capability` would find a disk store
    below a wrapper that keeps the data): each wrapper answers for what it writes to, and a
    store that does not answer is assumed to keep `data`.
    """
    return isinstance(store, BorrowsPutData) and store.borrows_put_data()


def walk_chain(store: BlobStore) -> Iterator[BlobStore]:
    """Every store of the chain rooted at `store`, each once: depth first, in `wrapped()` order."""
    seen: set[int] = set()
    todo: list[BlobStore] = [store]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, StoreWrapper):
            todo.extend(reversed(current.wrapped()))


def find_capability(store: BlobStore, capability: type[T]) -> T | None:
    """The first store of the chain (see `walk_chain`) that offers `capability`."""
    for current in walk_chain(store):
        if isinstance(current, capability):
            return current
    return None


class Timer:
    """Elapsed nanoseconds since creation, for trace stacks."""

    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start = time.perf_counter_ns()

    def elapsed(self) -> int:
        return time.perf_counter_ns() - self.start
