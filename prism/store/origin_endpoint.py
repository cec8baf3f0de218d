"""A read-only HTTP(S) origin: URL = endpoint + hash (reflector.go's CloudFrontROStore),
with an optional fallback endpoint tried when the first fails (reflector.go's ITTT store,
`FallbackStore`).

Unlike reflector.go, a single `--origin-endpoint` works on its own.
"""

from __future__ import annotations

import logging

import aiohttp

from prism import __version__
from prism.blob import MAX_BLOB_SIZE, validate_hash
from prism.store.base import BlobNotFound, BlobRef, BlobStore, ReadOnlyStore, StoreError, Timer
from prism.store.fallback import FallbackStore
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace
from prism.store.upstream import read_limited, verify_received

log = logging.getLogger("prism.store")


class OriginEndpointStore(ReadOnlyStore):
    """GET/HEAD `endpoint + hash`; 404 and 403 mean "not there". With a fallback, the two
    endpoints are read through a `FallbackStore` (the first, then the second on any error)."""

    def __init__(
        self, endpoint: str, fallback: str = "", timeout: float = 30.0, name: str = "cloudfront_ro"
    ) -> None:
        for url in (endpoint, fallback):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"origin endpoint must be an http(s) URL, got {url!r}")
        if not endpoint:
            raise ValueError("an origin endpoint URL is required")
        self.name = name
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.bytes_in = 0
        """Blob bytes received from upstream (reflector_*_in_bytes)."""
        self._first = _Endpoint(self, endpoint)
        self._fallback = FallbackStore(self._first, _Endpoint(self, fallback)) if fallback else None
        self._reader: BlobStore = self._fallback or self._first

    @property
    def hits(self) -> list[int]:
        """Successful gets per endpoint (reflector_ittt_this_hit_total / _that_hit_total)."""
        if self._fallback is None:
            return [self._first.hits]
        return [self._fallback.first_hits, self._fallback.second_hits]

    def client(self) -> aiohttp.ClientSession:
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
        return await self._reader.has(blob_hash)

    async def get(self, blob_hash: str) -> BlobRef:
        validate_hash(blob_hash)
        ref = await self._reader.get(blob_hash)
        self.bytes_in += ref.size
        return ref

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Endpoint(ReadOnlyStore):
    """One URL prefix of an origin endpoint store, sharing its owner's HTTP session."""

    def __init__(self, owner: OriginEndpointStore, endpoint: str) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.name = owner.name
        self.hits = 0

    async def has(self, blob_hash: str) -> bool:
        try:
            async with self.owner.client().head(self.endpoint + blob_hash) as r:
                if r.status == 200:
                    return True
                if r.status not in (403, 404):
                    raise StoreError(f"{self.endpoint}: unexpected status {r.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StoreError(f"origin endpoint: {e}") from e
        return False

    async def get(self, blob_hash: str) -> BlobRef:
        timer = Timer()
        try:
            data = await self._fetch(blob_hash)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StoreError(f"origin endpoint: {e}") from e
        self.hits += 1
        return BlobRef.from_bytes(blob_hash, data, BlobTrace.new(timer.elapsed(), self.name))

    async def _fetch(self, blob_hash: str) -> bytes:
        async with self.owner.client().get(self.endpoint + blob_hash) as r:
            if r.status in (403, 404):
                raise BlobNotFound(blob_hash)
            if r.status != 200:
                raise StoreError(f"{self.endpoint}: unexpected status {r.status}")
            data = await read_limited(r.content, MAX_BLOB_SIZE, self.endpoint)
        await verify_received(blob_hash, data, self.endpoint)
        return data

    async def close(self) -> None:
        pass
