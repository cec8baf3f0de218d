"""`prism peer`: a standalone peer server until SIGINT/SIGTERM (reflector.md §1.3 `peer`).

As reflector.go: the store is the config's S3 bucket, wrapped in the DB-backed store over the
main database (no access tracking) unless `--nodb`. prism's `--store-path` serves a disk store
instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from prism.app.dht import AnnouncingNode, DhtAnnounceOptions
from prism.app.limits import process_admission
from prism.app.s3origin import OriginConfigError, check_s3, main_database, names_a_bucket, s3_store
from prism.app.supervisor import Call, Supervisor
from prism.config import Config
from prism.db.mysql import MysqlDatabase
from prism.peer.server import PeerServer
from prism.store.base import BlobStore
from prism.store.db_backed import DBBackedStore
from prism.store.disk import DiskStore

log = logging.getLogger("prism.peer")

DEFAULT_PEER_PORT = 3333
"""reflector.go's `peer` command listens here (peer.DefaultPort)."""


@dataclass
class PeerOrigin:
    """What `prism peer` serves from, and the database to start and close (None without one)."""

    store: BlobStore
    database: MysqlDatabase | None
    where: str


def peer_origin(config: Config, store_path: str | None, nodb: bool) -> PeerOrigin:
    """`--store-path` (a disk store), else S3 from the config, DB-backed unless `nodb`."""
    if store_path:
        disk = DiskStore(store_path)
        return PeerOrigin(disk, None, disk.root)
    if not names_a_bucket(config):
        raise OriginConfigError(
            "peer needs an S3 bucket in the config (aws_id, aws_secret, bucket_region, bucket_name) "
            "or --store-path DIR"
        )
    s3 = s3_store(config)
    if nodb:
        return PeerOrigin(s3, None, s3.settings.where)
    db = main_database(config, "none", "peer needs db_conn in the config file: add it, or pass --nodb")
    return PeerOrigin(DBBackedStore(s3, db), db, f"{s3.settings.where} tracked in {db.where}")


async def run_peer_server(
    origin: PeerOrigin,
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PEER_PORT,
    max_connections: int = 1000,
    idle_timeout: float = 60.0,
    ready: Callable[[PeerServer], None] | None = None,
    dht: DhtAnnounceOptions | None = None,
) -> None:
    """Serve the blobs of `origin` until SIGINT or SIGTERM, then stop gracefully.

    With `dht`, a DHT node announces the blobs of the store. Raises StartupError (naming the flag)
    when a port cannot be bound, or when the bucket or the database cannot be used.
    """
    store = origin.store
    admission = process_admission(max_connections)
    server = PeerServer(store, host, port, admission=admission, idle_timeout=idle_timeout)

    async def started() -> None:
        log.info("serving blobs from %s", origin.where)
        if ready is not None:
            ready(server)

    async def finished() -> None:
        await store.close()
        if origin.database is not None:
            await origin.database.close()
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
    if origin.database is not None:
        db = origin.database

        async def start_database() -> None:
            await db.start(require=True)

        supervisor.add("the database", Call(start=start_database), "db_conn")
    supervisor.add("the S3 origin", Call(start=lambda: check_s3(store)), "config")
    supervisor.add("peer server", server, "--port")
    if dht is not None:
        supervisor.add("DHT node", AnnouncingNode(dht, store, lambda: server.port), "--dht-port")
    supervisor.add("ready", Call(start=started))
    await supervisor.run()
