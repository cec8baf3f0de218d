"""The library API on real UDP sockets: start/stop, announce(hashes), find_peers(hash), announcer rate."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from prism.blob import InvalidHashError
from prism.dht import DhtConfig, DhtNode, RpcTimeout
from prism.dht.persist import load_state, save_state
from prism.dht.routing import Contact
from tests.helpers import eventually


def cfg(**kw) -> DhtConfig:
    base = dict(allow_private_peers=True, rpc_timeout=0.5, maybe_ping_delay=0.01)
    base.update(kw)
    return DhtConfig(**base)


async def small_network(n: int, **kw) -> list[DhtNode]:
    seed = DhtNode(host="127.0.0.1", port=0, config=cfg(**kw))
    await seed.start()
    nodes = [seed]
    for i in range(n - 1):
        node = DhtNode(host="127.0.0.1", port=0, peer_port=7000 + i, seeds=[seed.address], config=cfg(**kw))
        await node.start()
        await node.joined.wait()
        nodes.append(node)
        # The seed pings the newcomer back before the next one joins.
        await eventually(
            lambda node=node: node.node_id in seed.core.routing, what="the seed knowing the newcomer"
        )
    return nodes


async def test_announce_and_find_peers_by_hex_hash():
    nodes = await small_network(6)
    try:
        blob = os.urandom(48).hex()
        nodes[2].announce([blob])
        async with asyncio.timeout(10):
            await nodes[2].announcer.wait_rounds(bytes.fromhex(blob), 1)
        for n in nodes:
            if n is nodes[2]:
                continue
            peers = await n.find_peers(blob)
            assert [(p.ip, p.tcp_port, p.node_id) for p in peers] == [("127.0.0.1", 7001, nodes[2].node_id)]
        assert await nodes[0].find_peers(os.urandom(48).hex()) == []
        with pytest.raises(InvalidHashError):
            await nodes[0].find_peers("not-a-hash")
    finally:
        for n in nodes:
            await n.stop(grace=0.1)


async def test_find_peers_fetches_every_page():
    nodes = await small_network(3)
    try:
        key = os.urandom(48)
        holder = nodes[1]
        ids = {os.urandom(48) for _ in range(20)}
        for n, nid in enumerate(ids):
            holder.core.peers.add(key, nid, f"10.0.0.{n + 1}", 3333, holder._loop.time())
        peers = await nodes[2].find_peers(key)
        assert {p.node_id for p in peers} == ids
    finally:
        for n in nodes:
            await n.stop(grace=0.1)


async def test_announcer_is_rate_limited_and_reannounces():
    nodes = await small_network(3, announce_rate=10.0, reannounce_interval=0.6)
    try:
        keys = [os.urandom(48) for _ in range(15)]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        nodes[1].announce(keys)
        async with asyncio.timeout(10):
            for k in keys:
                await nodes[1].announcer.wait_rounds(k, 1)
        # burst of 10, then 10/s: 15 hashes take at least about half a second
        assert loop.time() - t0 >= 0.45
        async with asyncio.timeout(10):
            await nodes[1].announcer.wait_rounds(keys[0], 2)
        nodes[1].unannounce(keys)
        assert len(nodes[1].announcer) == 0
    finally:
        for n in nodes:
            await n.stop(grace=0.1)


async def test_private_peers_ignored_unless_allowed():
    strict = DhtNode(host="127.0.0.1", port=0, config=DhtConfig(rpc_timeout=0.3))
    loose = DhtNode(host="127.0.0.1", port=0, config=cfg(rpc_timeout=0.3))
    await strict.start()
    await loose.start()
    try:
        with pytest.raises(RpcTimeout):
            await loose.ping(strict.address)  # lbrynet does not answer loopback peers either
        assert strict.core.stats.refused_address == 1
        with pytest.raises(RpcTimeout):
            await strict.ping(loose.address)  # loose answers, strict drops the loopback answer
        assert strict.core.stats.refused_address >= 2 and len(strict.core.routing) == 0
    finally:
        await strict.stop()
        await loose.stop()


async def test_state_file_round_trip_and_bad_files(tmp_path):
    own = os.urandom(48)
    contacts = [Contact(os.urandom(48), "127.0.0.1", 4000 + i) for i in range(3)]
    path = tmp_path / "sub" / "rt.json"
    save_state(path, own, contacts)
    node_id, loaded = load_state(path)
    assert node_id == own and [(c.node_id, c.ip, c.port) for c in loaded] == [
        (c.node_id, c.ip, c.port) for c in contacts
    ]
    path.write_text("{not json")
    assert load_state(path) == (None, [])
    path.write_text(json.dumps({"node_id": "zz", "contacts": [{"id": "00"}, {"id": own.hex(), "ip": "1.2.3.4",
                                                                             "port": 5}]}))  # fmt: skip
    node_id, loaded = load_state(path)
    assert node_id is None and len(loaded) == 1
    assert load_state(tmp_path / "missing.json") == (None, [])


async def test_stop_saves_and_start_reloads(tmp_path):
    nodes = await small_network(3)
    state = tmp_path / "rt.json"
    node = DhtNode(host="127.0.0.1", port=0, seeds=[nodes[0].address], config=cfg(), state_path=state)
    try:
        await node.start()
        await node.joined.wait()
        first_id = node.node_id
        known = {c.node_id for c in node.core.routing.contacts()}
        await node.stop()
        again = DhtNode(host="127.0.0.1", port=0, config=cfg(), state_path=state)  # no seeds at all
        await again.start()
        async with asyncio.timeout(5):
            await again.joined.wait()
        assert again.node_id == first_id and known <= {c.node_id for c in again.core.routing.contacts()}
        await again.stop()
    finally:
        for n in nodes:
            await n.stop(grace=0.1)
