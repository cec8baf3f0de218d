"""`prism start` (issue 15's acceptance): three nodes over one SeaweedFS bucket and one MariaDB
database, 3,000 stored hashes, announced once by exactly one node; a SIGKILLed node's slice is
covered by the others within 15 s, and a restart gives thirds again."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import aiohttp
import pytest

from prism.cluster.slicing import KEY_SPACE
from prism.config import MysqlParams
from tests.cluster.nodes import (
    StartProcess,
    announcers_of,
    in_thirds,
    seed_node,
    start_three,
    store_hashes,
    until,
)
from tests.cluster.ports import free_cluster_ports
from tests.s3server import SeaweedFS, write_config

pytestmark = pytest.mark.slow

HASHES = 3000


async def metrics(session: aiohttp.ClientSession, node: StartProcess) -> dict[str, float]:
    async with session.get(f"http://127.0.0.1:{node.metrics}/metrics") as response:
        text = await response.text()
    return {
        name: float(value)
        for name, _, value in (ln.partition(" ") for ln in text.splitlines() if ln.startswith("reflector_"))
    }


async def test_three_nodes_share_the_announcing_and_cover_a_lost_one(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str, mysql_database: MysqlParams
) -> None:
    conf = write_config(tmp_path / "config.json", seaweedfs, s3_bucket, mysql_database)
    hashes = store_hashes(mysql_database, HASHES)
    # The nodes' only DHT seed comes up once the slices are thirds: until then the nodes have nobody to
    # announce to, so the first node's whole-catalogue slice (alone at first) is never sent.
    [seed_port] = free_cluster_ports(1)
    flags = ("--dht-announce-rate", "2000")
    nodes: list[StartProcess] = []
    seed = None
    try:
        await start_three(nodes, tmp_path, conf, seed_port, *flags)
        seed = await seed_node(seed_port)
        slices = [n.last_slice() for n in nodes]
        assert sum(s[3] for s in slices if s) == HASHES
        assert sum(s[2].size for s in slices if s) == KEY_SPACE  # no overlap, no gap
        owner = {}
        for node, s in zip(nodes, slices, strict=True):
            assert s is not None
            owner.update({h: node.peer for h in hashes if int(h, 16) in s[2]})

        def each_once() -> bool:
            return all(announcers_of(seed, h) == {owner[h]} for h in hashes)

        await until(each_once, 30, "every hash announced by its owner alone", nodes)
        async with aiohttp.ClientSession() as session:
            for node, s in zip(nodes, slices, strict=True):
                assert s is not None
                got = await metrics(session, node)
                assert got["reflector_cluster_members"] == 3 and got["reflector_cluster_position"] == s[0]
                assert got["reflector_cluster_slice_hashes"] == s[3] == got["reflector_dht_announce_hashes"]
                assert "reflector_dht_announce_backlog" in got

        # SIGKILL one: the two others cover its slice within 15 s
        lost = nodes[2]
        lost_hashes = [h for h in hashes if owner[h] == lost.peer]
        lost.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        lost.proc.wait()  # type: ignore[union-attr]
        killed = time.monotonic()
        survivors = nodes[:2]
        live_ports = {n.peer for n in survivors}

        def covered() -> bool:
            return all(announcers_of(seed, h) & live_ports for h in lost_hashes)

        await until(covered, 15, "the lost node's hashes re-announced", survivors)
        took = time.monotonic() - killed
        print(f"re-announced {len(lost_hashes)} hashes {took:.1f} s after the SIGKILL")

        # One survivor can cover the lost third alone (the second half contains it) before serf has
        # told the other of the failure: both must settle on halves within the same 15 s.
        def halves() -> bool:
            return [(n.last_slice() or (0, 0))[1] for n in survivors] == [2, 2]

        await until(halves, max(15 - took, 0.5), "both survivors slicing in halves", survivors)

        # restarted: thirds again
        lost.start()
        await until(lambda: in_thirds(nodes), 30, "thirds after the restart", nodes)
        assert sum(s[3] for s in (n.last_slice() for n in nodes) if s) == HASHES

        # SIGTERM: the node stops in order (its agent leaves) and exits 0; the others see two at once
        nodes[0].stop()
        assert nodes[0].proc is not None and nodes[0].proc.returncode == 0
        await until(lambda: all((n.last_slice() or (0, 0))[1] == 2 for n in nodes[1:]), 8, "leave", nodes[1:])
    finally:
        for node in nodes:
            node.kill()
        if seed is not None:
            await seed.stop()
