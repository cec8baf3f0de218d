"""Fixed ports below the ephemeral range for serf agents (serf cannot bind port 0 usefully)."""

from __future__ import annotations

import random

from prism.cluster.agent import AgentError, check_port_free


def free_cluster_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports in 20000-32000, free for TCP and UDP now."""
    found: list[int] = []
    while len(found) < count:
        port = random.randrange(20000, 32000)
        try:
            check_port_free(host, port)
        except AgentError:
            continue
        if port not in found:
            found.append(port)
    return found
