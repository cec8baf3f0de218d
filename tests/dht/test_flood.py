"""A node flooded with garbage and with valid requests from many fake ids (from a second process) keeps its
memory bounded and answers a normal peer within 100 ms."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from prism.dht import DhtConfig, DhtNode
from tests.dht.wire_peers import LbrySdkStylePeer

FLOODER = Path(__file__).with_name("flooder.py")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_flood_keeps_memory_bounded_and_answers_fast():
    cfg = DhtConfig(
        allow_private_peers=True, maybe_ping_delay=0.05, rpc_timeout=0.5, max_maybe_ping=32, max_pending=64
    )
    node = DhtNode(host="127.0.0.1", port=0, config=cfg)
    await node.start(join=False)
    peer = LbrySdkStylePeer()
    await peer.start()
    proc = None
    try:
        rss0 = rss_kib()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(FLOODER), "127.0.0.1", str(node.port), "4", "4000",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        rtts = []
        peak_pending = peak_maybe = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            rpc = os.urandom(20)
            t0 = time.perf_counter()
            raw = await peer.send_raw(peer.ping_bytes(rpc), node.address, rpc, wait=1.0)
            rtts.append(time.perf_counter() - t0)
            assert raw.endswith(b"4:ponge")
            peak_pending = max(peak_pending, node.core.pending_count)
            peak_maybe = max(peak_maybe, node.core.maybe_ping_count)
            await asyncio.sleep(0.02)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        sent = int(out)
        stats = node.core.stats
        assert sent > 10000 and stats.received > 0.9 * sent
        assert stats.malformed > 1000 and stats.requests > 5000 and stats.errors_sent > 1000
        # answers to the normal peer: every ping, each within 100 ms
        assert len(rtts) > 50 and max(rtts) < 0.1, (len(rtts), max(rtts))
        # bounded state: no fake id got into the table or the peer store, queues stayed at their caps
        assert peak_pending <= cfg.max_pending and peak_maybe <= cfg.max_maybe_ping
        # (the normal peer answers the node's ping back, so it alone may be in the table)
        assert {c.node_id for c in node.core.routing.contacts()} <= {peer.node_id} and len(
            node.core.peers
        ) == 0
        assert len(node._futures) == 0
        assert rss_kib() - rss0 < 30 * 1024
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        peer.close()
        await node.stop()
