"""A read-only store over another reflector's HTTP blob server (reflector.go's HttpStore).

`GET /blob?hash=<h>[&edge_token=<t>]`; the upstream's `Via` trace is parsed and this hop
is appended to it, so traces span hosts. Every blob is checked against its hash before
it is handed on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from urllib.parse import quote, urlsplit

from prism.blob import HASH_INLINE_MAX, MAX_BLOB_SIZE, validate_hash
from prism.http.client import HttpClient, HttpClientError, Response
from prism.http.h1client import ResponseHead, ResponseReader
from prism.memory import MALLOC_TRIM, RecycledBuffers
from prism.store.arrival import BlobArrival
from prism.store.base import BlobNotFound, BlobRef, ReadOnlyStore, StoreError, Timer, arrived
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace, TraceError
from prism.store.upstream import ArrivalHasher, verify_received

log = logging.getLogger("prism.store")

RECYCLED_BODIES = 96
"""Blob-sized receive buffers kept for reuse (192 MiB at most), dropped after `BODIES_IDLE` seconds unused."""

BODIES_IDLE = 10.0


class _ArrivalFeed:
    """Turns a 200 answer's body into a `BlobArrival` from the receive that brings its head on,
    so hashing starts with the first bytes (a small body that is whole at once is checked as usual)."""

    __slots__ = ("blob_hash", "hasher", "on_verified", "source")

    def __init__(self, blob_hash: str, source: str, on_verified: Callable[[int], None]) -> None:
        self.blob_hash = blob_hash
        self.source = source
        self.on_verified = on_verified
        self.hasher: ArrivalHasher | None = None

    def received(self, reader: ResponseReader) -> None:
        hasher = self.hasher
        if hasher is None:
            assert reader.head is not None
            if reader.head.status != 200:
                return
            if not reader.receiving_in_place and not (reader.complete and len(reader.body) > HASH_INLINE_MAX):
                return
            arrival = BlobArrival(reader.body)
            # (No closure over self: a reference cycle would keep the buffer from being recycled.)
            counted = partial(self.on_verified, len(reader.body))
            hasher = self.hasher = ArrivalHasher(self.blob_hash, arrival, self.source, counted)
        hasher.received(reader.body_received)

    def follow(self, done: asyncio.Future[None]) -> None:
        """Fail the arrival if the body does not arrive whole."""
        hasher = self.hasher
        assert hasher is not None
        source = self.source

        def body_done(done: asyncio.Future[None]) -> None:
            error = done.exception()
            if error is not None:
                hasher.failed(StoreError(f"{source}: {error}"))

        done.add_done_callback(body_done)


class HttpStore(ReadOnlyStore):
    """Blobs from `http://<upstream>/blob?hash=...` over pooled keep-alive connections.

    Bodies are received into recycled blob-sized buffers (`RecycledBuffers`): a cache fill
    would otherwise touch 2 MiB of fresh memory per blob, which measured as the largest cost of
    a miss on a VM (docs/architecture.md, "cache fill").
    """

    def __init__(
        self, upstream: str, edge_token: str = "", timeout: float = 30.0, name: str = "http"
    ) -> None:
        self.name = name
        self.base = upstream.rstrip("/") if "://" in upstream else f"http://{upstream}"
        parts = urlsplit(self.base)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream {upstream!r}: want HOST:PORT or http://HOST:PORT")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.edge_token = edge_token
        self.timeout = timeout
        self._http: HttpClient | None = None
        self.bodies = RecycledBuffers(MAX_BLOB_SIZE, keep=RECYCLED_BODIES, idle_after=BODIES_IDLE)
        self._release: asyncio.TimerHandle | None = None
        self.bytes_in = 0
        """Blob bytes received from upstream (reflector_*_in_bytes)."""

    def _client(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                self._host,
                self._port,
                max_connections=100,
                timeout=self.timeout,
                headers=[("User-Agent", "prism")],
            )
        return self._http

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, bytes_in=self.bytes_in)

    def _target(self, blob_hash: str, token: bool) -> str:
        target = f"{self._prefix}/blob?hash={blob_hash}"
        if token and self.edge_token:
            target += f"&edge_token={quote(self.edge_token, safe='')}"
        return target

    async def _request(self, method: str, target: str, max_body: int) -> Response:
        try:
            return await self._client().request(method, target, max_body=max_body, alloc=self._body)
        except HttpClientError as e:
            raise StoreError(f"upstream {self.base}: {e}") from e

    def _body(self, length: int) -> bytearray:
        loop = asyncio.get_running_loop()
        buf = self.bodies.take(length, loop.time())
        if self._release is None and self.bodies.held:
            self._release = loop.call_later(BODIES_IDLE, self._release_idle)
        return buf

    def _release_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._release = None
        if self.bodies.release_idle(loop.time()):
            if MALLOC_TRIM is not None:
                MALLOC_TRIM()
        elif self.bodies.held:
            self._release = loop.call_later(BODIES_IDLE, self._release_idle)

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        r = await self._request("HEAD", self._target(blob_hash, token=False), 0)
        if r.status == 204:
            return True
        if r.status == 404:
            return False
        raise StoreError(f"upstream error. Status code: {r.status} ({r.reason})")

    async def get(self, blob_hash: str) -> BlobRef:
        return await arrived(await self.get_arriving(blob_hash))

    async def get_arriving(self, blob_hash: str) -> BlobRef:
        """The blob as soon as the upstream's answer head is in: its bytes are hashed as they arrive."""
        validate_hash(blob_hash)
        timer = Timer()
        feed = _ArrivalFeed(blob_hash, f"upstream {self.base}", self._count_in)
        try:
            incoming = await self._client().open(
                "GET",
                self._target(blob_hash, token=True),
                max_body=MAX_BLOB_SIZE,
                alloc=self._body,
                on_body=feed.received,
            )
        except HttpClientError as e:
            raise StoreError(f"upstream {self.base}: {e}") from e
        head = incoming.head
        if feed.hasher is not None:
            feed.follow(incoming.done)
            # Handed on as bytes without a copy: nothing writes to it until every holder dropped it.
            data: bytes = incoming.body  # type: ignore[assignment]
            return BlobRef(
                blob_hash, len(data), self._trace(head, timer), data=data, arrival=feed.hasher.arrival
            )
        try:
            r = await incoming.wait()
        except HttpClientError as e:
            raise StoreError(f"upstream {self.base}: {e}") from e
        if r.status == 404:
            raise BlobNotFound(blob_hash)
        if r.status != 200:
            text = bytes(r.body[:500]).decode("utf-8", "replace")
            raise StoreError(f"upstream error. Status code: {r.status} ({text.strip() or r.reason})")
        data = r.body  # type: ignore[assignment]
        del r, incoming
        await verify_received(blob_hash, data, f"upstream {self.base}")
        self._count_in(len(data))
        return BlobRef.from_bytes(blob_hash, data, self._trace(head, timer))

    def _count_in(self, size: int) -> None:
        self.bytes_in += size

    def _trace(self, head: ResponseHead, timer: Timer) -> BlobTrace:
        trace = BlobTrace()
        via = head.get("via")
        if via:
            try:
                trace = BlobTrace.from_json(via)
            except TraceError:
                log.debug("upstream %s sent a Via header that is not a trace: %.80s", self.base, via)
        return trace.stack(timer.elapsed(), self.name)

    async def close(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if self._http is not None:
            await self._http.close()
            self._http = None
