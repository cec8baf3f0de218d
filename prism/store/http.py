"""A read-only store over another reflector's HTTP blob server (reflector.go's HttpStore).

`GET /blob?hash=<h>[&edge_token=<t>]`; the upstream's `Via` trace is parsed and this hop
is appended to it, so traces span hosts. Every blob is checked against its hash before
it is handed on.
"""

from __future__ import annotations

import logging

import aiohttp

from prism.blob import MAX_BLOB_SIZE, validate_hash
from prism.store.base import BlobNotFound, BlobRef, ReadOnlyStore, StoreError, Timer
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace, TraceError
from prism.store.upstream import read_body, verify_received

log = logging.getLogger("prism.store")


class HttpStore(ReadOnlyStore):
    """Blobs from `http://<upstream>/blob?hash=...` over pooled keep-alive connections."""

    def __init__(
        self, upstream: str, edge_token: str = "", timeout: float = 30.0, name: str = "http"
    ) -> None:
        self.name = name
        self.base = upstream.rstrip("/") if "://" in upstream else f"http://{upstream}"
        self.edge_token = edge_token
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.bytes_in = 0
        """Blob bytes received from upstream (reflector_*_in_bytes)."""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=100, limit_per_host=100, keepalive_timeout=90)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,
                read_bufsize=MAX_BLOB_SIZE + 10 * 1024,
                headers={"User-Agent": "prism"},
            )
        return self._session

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, bytes_in=self.bytes_in)

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        try:
            async with self._client().head(f"{self.base}/blob", params={"hash": blob_hash}) as r:
                if r.status == 204:
                    return True
                if r.status == 404:
                    return False
                raise StoreError(f"upstream error. Status code: {r.status} ({r.reason})")
        except aiohttp.ClientError as e:
            raise StoreError(f"upstream {self.base}: {e}") from e

    async def get(self, blob_hash: str) -> BlobRef:
        validate_hash(blob_hash)
        timer = Timer()
        params = {"hash": blob_hash}
        if self.edge_token:
            params["edge_token"] = self.edge_token
        try:
            async with self._client().get(f"{self.base}/blob", params=params) as r:
                if r.status == 404:
                    raise BlobNotFound(blob_hash)
                if r.status != 200:
                    text = (await r.content.read(500)).decode("utf-8", "replace")
                    raise StoreError(f"upstream error. Status code: {r.status} ({text.strip() or r.reason})")
                data = await read_body(r.content, r.content_length, MAX_BLOB_SIZE, f"upstream {self.base}")
                via = r.headers.get("Via", "")
        except aiohttp.ClientError as e:
            raise StoreError(f"upstream {self.base}: {e}") from e
        await verify_received(blob_hash, data, f"upstream {self.base}")
        trace = BlobTrace()
        if via:
            try:
                trace = BlobTrace.from_json(via)
            except TraceError:
                log.debug("upstream %s sent a Via header that is not a trace: %.80s", self.base, via)
        self.bytes_in += len(data)
        return BlobRef.from_bytes(blob_hash, data, trace.stack(timer.elapsed(), self.name))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
