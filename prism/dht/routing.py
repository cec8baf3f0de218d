"""Contacts and the Kademlia routing table (k-buckets over XOR distance from our own id)."""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import random

from prism.dht.messages import NODE_ID_LENGTH, encode_contact_triple

ID_BITS = NODE_ID_LENGTH * 8
K = 8
MAX_FAILURES = 3
"""Failed requests after which a contact is evicted (reflector.go's threshold)."""
BAD_FAILURES = 2
"""Failed requests (without a reply since) after which a contact is no longer handed out."""


def id_int(node_id: bytes) -> int:
    return int.from_bytes(node_id, "big")


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two ids read as big-endian integers."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


class Contact:
    """A DHT node: id, IPv4 and UDP port, plus liveness bookkeeping."""

    __slots__ = (
        "encoded",
        "failures",
        "int_id",
        "ip",
        "last_replied",
        "last_seen",
        "node_id",
        "port",
        "protocol_version",
    )

    def __init__(self, node_id: bytes, ip: str, port: int) -> None:
        if len(node_id) != NODE_ID_LENGTH:
            raise ValueError("node id must be 48 bytes")
        self.node_id = node_id
        self.ip = ip
        self.port = port
        self.int_id = int.from_bytes(node_id, "big")
        self.encoded = encode_contact_triple(node_id, ip, port)
        self.failures = 0
        self.last_replied = 0.0
        self.last_seen = 0.0
        self.protocol_version: int | None = None

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)

    def __repr__(self) -> str:
        return f"Contact({self.node_id.hex()[:12]}…, {self.ip}:{self.port})"


_SPECIAL_NETS = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("192.88.99.0/24"))


def is_public_ipv4(ip: str) -> bool:
    """True for a globally routable IPv4 address as lbry-sdk judges it (lbry-wire.md §5.5)."""
    try:
        a = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    if (
        a.is_private
        or a.is_loopback
        or a.is_link_local
        or a.is_multicast
        or a.is_reserved
        or a.is_unspecified
        or not a.is_global
    ):
        return False
    return not any(a in net for net in _SPECIAL_NETS)


class AddressPolicy:
    """Which peer addresses a node deals with: public IPv4 only, unless private peers are allowed."""

    __slots__ = ("_cache", "allow_private")

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._cache: dict[str, bool] = {}

    def ip_ok(self, ip: str) -> bool:
        ok = self._cache.get(ip)
        if ok is None:
            if self.allow_private:
                try:
                    ipaddress.IPv4Address(ip)
                    ok = True
                except ValueError:
                    ok = False
            else:
                ok = is_public_ipv4(ip)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[ip] = ok
        return ok

    def addr_ok(self, ip: str, port: int) -> bool:
        low = 1 if self.allow_private else 1024
        return low <= port <= 65535 and self.ip_ok(ip)


class KBucket:
    """Contacts whose distance from our id lies in [lo, hi), least recently seen first."""

    __slots__ = ("contacts", "hi", "last_updated", "lo")

    def __init__(self, lo: int, hi: int, last_updated: float) -> None:
        self.lo = lo
        self.hi = hi
        self.contacts: list[Contact] = []
        self.last_updated = last_updated


