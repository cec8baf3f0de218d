"""A read-only store over another reflector's HTTP blob server (reflector.go's HttpStore).

`GET /blob?hash=<h>[&edge_token=<t>]`; the upstream's `Via` trace is parsed and this hop
is appended to it, so traces span hosts. Every blob is checked against its hash before
it is handed on.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote, urlsplit

from prism.blob import MAX_BLOB_SIZE, validate_hash
from prism.http.client import HttpClient, HttpClientError, Response
from prism.memory import MALLOC_TRIM, RecycledBuffers
from prism.store.base import BlobNotFound, BlobRef, ReadOnlyStore, StoreError, Timer
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace, TraceError
from prism.store.upstream import verify_received

log = logging.getLogger("prism.store")

RECYCLED_BODIES = 96
"""Blob-sized receive buffers kept for reuse (192 MiB at most), dropped after `BODIES_IDLE` seconds unused."""

BODIES_IDLE = 10.0


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
        validate_hash(blob_hash)
        timer = Timer()
        r = await self._request("GET", self._target(blob_hash, token=True), MAX_BLOB_SIZE)
        if r.status == 404:
            raise BlobNotFound(blob_hash)
        if r.status != 200:
            text = bytes(r.body[:500]).decode("utf-8", "replace")
            raise StoreError(f"upstream error. Status code: {r.status} ({text.strip() or r.reason})")
        data = r.body
        via = r.head.get("via")
        del r
        await verify_received(blob_hash, data, f"upstream {self.base}")
        trace = BlobTrace()
        if via:
            try:
                trace = BlobTrace.from_json(via)
            except TraceError:
                log.debug("upstream %s sent a Via header that is not a trace: %.80s", self.base, via)
        self.bytes_in += len(data)
        # Handed on as bytes without a copy: nothing writes to it until every holder dropped it.
        return BlobRef.from_bytes(blob_hash, data, trace.stack(timer.elapsed(), self.name))  # type: ignore[arg-type]

    async def close(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if self._http is not None:
            await self._http.close()
            self._http = None
