"""DHT node tunables; defaults follow lbry-sdk and reflector.go (lbry-wire.md §5.6, reflector.md §4.6)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_UDP_PORT = 4444
DEFAULT_CLI_PORT = 4567
DEFAULT_PEER_PORT = 3333

DEFAULT_ANNOUNCE_RATE = 10.0
DEFAULT_ANNOUNCE_CONCURRENCY = 16

DEFAULT_SEEDS: tuple[tuple[str, int], ...] = (
    ("dht.lbry.grin.io", 4444),
    ("dht.lbry.madiator.com", 4444),
    ("dht.lbry.pigg.es", 4444),
    ("lbrynet1.lbry.com", 4444),
    ("lbrynet2.lbry.com", 4444),
    ("lbrynet3.lbry.com", 4444),
    ("lbrynet4.lbry.com", 4444),
    ("dht.lizard.technology", 4444),
    ("s2.lbry.network", 4444),
)
"""lbry-sdk's known_dht_nodes (lbry-wire.md §5.6)."""


@dataclass(slots=True)
class DhtConfig:
    k: int = 8
    alpha: int = 5
    rpc_timeout: float = 5.0
    token_rotation: float = 300.0
    """Seconds between rotations of the token secret (tokens stay valid for one more period)."""
    token_cache_ttl: float = 300.0
    """How long a token received from another node is reused for stores to it."""
    data_expiration: float = 86400.0
    maybe_ping_delay: float = 60.0
    """Delay before pinging an unknown node that sent us a request (it is added if it answers)."""
    max_pending: int = 2048
    """Outgoing requests awaiting an answer, at most."""
    max_maybe_ping: int = 256
    max_peers_per_key: int = 128
    max_peers_total: int = 200_000
    housekeeping_interval: float = 60.0
    allow_private_peers: bool = False
    refresh_interval: float = 720.0
    """How often stale buckets are looked at (reflector.go: every 12 min)."""
    refresh_age: float = 3600.0
    """A bucket not updated for this long gets a lookup for a random id in its range."""
    join_retry: float = 5.0
    announce_rate: float = DEFAULT_ANNOUNCE_RATE
    """Hashes announced per second, at most (burst of the same size)."""
    announce_concurrency: int = DEFAULT_ANNOUNCE_CONCURRENCY
    """Announcements (each a lookup and k stores) running at once, at most."""
    reannounce_interval: float = 43200.0
    """Each announced hash is announced again this many seconds later (before the 24 h expiry)."""
    lookup_timeout: float = 60.0
