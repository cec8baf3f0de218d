"""Test doubles shared across the suite: blobs, instrumented stores, waiting without sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

from prism.blob import sha384_hex
from prism.store import BlobRef, BlobStore, MemoryStore, StoreError


def make_blob(i: int, size: int = 1000) -> tuple[str, bytes]:
    """A blob of `size` bytes that depends only on `i`: (hash, bytes)."""
    data = (i.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return sha384_hex(data), data


def random_blob(size: int = 100_000) -> tuple[str, bytes]:
    """A blob of `size` random bytes: (hash, bytes)."""
    data = os.urandom(size)
    return sha384_hex(data), data


def random_blobs(count: int, size: int = 2 * 1024 * 1024) -> dict[str, bytes]:
    """`count` random blobs of `size` bytes, by hash."""
    return dict(random_blob(size) for _ in range(count))


class CountingStore(MemoryStore):
    """A real MemoryStore that counts calls.

    With `held=True` its gets wait until `release` is set; `get_delay` / `put_delay` slow calls down
    for tests against real sockets and processes, where a slow store is the point.
    """

    def __init__(
        self, name: str = "mem", *, held: bool = False, get_delay: float = 0.0, put_delay: float = 0.0
    ) -> None:
        super().__init__(name)
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.get_delay = get_delay
        self.put_delay = put_delay
        self.parked = 0  # gets waiting for `release`
        self._arrived = asyncio.Event()
        self.stored = asyncio.Event()  # set by every put
        self.gets = 0
        self.puts = 0
        self.put_counts: Counter[str] = Counter()
        self.hass = 0
        self.deletes = 0

    async def has(self, blob_hash: str) -> bool:
        self.hass += 1
        return await super().has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        self.gets += 1
        if not self.release.is_set():
            self.parked += 1
            self._arrived.set()
            try:
                await self.release.wait()
            finally:
                self.parked -= 1
        if self.get_delay:
            await asyncio.sleep(self.get_delay)
        return await super().get(blob_hash)

    async def until_parked(self, n: int = 1) -> None:
        """Wait until `n` gets are waiting for `release`."""
        while self.parked < n:
            self._arrived.clear()
            await self._arrived.wait()

    async def put(self, blob_hash: str, data: bytes) -> None:
        if self.put_delay:
            await asyncio.sleep(self.put_delay)
        self.puts += 1
        self.put_counts[blob_hash] += 1
        await super().put(blob_hash, data)
        self.stored.set()

    async def delete(self, blob_hash: str) -> None:
        self.deletes += 1
        await super().delete(blob_hash)


class BrokenStore(CountingStore):
    """A store whose selected operations fail with StoreError (a dead disk, a 500 upstream)."""

    def __init__(self, name: str = "broken", fail: tuple[str, ...] = ("has", "get", "put", "delete")) -> None:
        super().__init__(name)
        self.fail = fail

    def _check(self, op: str) -> None:
        if op in self.fail:
            raise StoreError(f"{self.name}: {op} failed")

    async def has(self, blob_hash: str) -> bool:
        self._check("has")
        return await super().has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        self._check("get")
        return await super().get(blob_hash)

    async def put(self, blob_hash: str, data: bytes) -> None:
        self._check("put")
        await super().put(blob_hash, data)

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        self._check("put")
        await super().put(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        self._check("delete")
        await super().delete(blob_hash)


class FailingStore(MemoryStore):
    """A store whose reads fail with an OSError, as a broken disk's do."""

    async def get(self, blob_hash: str) -> BlobRef:
        raise OSError("disk on fire")

    async def has(self, blob_hash: str) -> bool:
        raise OSError("disk on fire")


async def until(condition: Callable[[], bool], turns: int = 100) -> None:
    """Let other tasks run (no time passes) until `condition()` holds."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


class ManualSleep:
    """Stands in for `asyncio.sleep` in a periodic loop: each call waits until the test releases it.

    `await calls.get()` tells the test the loop is waiting again (so whatever the loop does between
    two sleeps has finished); `release()` lets one sleep return.
    """

    def __init__(self) -> None:
        self.calls: asyncio.Queue[float] = asyncio.Queue()
        self._releases: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.calls.put_nowait(seconds)
        await self._releases.get()

    def release(self) -> None:
        self._releases.put_nowait(None)


async def eventually(condition: Callable[[], bool], limit: float = 5.0, what: str = "condition") -> None:
    """Wait until `condition()` holds (checked every few ms), failing after `limit` seconds.

    For state another task or process changes without an event to wait on; never a fixed sleep.
    """
    try:
        async with asyncio.timeout(limit):
            while not condition():  # noqa: ASYNC110 - no event exists for such state
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {limit} s") from None


class Component(Protocol):
    """What every prism server is: started, then stopped with a grace period."""

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


C = TypeVar("C", bound=Component)


@contextlib.asynccontextmanager
async def running(component: C, grace: float = 1.0) -> AsyncIterator[C]:
    """Start `component` (a server on port 0, say) for the body of a `with`, and stop it after."""
    await component.start()
    try:
        yield component
    finally:
        await component.stop(grace)


class TricklingUpstream:
    """A stand-in HTTP/1.1 blob upstream that sends each body in two halves, the second only once
    `gate` is set: tests see what a downstream does while a blob is still arriving.

    `blobs` maps hash to the bytes announced (Content-Length); `sent` maps a hash to other bytes
    of the same length to send instead (a corrupt upstream); a hash in `cut` gets its connection
    closed after the first half. `requests` counts GETs per hash.
    """

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.sent: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.gate = asyncio.Event()
        self.requests: Counter[str] = Counter()
        self.halves_out = asyncio.Event()
        """Set once a first half went out."""
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.gate.set()
            for writer in self._writers:
                writer.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ")[1].decode()
                h = target.split("hash=")[1].split("&")[0]
                self.requests[h] += 1
                if h not in self.blobs:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                body = self.sent.get(h, self.blobs[h])
                half = len(body) // 2
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.blobs[h])}\r\n\r\n".encode())
                writer.write(body[:half])
                await writer.drain()
                self.halves_out.set()
                if h in self.cut:
                    writer.close()
                    return
                await self.gate.wait()
                writer.write(body[half:])
                await writer.drain()
        writer.close()


def blobcache_over(upstream: TricklingUpstream) -> tuple[BlobStore, CountingStore]:
    """The store chain `prism reflector --upstream-protocol http` builds with a cache (a memory one
    here) over `upstream`, as a server sees it: (outer store, cache). `close()` it."""
    from prism.store.caching import CachingStore
    from prism.store.http import HttpStore
    from prism.store.singleflight import SingleFlightStore

    cache = CountingStore("cache")
    chain = CachingStore(SingleFlightStore(HttpStore(f"127.0.0.1:{upstream.port}")), cache, verify=False)
    return SingleFlightStore(chain), cache
