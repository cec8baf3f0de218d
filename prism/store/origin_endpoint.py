"""A read-only HTTP(S) origin: URL = endpoint + hash (reflector.go's CloudFrontROStore),
with an optional fallback endpoint tried when the first fails (reflector.go's ITTT store).

Unlike reflector.go, a single `--origin-endpoint` works on its own.
"""

from __future__ import annotations

import logging

import aiohttp

from prism import __version__
from prism.blob import MAX_BLOB_SIZE, validate_hash
from prism.store.base import BlobNotFound, BlobRef, ReadOnlyStore, StoreError, Timer
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace
from prism.store.upstream import read_limited, verify_received

log = logging.getLogger("prism.store")


class OriginEndpointStore(ReadOnlyStore):
    """GET/HEAD `endpoint + hash`; 404 and 403 mean "not there"."""

    def __init__(
        self, endpoint: str, fallback: str = "", timeout: float = 30.0, name: str = "cloudfront_ro"
    ) -> None:
        for url in (endpoint, fallback):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"origin endpoint must be an http(s) URL, got {url!r}")
        self.name = name
        self.endpoints = [e for e in (endpoint, fallback) if e]
        if not self.endpoints:
            raise ValueError("an origin endpoint URL is required")
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        self.hits = [0] * len(self.endpoints)
        """Successful gets per endpoint (reflector_ittt_this_hit_total / _that_hit_total)."""
        self._session: aiohttp.ClientSession | None = None
        self.bytes_in = 0
        """Blob bytes received from upstream (reflector_*_in_bytes)."""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                auto_decompress=False,
                headers={"User-Agent": f"prism/{__version__}"},
            )
        return self._session

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, bytes_in=self.bytes_in, endpoint_hits=tuple(self.hits))

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        error: Exception | None = None
        for endpoint in self.endpoints:
            try:
                async with self._client().head(endpoint + blob_hash) as r:
                    if r.status == 200:
                        return True
                    if r.status not in (403, 404):
                        raise StoreError(f"{endpoint}: unexpected status {r.status}")
            except (aiohttp.ClientError, StoreError, TimeoutError) as e:
                error = e
        if error is not None:
            raise StoreError(str(error)) from error
        return False

    async def get(self, blob_hash: str) -> BlobRef:
        validate_hash(blob_hash)
        timer = Timer()
        error: Exception | None = None
        for i, endpoint in enumerate(self.endpoints):
            try:
                data = await self._fetch(endpoint, blob_hash)
            except (aiohttp.ClientError, StoreError, TimeoutError) as e:
                error = e
                continue
            self.hits[i] += 1
            self.bytes_in += len(data)
            return BlobRef.from_bytes(blob_hash, data, BlobTrace.new(timer.elapsed(), self.name))
        if isinstance(error, BlobNotFound):
            raise error
        raise StoreError(f"origin endpoint: {error}") from error

    async def _fetch(self, endpoint: str, blob_hash: str) -> bytes:
        async with self._client().get(endpoint + blob_hash) as r:
            if r.status in (403, 404):
                raise BlobNotFound(blob_hash)
            if r.status != 200:
                raise StoreError(f"{endpoint}: unexpected status {r.status}")
            data = await read_limited(r.content, MAX_BLOB_SIZE, endpoint)
        await verify_received(blob_hash, data, endpoint)
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
