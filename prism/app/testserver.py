"""`prism test`: a reflector receiver and a peer server sharing one memory store.

On SIGINT/SIGTERM both stop and the store's contents are printed as reflector.go does:
`Blobs in store`, then `<hash>: <n> bytes` per blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from prism.reflector.receiver import ReflectorReceiver
from prism.store.memory import MemoryStore

log = logging.getLogger("prism.app")


def _peer_server_class() -> type | None:
    """The TCP peer server (issue 3) if this build has it."""
    try:
        from prism.peer.server import PeerServer
    except ImportError:
        return None
    return PeerServer


def store_listing(store: MemoryStore) -> list[str]:
    return ["Blobs in store", *(f"{h}: {len(data)} bytes" for h, data in store.blobs.items())]


async def run_test_servers(
    *,
    receiver_port: int = 5566,
    peer_port: int = 5567,
    host: str = "0.0.0.0",
    read_timeout: float = 180.0,
    echo: Callable[[str], None] = print,
    ready: Callable[[int, int | None], None] | None = None,
) -> MemoryStore:
    """Run until SIGINT/SIGTERM, then print the store listing and return the store."""
    store = MemoryStore()
    receiver = ReflectorReceiver(store, host=host, port=receiver_port, timeout=read_timeout)
    peer_cls = _peer_server_class()
    peer = peer_cls(store, host=host, port=peer_port) if peer_cls is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await receiver.start()
        if peer is not None:
            await peer.start()
        else:
            log.warning("this build has no peer server (prism.peer.server): only the receiver runs")
        if ready is not None:
            ready(receiver.port, peer.port if peer is not None else None)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if peer is not None:
            with contextlib.suppress(Exception):
                await peer.stop(1.0)
        await receiver.stop(1.0)
    for line in store_listing(store):
        echo(line)
    return store
