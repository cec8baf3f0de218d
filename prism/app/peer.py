"""`prism peer`: a standalone peer server over a disk store, until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prism.app.dht import AnnouncingNode, DhtAnnounceOptions
from prism.app.supervisor import Call, Supervisor
from prism.peer.server import PeerServer
from prism.store.disk import DiskStore

log = logging.getLogger("prism.peer")

DEFAULT_PEER_PORT = 3333
"""reflector.go's `peer` command listens here (peer.DefaultPort)."""


async def run_peer_server(
    store_path: str,
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PEER_PORT,
    max_connections: int = 1000,
    idle_timeout: float = 60.0,
    ready: Callable[[PeerServer], None] | None = None,
    dht: DhtAnnounceOptions | None = None,
) -> None:
    """Serve the blobs under `store_path` until SIGINT or SIGTERM, then stop gracefully.

    With `dht`, a DHT node announces the blobs of the store. Raises StartupError (naming the flag) when
    a port cannot be bound.
    """
    store = DiskStore(store_path)
    server = PeerServer(store, host, port, max_connections=max_connections, idle_timeout=idle_timeout)

    async def started() -> None:
        log.info("serving blobs from %s", store.root)
        if ready is not None:
            ready(server)

    async def finished() -> None:
        await store.close()
        s = server.stats
        log.info(
            "served %d blobs (%d bytes) in %d requests on %d connections; %d not found, %d bad requests",
            s.downloads,
            s.bytes_out,
            s.requests,
            s.accepted,
            s.not_found,
            s.errors["invalid_peer_data"],
        )

    supervisor = Supervisor()
    supervisor.add("store", Call(stop=finished))
    supervisor.add("peer server", server, "--port")
    if dht is not None:
        supervisor.add("DHT node", AnnouncingNode(dht, store, lambda: server.port), "--dht-port")
    supervisor.add("ready", Call(start=started))
    await supervisor.run()
