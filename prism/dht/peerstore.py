"""Announced peers per blob hash, keyed by the announcing node, expiring after 24 h."""

from __future__ import annotations

from dataclasses import dataclass

from prism.dht.messages import encode_compact_peer

DATA_EXPIRATION = 86400.0
MAX_PEERS_PER_KEY = 128
MAX_PEERS_TOTAL = 200_000


@dataclass(frozen=True, slots=True)
class Peer:
    """A holder of a blob: where to fetch it over the TCP peer protocol."""

    ip: str
    tcp_port: int
    node_id: bytes


class StoredPeer:
    __slots__ = ("compact", "expires", "ip", "node_id", "tcp_port")

    def __init__(self, node_id: bytes, ip: str, tcp_port: int, expires: float) -> None:
        self.node_id = node_id
        self.ip = ip
        self.tcp_port = tcp_port
        self.expires = expires
        self.compact = encode_compact_peer(ip, tcp_port, node_id)


class PeerStore:
    """hash -> {announcing node id -> StoredPeer}; bounded per key and in total."""

    def __init__(
        self,
        expiration: float = DATA_EXPIRATION,
        max_per_key: int = MAX_PEERS_PER_KEY,
        max_total: int = MAX_PEERS_TOTAL,
    ) -> None:
        self.expiration = expiration
        self.max_per_key = max_per_key
        self.max_total = max_total
        self._data: dict[bytes, dict[bytes, StoredPeer]] = {}
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def keys(self) -> list[bytes]:
        return list(self._data)

    def add(self, key: bytes, node_id: bytes, ip: str, tcp_port: int, now: float) -> bool:
        """Record (or refresh) an announcement. False if the store is full."""
        peers = self._data.get(key)
        if peers is None:
            if self._total >= self.max_total:
                return False
            peers = self._data[key] = {}
        old = peers.pop(node_id, None)
        if old is None:
            if self._total >= self.max_total:
                if not peers:
                    del self._data[key]
                return False
            if len(peers) >= self.max_per_key:
                oldest = min(peers.values(), key=lambda p: p.expires)
                del peers[oldest.node_id]
                self._total -= 1
            self._total += 1
        peers[node_id] = StoredPeer(node_id, ip, tcp_port, now + self.expiration)
        return True

    def get(self, key: bytes, now: float) -> list[StoredPeer]:
        """Live peers for key, oldest announcement first."""
        peers = self._data.get(key)
        if not peers:
            return []
        live = [p for p in peers.values() if p.expires > now]
        if len(live) != len(peers):
            self._drop_expired(key, now)
        return live

    def _drop_expired(self, key: bytes, now: float) -> None:
        peers = self._data[key]
        for node_id in [n for n, p in peers.items() if p.expires <= now]:
            del peers[node_id]
            self._total -= 1
        if not peers:
            del self._data[key]

    def expire(self, now: float) -> None:
        for key in list(self._data):
            self._drop_expired(key, now)
