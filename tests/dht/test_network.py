"""A 50-node prism network on 127.0.0.1, in one process, bounded in time."""

from __future__ import annotations

import asyncio
import os

from prism.dht import DhtConfig, DhtNode
from prism.dht.routing import distance
from tests.helpers import eventually


def cfg(**kw) -> DhtConfig:
    base = dict(
        allow_private_peers=True,
        rpc_timeout=0.5,
        maybe_ping_delay=0.01,
        reannounce_interval=2.0,
        join_retry=0.5,
    )
    base.update(kw)
    return DhtConfig(**base)


async def test_fifty_nodes_find_an_announced_hash_even_after_a_third_die():
    async with asyncio.timeout(50):
        seed = DhtNode(host="127.0.0.1", port=0, config=cfg())
        await seed.start()
        nodes = [seed]
        try:
            for i in range(49):
                n = DhtNode(host="127.0.0.1", port=0, peer_port=6000 + i, seeds=[seed.address], config=cfg())
                await n.start()
                nodes.append(n)
                await n.joined.wait()  # nodes join one after another, as on a real network
                # The seed's ping back to the newcomer (its table may be full, so wait for the seed to be idle).
                await eventually(
                    lambda: seed.core.maybe_ping_count == 0 and seed.core.pending_count == 0,
                    what="the seed's ping back",
                )

            announcer = nodes[1]
            key = os.urandom(48)
            announcer.announce([key.hex()])
            await announcer.announcer.wait_rounds(key, 1)
            assert announcer.announcer.stored[key] >= 5

            others = [n for n in nodes if n is not announcer]
            found = await asyncio.gather(*(n.find_peers(key.hex()) for n in others))
            expect = ("127.0.0.1", announcer.peer_port, announcer.node_id)
            assert all(expect in [(p.ip, p.tcp_port, p.node_id) for p in f] for f in found)

            # kill a third of the nodes, chosen among those that hold the announcement
            holders = [n for n in others if n.core.peers.get(key, n._loop.time())]
            ranked = sorted(others, key=lambda n: (n not in holders, distance(n.node_id, key)))
            victims = ranked[:17]  # a third of 50, rounded up
            assert set(holders) <= set(victims)
            for v in victims:
                await v.stop(grace=0.1)
            alive = [n for n in nodes if n not in victims]
            assert len(alive) == 33

            # after the announcer's next round the hash lives on the new closest nodes
            rounds = announcer.announcer.rounds[key]
            await announcer.announcer.wait_rounds(key, rounds + 1)
            found = await asyncio.gather(*(n.find_peers(key) for n in alive if n is not announcer))
            missing = [
                i for i, f in enumerate(found) if expect not in [(p.ip, p.tcp_port, p.node_id) for p in f]
            ]
            assert missing == []
            holders_after = [n for n in alive if n.core.peers.get(key, n._loop.time())]
            assert len(holders_after) >= 5
        finally:
            await asyncio.gather(*(n.stop(grace=0.1) for n in nodes))