class RoutingTable:
    """k-buckets keyed by XOR distance; the first bucket covers the whole 384-bit range and splits on demand.

    Split rule (reflector.md §4.6, lbry-sdk's SPLIT_BUCKETS_UNDER_INDEX=1): a full bucket splits if it covers
    our own id (its range starts at distance 0) or if the newcomer is closer to us than our k-th closest
    contact. Otherwise the first contact with MAX_FAILURES failures is evicted for the newcomer, or the
    newcomer is dropped.
    """

    def __init__(self, own_id: bytes, k: int = K, now: float = 0.0) -> None:
        self.own_id = own_id
        self.own_int = id_int(own_id)
        self.k = k
        self.buckets: list[KBucket] = [KBucket(0, 1 << ID_BITS, now)]
        self._los: list[int] = [0]
        self._by_id: dict[bytes, Contact] = {}
        self._by_addr: dict[tuple[str, int], bytes] = {}
        self._kth: int | None = None
        """Distance of our k-th closest contact (None: to be computed again; the table changed)."""

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: bytes) -> Contact | None:
        return self._by_id.get(node_id)

    def id_at(self, addr: tuple[str, int]) -> bytes | None:
        return self._by_addr.get(addr)

    def contacts(self) -> list[Contact]:
        return [c for b in self.buckets for c in b.contacts]

    def _bucket_index(self, dist: int) -> int:
        return bisect.bisect_right(self._los, dist) - 1

    def bucket_of(self, node_id: bytes) -> KBucket:
        return self.buckets[self._bucket_index(id_int(node_id) ^ self.own_int)]

    def add(self, contact: Contact, now: float) -> bool:
        """Insert or refresh a contact that has just replied to us. True if it is in the table afterwards."""
        if contact.node_id == self.own_id:
            return False
        existing = self._by_id.get(contact.node_id)
        if existing is not None:
            bucket = self.bucket_of(existing.node_id)
            if existing.addr != contact.addr:
                self._by_addr.pop(existing.addr, None)
                self._evict_addr(contact.addr)
                existing.ip, existing.port = contact.ip, contact.port
                existing.encoded = contact.encoded
                self._by_addr[existing.addr] = existing.node_id
            bucket.contacts.remove(existing)
            bucket.contacts.append(existing)
            existing.failures = 0
            existing.last_replied = existing.last_seen = now
            if contact.protocol_version is not None:
                existing.protocol_version = contact.protocol_version
            bucket.last_updated = now
            return True
        # an address now answering with another id replaces the old entry (lbry-sdk's rule)
        self._evict_addr(contact.addr)
        contact.failures = 0
        contact.last_replied = contact.last_seen = now
        dist = contact.int_id ^ self.own_int
        while True:
            idx = self._bucket_index(dist)
            bucket = self.buckets[idx]
            if len(bucket.contacts) < self.k:
                self._insert(bucket, contact, now)
                return True
            if bucket.hi - bucket.lo > 1 and (bucket.lo == 0 or self._closer_than_kth(dist)):
                self._split(idx)
                continue
            for old in bucket.contacts:
                if old.failures >= MAX_FAILURES:
                    self.remove(old.node_id)
                    self._insert(bucket, contact, now)
                    return True
            return False

    def _insert(self, bucket: KBucket, contact: Contact, now: float) -> None:
        self._kth = None
        bucket.contacts.append(contact)
        bucket.last_updated = now
        self._by_id[contact.node_id] = contact
        self._by_addr[contact.addr] = contact.node_id

    def _evict_addr(self, addr: tuple[str, int]) -> None:
        other = self._by_addr.get(addr)
        if other is not None:
            self.remove(other)

    def _closer_than_kth(self, dist: int) -> bool:
        if len(self._by_id) < self.k:
            return True
        if self._kth is None:  # cached: every answer from a node that does not fit asks this again
            self._kth = heapq.nsmallest(self.k, (c.int_id ^ self.own_int for c in self._by_id.values()))[-1]
        return dist < self._kth

    def _split(self, idx: int) -> None:
        bucket = self.buckets[idx]
        mid = (bucket.lo + bucket.hi) // 2
        low = KBucket(bucket.lo, mid, bucket.last_updated)
        high = KBucket(mid, bucket.hi, bucket.last_updated)
        for c in bucket.contacts:
            (low if (c.int_id ^ self.own_int) < mid else high).contacts.append(c)
        self.buckets[idx : idx + 1] = [low, high]
        self._los[idx : idx + 1] = [low.lo, high.lo]

    def remove(self, node_id: bytes) -> None:
        c = self._by_id.pop(node_id, None)
        if c is None:
            return
        self._kth = None
        if self._by_addr.get(c.addr) == node_id:
            del self._by_addr[c.addr]
        self.bucket_of(node_id).contacts.remove(c)

    def fail(self, node_id: bytes) -> None:
        """A request to this contact timed out; evict it after MAX_FAILURES."""
        c = self._by_id.get(node_id)
        if c is None:
            return
        c.failures += 1
        if c.failures >= MAX_FAILURES:
            self.remove(node_id)

    def closest(self, target: bytes, n: int | None = None, exclude: bytes | None = None) -> list[Contact]:
        """Up to n (default k) good contacts closest to target, nearest first."""
        t = id_int(target)
        n = self.k if n is None else n
        out: list[Contact] = []
        # one C-level sort of a few hundred contacts beats heapq.nsmallest with a Python key here
        for c in sorted(self._by_id.values(), key=lambda c: c.int_id ^ t):
            if c.failures < BAD_FAILURES and c.node_id != exclude:
                out.append(c)
                if len(out) == n:
                    break
        return out

    def stale_buckets(self, now: float, age: float) -> list[int]:
        return [i for i, b in enumerate(self.buckets) if now - b.last_updated >= age]

    def random_id_in_bucket(self, idx: int, rng: random.Random) -> bytes:
        b = self.buckets[idx]
        dist = rng.randrange(b.lo, b.hi)
        return (dist ^ self.own_int).to_bytes(NODE_ID_LENGTH, "big")

    def mark_refreshed(self, idx: int, now: float) -> None:
        if 0 <= idx < len(self.buckets):
            self.buckets[idx].last_updated = now
