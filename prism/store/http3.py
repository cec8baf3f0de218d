"""A read-only store over another reflector's HTTP/3 server (reflector.go's http3.Store).

Unlike reflector.go, which opens a new QUIC connection per call, this keeps one
connection open and multiplexes requests over it (reconnecting when it drops).
"""

from __future__ import annotations

import logging

from prism.blob import validate_hash
from prism.http.h3client import Http3Client
from prism.http.tls import DEFAULT_DATAGRAM_SIZE
from prism.store.base import BlobNotFound, BlobRef, ReadOnlyStore, StoreError, Timer
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace, TraceError
from prism.store.upstream import verify_received

log = logging.getLogger("prism.store")


class Http3Store(ReadOnlyStore):
    """Blobs from `https://<address>/get/<hash>?trace=true` over one QUIC connection."""

    def __init__(
        self,
        address: str,
        timeout: float = 30.0,
        name: str = "http3",
        max_datagram_size: int = DEFAULT_DATAGRAM_SIZE,
    ) -> None:
        self.name = name
        self.address = address
        self.client = Http3Client(address, timeout, max_datagram_size)
        self.bytes_in = 0
        """Blob bytes received from upstream (reflector_*_in_bytes)."""

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, bytes_in=self.bytes_in)

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        try:
            r = await self.client.get(f"/has/{blob_hash}")
        except (ConnectionError, TimeoutError, OSError) as e:
            raise StoreError(f"http3 upstream {self.address}: {e or type(e).__name__}") from e
        if r.status == 200:
            return True
        if r.status == 404:
            return False
        raise StoreError(f"http3 upstream error. Status code: {r.status} ({r.body[:200]!r})")

    async def get(self, blob_hash: str) -> BlobRef:
        validate_hash(blob_hash)
        timer = Timer()
        try:
            r = await self.client.get(f"/get/{blob_hash}?trace=true")
        except (ConnectionError, TimeoutError, OSError) as e:
            raise StoreError(f"http3 upstream {self.address}: {e or type(e).__name__}") from e
        if r.status == 404:
            raise BlobNotFound(blob_hash)
        if r.status != 200:
            text = r.body[:300].decode("utf-8", "replace")
            raise StoreError(f"http3 upstream error. Status code: {r.status} ({text})")
        await verify_received(blob_hash, r.body, f"http3 upstream {self.address}")
        trace = BlobTrace()
        via = r.headers.get("via")
        if via:
            try:
                trace = BlobTrace.from_json(via)
            except TraceError:
                log.debug("http3 upstream %s sent a Via header that is not a trace", self.address)
        self.bytes_in += len(r.body)
        return BlobRef.from_bytes(blob_hash, r.body, trace.stack(timer.elapsed(), self.name))

    async def close(self) -> None:
        await self.client.close()
