"""`prism test`: a reflector receiver and a peer server sharing one memory store.

On SIGINT/SIGTERM both stop and the store's contents are printed as reflector.go does:
`Blobs in store`, then `<hash>: <n> bytes` per blob.
"""

from __future__ import annotations

from collections.abc import Callable

from prism.app.dht import AnnouncingNode, DhtAnnounceOptions
from prism.app.limits import process_admission
from prism.app.supervisor import Call, Supervisor
from prism.peer.server import PeerServer
from prism.reflector.receiver import ReflectorReceiver
from prism.store.memory import HoldingsMemoryStore, MemoryStore


def store_listing(store: MemoryStore) -> list[str]:
    return ["Blobs in store", *(f"{h}: {len(data)} bytes" for h, data in store.blobs.items())]


async def run_test_servers(
    *,
    receiver_port: int = 5566,
    peer_port: int = 5567,
    host: str = "0.0.0.0",
    read_timeout: float = 180.0,
    echo: Callable[[str], None] = print,
    ready: Callable[[int, int], None] | None = None,
    dht: DhtAnnounceOptions | None = None,
) -> MemoryStore:
    """Run until SIGINT/SIGTERM, then print the store listing and return the store.

    Raises StartupError (naming the flag) when a port cannot be bound.
    """
    store = HoldingsMemoryStore()
    admission = process_admission()
    receiver = ReflectorReceiver(
        store, host=host, port=receiver_port, timeout=read_timeout, admission=admission
    )
    peer = PeerServer(store, host=host, port=peer_port, admission=admission)

    async def announce() -> None:
        if ready is not None:
            ready(receiver.port, peer.port)

    supervisor = Supervisor(grace=1.0)
    supervisor.add("reflector receiver", receiver, "--receiver-port")
    supervisor.add("peer server", peer, "--tcp-peer-port")
    if dht is not None:
        supervisor.add("DHT node", AnnouncingNode(dht, store, lambda: peer.port), "--dht-port")
    supervisor.add("ready", Call(start=announce))
    await supervisor.run()
    for line in store_listing(store):
        echo(line)
    return store
