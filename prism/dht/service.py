"""Running a DHT node as a program (`prism dht connect|bootstrap`): start, wait for SIGINT/SIGTERM, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from prism.dht.config import DEFAULT_SEEDS, DhtConfig
from prism.dht.node import DhtNode
from prism.dht.rpc import DhtRpcServer

log = logging.getLogger("prism.dht")

BOOTSTRAP_PING_DELAY = 0.001
"""A bootstrap node pings every unknown requester at once (reflector.go: initialPingInterval 1 ms)."""


def parse_seeds(values: Sequence[str]) -> list[tuple[str, int]]:
    """`host:port` strings (each may be a comma-separated list) into (host, port) pairs."""
    out: list[tuple[str, int]] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"seed {item!r} is not host:port")
            out.append((host, int(port)))
    return out


async def run_dht(
    mode: str,
    *,
    node_id: bytes | None,
    host: str,
    port: int,
    rpc_port: int,
    seeds: list[tuple[str, int]] | None,
    allow_private_peers: bool,
    state_path: Path,
    peer_port: int,
    ready: asyncio.Event | None = None,
) -> None:
    """Run one node until SIGINT or SIGTERM; the routing table is saved to state_path on the way out."""
    config = DhtConfig(allow_private_peers=allow_private_peers)
    if mode == "bootstrap":
        config.maybe_ping_delay = BOOTSTRAP_PING_DELAY
        seeds = seeds or []
    elif seeds is None:
        seeds = list(DEFAULT_SEEDS)
    node = DhtNode(
        node_id=node_id,
        host=host,
        port=port,
        peer_port=peer_port,
        seeds=seeds,
        config=config,
        state_path=state_path,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rpc: DhtRpcServer | None = None
    await node.start()
    try:
        print(f"node id: {node.node_id.hex()}", flush=True)
        print(f"udp: {node.address[0]}:{node.address[1]}", flush=True)
        if rpc_port:
            rpc = DhtRpcServer(node, "0.0.0.0", rpc_port)
            await rpc.start()
            print(f"json-rpc: 0.0.0.0:{rpc.port}", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
    finally:
        if rpc is not None:
            await rpc.stop()
        await node.stop(grace=2.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
