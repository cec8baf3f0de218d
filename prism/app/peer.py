"""`prism peer`: a standalone peer server over a disk store, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

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
) -> None:
    """Serve the blobs under `store_path` until SIGINT or SIGTERM, then stop gracefully."""
    store = DiskStore(store_path)
    server = PeerServer(store, host, port, max_connections=max_connections, idle_timeout=idle_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        log.info("serving blobs from %s", store.root)
        if ready is not None:
            ready(server)
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
        await store.close()
        s = server.stats
        log.info(
            "served %d blobs (%d bytes) in %d requests on %d connections; %d not found, %d bad requests",
            s.blobs_sent,
            s.bytes_sent,
            s.requests,
            s.accepted,
            s.not_found,
            s.protocol_errors,
        )
