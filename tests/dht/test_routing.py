from __future__ import annotations

import heapq
import os
import random

from prism.dht.routing import (
    BAD_FAILURES,
    ID_BITS,
    MAX_FAILURES,
    AddressPolicy,
    Contact,
    RoutingTable,
    distance,
    is_public_ipv4,
)


def near(own: bytes, bit: int) -> bytes:
    """An id whose XOR distance from own has its highest set bit at `bit` (random below)."""
    d = (1 << bit) | random.getrandbits(bit) if bit else 1
    return (int.from_bytes(own, "big") ^ d).to_bytes(48, "big")


def at(own: bytes, bit: int, n: int) -> bytes:
    """The id at XOR distance `(1 << bit) | n` from own: distinct for distinct `n < 2**bit`."""
    return (int.from_bytes(own, "big") ^ ((1 << bit) | n)).to_bytes(48, "big")


def c(node_id: bytes, n: int) -> Contact:
    return Contact(node_id, f"10.0.{n // 250}.{n % 250 + 1}", 4444)


def test_first_bucket_splits_when_it_covers_our_id():
    own = os.urandom(48)
    rt = RoutingTable(own)
    for n in range(8):
        assert rt.add(c(near(own, ID_BITS - 1), n), 0.0)  # all in the far half
    assert len(rt.buckets) == 1
    assert rt.add(c(at(own, 10, 99), 99), 0.0)  # bucket covers distance 0 -> splits
    assert len(rt.buckets) > 1 and len(rt) == 9
    assert all(len(b.contacts) <= 8 for b in rt.buckets)
    for n in range(7):
        assert rt.add(c(at(own, 10, 100 + n), 100 + n), 0.0)  # now our 8 closest are all near
    # a full far bucket does not split for a contact that is not closer than our k-th closest
    far = rt.bucket_of(near(own, ID_BITS - 1))
    assert far.lo != 0 and len(far.contacts) == 8
    assert not rt.add(c(near(own, ID_BITS - 1), 200), 0.0)
    assert len(rt) == 16


def test_buckets_cover_the_range_without_gaps():
    own = os.urandom(48)
    rt = RoutingTable(own)
    for n in range(500):
        rt.add(c(os.urandom(48), n), 0.0)
    assert rt.buckets[0].lo == 0 and rt.buckets[-1].hi == 1 << ID_BITS
    for a, b in zip(rt.buckets, rt.buckets[1:], strict=False):
        assert a.hi == b.lo
    for b in rt.buckets:
        for x in b.contacts:
            assert b.lo <= distance(x.node_id, own) < b.hi


def test_failures_evict_and_bad_contacts_are_not_handed_out():
    own = os.urandom(48)
    rt = RoutingTable(own)
    x = c(os.urandom(48), 1)
    rt.add(x, 0.0)
    for _ in range(BAD_FAILURES):
        rt.fail(x.node_id)
    assert x.node_id in rt and rt.closest(os.urandom(48)) == []
    rt.add(c(x.node_id, 1), 1.0)  # it answered again: good again
    assert x.failures == 0 and rt.closest(os.urandom(48)) == [x]
    for _ in range(MAX_FAILURES):
        rt.fail(x.node_id)
    assert x.node_id not in rt and len(rt) == 0


def test_full_bucket_evicts_a_failing_contact_for_a_newcomer():
    own = os.urandom(48)
    rt = RoutingTable(own)
    for n in range(8):
        # Eight distinct ids (near(own, 5) has only 32 values, so random ones could coincide).
        rt.add(c(at(own, 5, n), n), 0.0)  # these 8 are our closest
    far = [c(near(own, ID_BITS - 1), 100 + n) for n in range(8)]
    rt.add(c(near(own, ID_BITS - 2), 50), 0.0)  # forces splits
    for x in far:
        rt.add(x, 0.0)
    bucket = rt.bucket_of(far[0].node_id)
    assert len(bucket.contacts) == 8
    newcomer = c(near(own, ID_BITS - 1), 300)
    assert not rt.add(newcomer, 1.0)
    victim = bucket.contacts[2]
    victim.failures = MAX_FAILURES  # counted, not yet removed (e.g. loaded state)
    assert rt.add(newcomer, 2.0)
    assert victim.node_id not in rt and newcomer.node_id in rt


def test_same_address_new_id_replaces_old_entry_and_refresh_moves_to_back():
    own = os.urandom(48)
    rt = RoutingTable(own)
    a, b = c(os.urandom(48), 1), c(os.urandom(48), 2)
    rt.add(a, 0.0)
    rt.add(b, 0.0)
    rt.add(c(a.node_id, 1), 1.0)
    assert rt.buckets[0].contacts[-1] is a
    a2 = Contact(os.urandom(48), a.ip, a.port)
    rt.add(a2, 2.0)
    assert a.node_id not in rt and a2.node_id in rt and len(rt) == 2


def test_closest_orders_by_xor_and_excludes():
    own = os.urandom(48)
    rt = RoutingTable(own)
    cs = [c(os.urandom(48), n) for n in range(200)]
    for x in cs:
        rt.add(x, 0.0)
    target = os.urandom(48)
    got = rt.closest(target, 8, exclude=None)
    inside = sorted(rt.contacts(), key=lambda x: distance(x.node_id, target))
    assert got == inside[:8]
    assert inside[0] not in rt.closest(target, 8, exclude=inside[0].node_id)


def test_refresh_ids_fall_in_their_bucket():
    own = os.urandom(48)
    rt = RoutingTable(own, now=0.0)
    for n in range(300):
        rt.add(c(os.urandom(48), n), 0.0)
    rng = random.Random(1)
    for idx, b in enumerate(rt.buckets):
        rid = rt.random_id_in_bucket(idx, rng)
        assert b.lo <= distance(rid, own) < b.hi
    assert rt.stale_buckets(3600.0, 3600.0) == list(range(len(rt.buckets)))
    rt.mark_refreshed(0, 3600.0)
    assert 0 not in rt.stale_buckets(3600.0, 3600.0)


def test_address_policy():
    assert is_public_ipv4("8.8.8.8")
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.1.1", "100.64.0.1", "0.0.0.0",
               "224.0.0.1", "240.0.0.1", "192.88.99.1", "nonsense"):  # fmt: skip
        assert not is_public_ipv4(ip), ip
    strict, loose = AddressPolicy(False), AddressPolicy(True)
    assert not strict.addr_ok("127.0.0.1", 5000) and loose.addr_ok("127.0.0.1", 5000)
    assert not strict.addr_ok("8.8.8.8", 80) and strict.addr_ok("8.8.8.8", 4444)


def test_kth_closest_distance_follows_adds_and_removes():
    rng = random.Random(7)
    own = rng.randbytes(48)
    rt = RoutingTable(own)
    ids: list[bytes] = []
    for step in range(400):
        if ids and rng.random() < 0.3:
            rt.remove(ids.pop(rng.randrange(len(ids))))
        else:
            c = Contact(rng.randbytes(48), f"10.9.{step // 250}.{step % 250 + 1}", 4444)
            if rt.add(c, 0.0):
                ids.append(c.node_id)
        probe = rng.getrandbits(384)
        dists = [int.from_bytes(i, "big") ^ int.from_bytes(own, "big") for i in rt._by_id]
        expected = len(dists) < rt.k or probe < heapq.nsmallest(rt.k, dists)[-1]
        assert rt._closer_than_kth(probe) == expected
