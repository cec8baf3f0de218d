"""`prism dht connect|bootstrap`: a DHT node (and its JSON-RPC front) until SIGINT/SIGTERM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prism.app.supervisor import Call, Supervisor
from prism.dht.config import DEFAULT_SEEDS, DhtConfig
from prism.dht.node import DhtNode
from prism.dht.rpc import DhtRpcServer
from prism.hostport import HostPort

BOOTSTRAP_PING_DELAY = 0.001
"""A bootstrap node pings every unknown requester at once (reflector.go: initialPingInterval 1 ms)."""
STOP_GRACE = 2.0


@dataclass(slots=True)
class DhtOptions:
    """What `prism dht` was asked to run."""

    mode: str
    """`connect` (joins through lbry-sdk's known nodes by default) or `bootstrap` (a seed for others)."""
    state_path: Path
    node_id: bytes | None = None
    host: str = "0.0.0.0"
    port: int = 4567
    rpc_port: int = 0
    """0: no JSON-RPC."""
    seeds: list[HostPort] | None = None
    """None: the mode's default."""
    allow_private_peers: bool = False
    peer_port: int = 3333


def build_node(opts: DhtOptions) -> DhtNode:
    config = DhtConfig(allow_private_peers=opts.allow_private_peers)
    seeds = opts.seeds
    if opts.mode == "bootstrap":
        config.maybe_ping_delay = BOOTSTRAP_PING_DELAY
        seeds = seeds or []
    elif seeds is None:
        seeds = [HostPort(h, p) for h, p in DEFAULT_SEEDS]
    return DhtNode(
        node_id=opts.node_id,
        host=opts.host,
        port=opts.port,
        peer_port=opts.peer_port,
        seeds=seeds,
        config=config,
        state_path=opts.state_path,
    )


async def run_dht(opts: DhtOptions) -> None:
    """Run one node until SIGINT or SIGTERM; the routing table is saved to state_path on the way out.

    Raises StartupError (naming the flag) when a port cannot be bound.
    """
    node = build_node(opts)

    async def show_node() -> None:
        print(f"node id: {node.node_id.hex()}", flush=True)
        print(f"udp: {node.address[0]}:{node.address[1]}", flush=True)

    supervisor = Supervisor(grace=STOP_GRACE)
    supervisor.add("dht node", node, "--port")
    supervisor.add("ready", Call(start=show_node))
    if opts.rpc_port:
        # On the node's --host, not every interface: the JSON-RPC is unauthenticated.
        rpc = DhtRpcServer(node, opts.host, opts.rpc_port)

        async def show_rpc() -> None:
            print(f"json-rpc: {HostPort(opts.host, rpc.port)}", flush=True)

        supervisor.add("json-rpc server", rpc, "--rpcPort")
        supervisor.add("json-rpc ready", Call(start=show_rpc))
    await supervisor.run()
