"""`prism cluster start|join`: the membership test tool (reflector.md §1.3 `cluster`).

`start` runs a serf agent on the cluster port with no seed; `join` one on a random port just above it,
joining 127.0.0.1 on the cluster port. Each prints every membership change as `n of total` and the
alive members until SIGINT/SIGTERM, then leaves.
"""

from __future__ import annotations

import asyncio
import random

from prism.app.start import describe, show
from prism.app.supervisor import Call, Supervisor
from prism.cluster.agent import SerfAgent
from prism.cluster.membership import Membership
from prism.cluster.slicing import SlicePlan

DEFAULT_CLUSTER_PORT = 17946
JOIN_PORT_SPREAD = 1000


def tool_port(mode: str, cluster_port: int) -> int:
    """`start`: the cluster port; `join`: cluster port + 1 + a random number below 1000 (as reflector.go)."""
    return cluster_port if mode == "start" else cluster_port + 1 + random.randrange(JOIN_PORT_SPREAD)


async def run_cluster_tool(
    mode: str, cluster_port: int = DEFAULT_CLUSTER_PORT, host: str = "0.0.0.0"
) -> None:
    """Run one member until SIGINT/SIGTERM, printing each membership change."""
    agent = SerfAgent(host, tool_port(mode, cluster_port))
    plan = SlicePlan(agent.name, asyncio.get_running_loop().time(), settle=0.0)
    seeds = [] if mode == "start" else [f"127.0.0.1:{cluster_port}"]
    membership = Membership(lambda: agent.rpc, plan, lambda a: show(describe(a)), seeds)

    async def named() -> None:
        show(f"cluster node {agent.name} on {host}:{agent.port}")

    supervisor = Supervisor(grace=5.0)
    supervisor.add("serf agent", agent, "--cluster-port")
    supervisor.add("cluster name", Call(start=named))
    supervisor.add("cluster membership", membership)
    await supervisor.run()
