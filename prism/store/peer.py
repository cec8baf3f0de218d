"""A read-only store backed by a remote peer (reflector.go's PeerStore), for the store chain."""

from __future__ import annotations

from prism.blob import validate_hash
from prism.hostport import AddressError, HostPort, parse_host_port
from prism.peer.client import DEFAULT_TIMEOUT, PeerClient, PeerError
from prism.store.base import BlobNotFound, BlobRef, ReadOnlyStore, StoreError, Timer
from prism.store.trace import BlobTrace


class PeerStoreError(StoreError):
    """The peer could not be asked or gave an unusable answer (the cause is chained)."""


def parse_address(address: str) -> HostPort:
    """`host:port` or `[v6]:port`; raises AddressError (a ValueError) naming the peer address."""
    try:
        return parse_host_port(address, what="peer address")
    except AddressError as e:
        raise AddressError(f"peer address {address!r} is not HOST:PORT") from e


class PeerStore(ReadOnlyStore):
    """Gets blobs from one peer over the peer protocol; every blob is hash-verified."""

    def __init__(
        self, address: str, timeout: float = DEFAULT_TIMEOUT, *, name: str = "peer", max_connections: int = 4
    ) -> None:
        self.name = name
        self.address = address
        host, port = parse_address(address)
        self.client = PeerClient(host, port, timeout, max_connections=max_connections)

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        try:
            return await self.client.has(blob_hash)
        except PeerError as e:
            raise PeerStoreError(str(e)) from e

    async def get(self, blob_hash: str) -> BlobRef:
        validate_hash(blob_hash)
        timer = Timer()
        try:
            data = await self.client.get(blob_hash)
        except BlobNotFound:
            raise
        except PeerError as e:
            raise PeerStoreError(str(e)) from e
        return BlobRef.from_bytes(blob_hash, data, BlobTrace.new(timer.elapsed(), self.name))

    async def close(self) -> None:
        await self.client.close()
