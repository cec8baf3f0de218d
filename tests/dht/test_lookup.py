"""The iterative lookup state machine on a simulated network (no sockets)."""

from __future__ import annotations

import random

from prism.dht.lookup import MAX_VALUE_PAGES, IterativeLookup, more_value_pages
from prism.dht.messages import FindValueResult
from prism.dht.routing import Contact, RoutingTable, distance


def build_network(n: int, seed: int) -> dict[bytes, RoutingTable]:
    rng = random.Random(seed)
    ids = [rng.randbytes(48) for _ in range(n)]
    contacts = {i: Contact(i, f"10.0.{k // 250}.{k % 250 + 1}", 4444) for k, i in enumerate(ids)}
    tables = {}
    for i in ids:
        rt = RoutingTable(i)
        # a real node knows its own neighbourhood (it looked up its own id when joining) plus others
        nearest = sorted((j for j in ids if j != i), key=lambda j: distance(i, j))[:8]
        for j in nearest + rng.sample(ids, 60):
            if j != i:
                rt.add(Contact(j, contacts[j].ip, contacts[j].port), 0.0)
        tables[i] = rt
    return tables


def run(lk: IterativeLookup, tables, dead=frozenset(), values=None):
    rounds = 0
    while not lk.done:
        probes = lk.next_probes()
        assert len(probes) <= lk.alpha
        if not probes and lk.in_flight == 0:
            break
        for c in probes:
            if c.node_id in dead:
                lk.on_failure(c)
                continue
            peers = (values or {}).get(c.node_id)
            lk.on_response(c, c, tables[c.node_id].closest(lk.target, 8, exclude=lk.own_id), peers)
        rounds += 1
        assert rounds < 200
    return lk


def test_find_node_converges_to_the_true_closest():
    tables = build_network(300, 1)
    ids = list(tables)
    start = ids[0]
    for t in range(5):
        target = random.Random(t).randbytes(48)
        lk = run(IterativeLookup(start, target, tables[start].closest(target, 8), k=8, alpha=5), tables)
        truth = sorted((i for i in ids if i != start), key=lambda i: distance(i, target))[:8]
        assert [c.node_id for c in lk.result()] == truth


def test_dead_nodes_are_skipped():
    tables = build_network(200, 2)
    ids = list(tables)
    start = ids[0]
    target = random.Random(9).randbytes(48)
    dead = frozenset(sorted(ids[1:], key=lambda i: distance(i, target))[:3])
    lk = run(IterativeLookup(start, target, tables[start].closest(target, 8)), tables, dead)
    alive = sorted((i for i in ids[1:] if i not in dead), key=lambda i: distance(i, target))[:8]
    assert [c.node_id for c in lk.result()] == alive


def test_find_value_stops_at_the_first_holder():
    tables = build_network(200, 3)
    ids = list(tables)
    start = ids[0]
    key = random.Random(5).randbytes(48)
    holder = sorted(ids[1:], key=lambda i: distance(i, key))[0]
    peer = ("1.2.3.4", 3333, b"P" * 48)
    lk = run(
        IterativeLookup(start, key, tables[start].closest(key, 8), find_value=True),
        tables,
        values={holder: [peer]},
    )
    assert lk.found and lk.peers == [peer] and lk.value_holders[0].node_id == holder


def test_empty_start_is_done_at_once():
    lk = IterativeLookup(b"\0" * 48, b"\1" * 48, [])
    assert lk.done and lk.next_probes() == [] and lk.result() == []


def test_more_value_pages_only_when_the_first_page_has_peers_and_at_most_sixteen():
    peer = ("1.2.3.4", 3333, b"P" * 48)
    assert more_value_pages(FindValueResult(None, [], [peer], 3, 1)) == range(1, 3)
    assert more_value_pages(FindValueResult(None, [], [peer], 1, 1)) == range(1, 1)
    assert more_value_pages(FindValueResult(None, [], [peer], 100, 1)) == range(1, MAX_VALUE_PAGES)
    assert list(more_value_pages(FindValueResult(None, [], [], 5, 1))) == []


def _ids_by_distance(target: bytes, n: int, seed: int) -> list[Contact]:
    rng = random.Random(seed)
    ids = sorted((rng.randbytes(48) for _ in range(n)), key=lambda i: distance(i, target))
    return [Contact(i, f"10.1.0.{k + 1}", 4444) for k, i in enumerate(ids)]


def test_done_once_the_k_closest_answered_without_waiting_for_farther_probes():
    target = b"\7" * 48
    near, far = _ids_by_distance(target, 6, 4)[:3], _ids_by_distance(target, 6, 4)[3:]
    lk = IterativeLookup(b"\0" * 48, target, far, k=3, alpha=5)
    assert {c.node_id for c in lk.next_probes()} == {c.node_id for c in far}
    lk.on_response(far[0], far[0], near)  # the other two far probes are still in flight
    assert {c.node_id for c in lk.next_probes()} == {c.node_id for c in near}
    for c in near[:2]:
        lk.on_response(c, c, [])
    assert not lk.done  # the third closest has not answered yet
    lk.on_response(near[2], near[2], [])
    assert lk.done and lk.in_flight == 2
    assert [c.node_id for c in lk.result()] == [c.node_id for c in near]


def test_bad_contacts_are_never_asked():
    target = b"\7" * 48
    contacts = _ids_by_distance(target, 6, 5)
    bad = {contacts[0].node_id}
    lk = IterativeLookup(b"\0" * 48, target, contacts[1:], k=3, alpha=5, bad=bad)
    lk.next_probes()
    lk.on_response(contacts[1], contacts[1], [contacts[0]])  # another node still lists the gone one
    assert contacts[0].node_id not in {c.node_id for c in lk.next_probes()}
