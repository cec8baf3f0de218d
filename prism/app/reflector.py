"""`prism reflector`: assemble the store chain and the servers from flags (reflector.md §1.3, §3.4).

Step A builds the origin (an upstream reflector, a durable `--store-path`, or origin
endpoints; optionally wrapped in the DB-backed store), step B wraps it in the disk and
memory caches, then the receiver, peer, HTTP/3, HTTP and metrics servers are started
over it. Every inconsistent combination is refused before anything starts, with one
sentence naming the flag to change.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from prism.app.metrics import Metrics, MetricsServer
from prism.app.protected import ProtectedList
from prism.app.supervisor import Call, Supervisor
from prism.config import Config
from prism.http.h3server import Http3BlobServer
from prism.http.queue import RequestQueue
from prism.http.server import HttpBlobServer
from prism.http.tls import DEFAULT_DATAGRAM_SIZE
from prism.store.base import BlobStore, StoreError, WrappingStore, walk_chain
from prism.store.stats import StoreSnapshot

log = logging.getLogger("prism.app")

UPSTREAM_PROTOCOLS = ("tcp", "http", "http3")
UPSTREAM_TIMEOUT = 30.0
RECEIVER_TIMEOUT = 180.0
DEFAULT_DISK_CACHE = "100GB:/tmp/downloaded_blobs:localdb"


class ReflectorConfigError(ValueError):
    """The flags (or config) do not make a working reflector; the message says what to change."""


@dataclass
class ReflectorOptions:
    """Every flag of `prism reflector` (reflector.md §1.3, same names and defaults) plus prism's own."""

    tcp_peer_port: int = 5567
    http3_peer_port: int = 5568
    http_peer_port: int = 5569
    receiver_port: int = 5566
    metrics_port: int = 2112
    disable_uploads: bool = False
    disable_blocklist: bool = False
    use_db: bool = True
    upstream_reflector: str = ""
    upstream_protocol: str = "http"
    upstream_edge_token: str = ""
    request_queue_size: int = 200
    origin_endpoint: str = ""
    origin_endpoint_fallback: str = ""
    disk_cache: str = DEFAULT_DISK_CACHE
    optional_disk_cache: str = ""
    mem_cache: int = 0
    # prism additions
    store_path: str = ""
    """A durable disk origin that never evicts (a private reflector without S3 or an upstream)."""
    http3_cert: str = ""
    http3_key: str = ""
    http3_max_datagram_size: int = DEFAULT_DATAGRAM_SIZE
    host: str = "0.0.0.0"
    shutdown_grace: float = 5.0


@dataclass
class Reflector:
    """What `build` assembled: the stores, the servers, and the supervisor that runs them."""

    options: ReflectorOptions
    underlying: BlobStore
    outer: BlobStore
    supervisor: Supervisor
    metrics: Metrics
    servers: dict[str, Any] = field(default_factory=dict)
    closers: list[Any] = field(default_factory=list)

    async def run(self) -> None:
        await self.supervisor.run()


# -- validation ---------------------------------------------------------------------------


def validate(opts: ReflectorOptions, config: Config) -> None:
    """Refuse inconsistent flags before anything is built or started."""
    if opts.upstream_protocol not in UPSTREAM_PROTOCOLS:
        raise ReflectorConfigError(
            f"--upstream-protocol: protocol is not recognized: {opts.upstream_protocol!r} "
            f"(use one of {', '.join(UPSTREAM_PROTOCOLS)})"
        )
    if opts.request_queue_size < 1:
        raise ReflectorConfigError("--request-queue-size must be at least 1")
    if opts.mem_cache < 0:
        raise ReflectorConfigError("--mem-cache must be 0 (off) or a positive number of blobs")
    if opts.origin_endpoint_fallback and not opts.origin_endpoint:
        raise ReflectorConfigError("--origin-endpoint-fallback needs --origin-endpoint as well")
    for flag, url in (
        ("--origin-endpoint", opts.origin_endpoint),
        ("--origin-endpoint-fallback", opts.origin_endpoint_fallback),
    ):
        if url and not url.startswith(("http://", "https://")):
            raise ReflectorConfigError(
                f"{flag} must be an http:// or https:// URL ending in '/', got {url!r}"
            )
    if opts.upstream_reflector and ":" not in opts.upstream_reflector:
        raise ReflectorConfigError(f"--upstream-reflector must be host:port, got {opts.upstream_reflector!r}")
    origins = [
        flag
        for flag, value in (
            ("--upstream-reflector", opts.upstream_reflector),
            ("--store-path", opts.store_path),
            ("--origin-endpoint", opts.origin_endpoint),
        )
        if value
    ]
    if len(origins) > 1:
        raise ReflectorConfigError(f"give only one origin, not {' and '.join(origins)}")
    if not origins and not _s3_configured(config):
        raise ReflectorConfigError(
            "this configuration does not include a valid upstream source: give --store-path DIR, "
            "--upstream-reflector HOST:PORT or --origin-endpoint URL"
        )
    if not origins and _s3_configured(config) and not _s3_available():
        raise ReflectorConfigError(
            "the config names an S3 bucket but this build has no S3 store: give --store-path, "
            "--upstream-reflector or --origin-endpoint"
        )
    if opts.use_db and not config.db_conn:
        raise ReflectorConfigError(
            "--use-db needs db_conn in the config file: add it, or pass --use-db=false"
        )
    read_only = opts.upstream_reflector or opts.origin_endpoint
    if not opts.disable_uploads and read_only:
        which = "--upstream-reflector" if opts.upstream_reflector else "--origin-endpoint"
        raise ReflectorConfigError(
            f"uploads need a writable origin but {which} is read-only: pass --disable-uploads "
            "(a blob cache) or use --store-path"
        )
    if bool(opts.http3_cert) != bool(opts.http3_key):
        raise ReflectorConfigError("--http3-cert and --http3-key must be given together")
    for flag, path in (("--http3-cert", opts.http3_cert), ("--http3-key", opts.http3_key)):
        if path and not os.path.isfile(path):
            raise ReflectorConfigError(f"{flag}: no such file {path!r}")
    if opts.store_path and not os.path.isabs(opts.store_path):
        raise ReflectorConfigError(f"--store-path must be an absolute path, got {opts.store_path!r}")
    tcp_ports = [("--tcp-peer-port", opts.tcp_peer_port), ("--http-peer-port", opts.http_peer_port)]
    tcp_ports.append(("--metrics-port", opts.metrics_port))
    if not opts.disable_uploads:
        tcp_ports.append(("--receiver-port", opts.receiver_port))
    seen: dict[int, str] = {}
    for flag, port in tcp_ports:
        if not 0 <= port <= 65535:
            raise ReflectorConfigError(f"{flag} must be a port number (0-65535), got {port}")
        if port and port in seen:
            raise ReflectorConfigError(
                f"{flag} and {seen[port]} both use port {port}: give them different ports"
            )
        seen[port] = flag
    for spec_flag, spec in (
        ("--disk-cache", opts.disk_cache),
        ("--optional-disk-cache", opts.optional_disk_cache),
    ):
        if spec:
            parse_cache_spec(spec_flag, spec)


def _s3_configured(config: Config) -> bool:
    return bool(config.bucket_name and config.aws_id)


def _s3_available() -> bool:
    try:
        import prism.store.s3  # noqa: F401
    except ImportError:
        return False
    return True


# -- assembly -----------------------------------------------------------------------------


class BytesInCounter(WrappingStore):
    """Counts the blob bytes an upstream store without its own counter hands back."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.bytes_in = 0

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, bytes_in=self.bytes_in)

    async def get(self, blob_hash: str) -> Any:
        ref = await self.inner.get(blob_hash)
        self.bytes_in += ref.size
        return ref


class ProtectedBlobError(StoreError):
    """A protected blob was asked for over a protocol that carries no edge token."""


class ProtectedGuard(WrappingStore):
    """Refuses protected hashes (reflector.md §7.2) for servers without edge tokens (the peer server).

    reflector.go closes the peer connection when a protected hash is in `requested_blobs`;
    this also covers `requested_blob`, which reflector.go forgot (§11 item 4).
    """

    def __init__(self, inner: BlobStore, is_protected: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.is_protected = is_protected

    async def _check(self, blob_hash: str) -> None:
        if await self.is_protected(blob_hash):
            raise ProtectedBlobError("requested blob is protected")

    async def has(self, blob_hash: str) -> bool:
        await self._check(blob_hash)
        return await self.inner.has(blob_hash)

    async def get(self, blob_hash: str) -> Any:
        await self._check(blob_hash)
        return await self.inner.get(blob_hash)


def parse_cache_spec(flag: str, spec: str) -> Any:
    """`SIZE:PATH:MANAGER` via the cache-chain package, errors naming `flag`."""
    from prism.app import reflector_chain as caches

    try:
        return caches.parse_disk_cache(spec)
    except ValueError as e:
        raise ReflectorConfigError(f"{flag}: {e}") from None
    except ImportError as e:  # pragma: no cover - only before the cache-chain issue lands
        raise ReflectorConfigError(f"{flag}: this build has no disk caches ({e})") from None


def build_origin(opts: ReflectorOptions, config: Config) -> BlobStore:
    """Step A: the store that holds the truth (before the caches)."""
    origin: BlobStore
    if opts.upstream_reflector:
        addr = opts.upstream_reflector
        if opts.upstream_protocol == "tcp":
            from prism.store.peer import PeerStore

            origin = PeerStore(addr, UPSTREAM_TIMEOUT)
        elif opts.upstream_protocol == "http3":
            from prism.store.http3 import Http3Store

            origin = Http3Store(addr, UPSTREAM_TIMEOUT, max_datagram_size=opts.http3_max_datagram_size)
        else:
            from prism.store.http import HttpStore

            origin = HttpStore(addr, opts.upstream_edge_token, UPSTREAM_TIMEOUT)
    elif opts.store_path:
        from prism.store.disk import DiskStore

        os.makedirs(opts.store_path, exist_ok=True)
        origin = DiskStore(opts.store_path)
    elif opts.origin_endpoint:
        from prism.store.origin_endpoint import OriginEndpointStore

        origin = OriginEndpointStore(opts.origin_endpoint, opts.origin_endpoint_fallback, UPSTREAM_TIMEOUT)
    else:  # pragma: no cover - validate() refuses this unless an S3 store exists
        from prism.store import s3  # type: ignore[attr-defined]

        origin = s3.S3Store.from_config(config)
    return origin


async def build(opts: ReflectorOptions, config: Config) -> Reflector:
    """Validate, then assemble stores and servers (nothing listens until `run`)."""
    validate(opts, config)
    from prism.app import reflector_chain as caches

    supervisor = Supervisor(grace=opts.shutdown_grace)
    closers: list[Any] = []
    origin = build_origin(opts, config)
    if opts.upstream_reflector and opts.upstream_protocol == "tcp":
        origin = BytesInCounter(origin)
    closers.append(origin)
    database: Any = None
    if opts.use_db:
        try:
            origin, database = await caches.db_backed_origin(origin, config)
        except caches.MissingComponentError as e:
            raise ReflectorConfigError(str(e)) from None
    underlying = origin
    chain = caches.build_cache_chain(
        underlying,
        config,
        disk_cache=opts.disk_cache,
        optional_disk_cache=opts.optional_disk_cache,
        mem_cache=opts.mem_cache,
    )
    outer: BlobStore = chain.store
    if opts.upstream_reflector or opts.origin_endpoint:
        # The network origin already checked each blob's SHA-384 on arrival: a cache fill
        # need not hash the same bytes again.
        for store in walk_chain(outer):
            if getattr(store, "name", "") == "caching" and isinstance(getattr(store, "verify", None), bool):
                store.verify = False  # type: ignore[attr-defined]
    metrics = Metrics()
    metrics.stores.append(outer)
    protected = ProtectedList(config.protected_list_url)

    async def close_stores() -> None:
        await protected.close()
        try:
            await outer.close()  # closes every layer down to the origin
        except Exception as e:
            log.warning("closing the store chain: %s", e)
        if database is not None:
            await database.close()

    # Added first so it is stopped last: stores close after every server has stopped.
    supervisor.add("store chain", Call(stop=close_stores))
    if database is not None:
        db = database

        async def start_database() -> None:
            # A database that is down at start is refused, as reflector.go does, not found
            # out on the first request.
            await db.start(require=True)

        supervisor.add("the database", Call(start=start_database), "db_conn")
    # Disk caches index themselves at start; at stop they flush the localdb access times.
    supervisor.add("caches", chain, "--disk-cache")
    refl = Reflector(opts, underlying, outer, supervisor, metrics, closers=closers)

    if not opts.disable_uploads:
        from prism.reflector.receiver import ReflectorReceiver

        receiver = ReflectorReceiver(
            outer, underlying=underlying, host=opts.host, port=opts.receiver_port, timeout=RECEIVER_TIMEOUT
        )
        if opts.disable_blocklist and hasattr(receiver, "blocklister"):
            receiver.blocklister = None  # wants = "not stored yet", as reflector.go without a blocklist
        if not opts.use_db:
            log.info("no database: the reflector receiver applies no blocklist")
        elif opts.disable_blocklist:
            log.info("--disable-blocklist: the reflector receiver applies no blocklist")
        supervisor.add("reflector receiver", receiver, "--receiver-port")
        metrics.receivers.append(receiver)
        refl.servers["receiver"] = receiver

    from prism.peer.server import PeerServer

    peer_store = ProtectedGuard(outer, protected.is_protected) if protected.url else outer
    peer = PeerServer(peer_store, opts.host, opts.tcp_peer_port, max_connections=10000, idle_timeout=60.0)
    supervisor.add("peer server", peer, "--tcp-peer-port")
    metrics.servers.append(peer)
    refl.servers["peer"] = peer

    h3 = Http3BlobServer(
        caches.single_flight("sf-http3", outer),
        opts.host,
        opts.http3_peer_port,
        cert_file=opts.http3_cert or None,
        key_file=opts.http3_key or None,
        protected=protected.is_protected,
        queue=RequestQueue(opts.request_queue_size),
        max_datagram_size=opts.http3_max_datagram_size,
    )
    supervisor.add("HTTP/3 server", h3, "--http3-peer-port")
    metrics.servers.append(h3)
    refl.servers["http3"] = h3

    http = HttpBlobServer(
        caches.single_flight("sf-http", outer),
        opts.host,
        opts.http_peer_port,
        edge_token=opts.upstream_edge_token,
        protected=protected.is_protected,
        queue=RequestQueue(opts.request_queue_size),
    )
    supervisor.add("HTTP server", http, "--http-peer-port")
    metrics.servers.append(http)
    refl.servers["http"] = http

    metrics_server = MetricsServer(metrics, opts.host, opts.metrics_port)
    supervisor.add("metrics server", metrics_server, "--metrics-port")
    refl.servers["metrics"] = metrics_server
    return refl


async def run_reflector(opts: ReflectorOptions, config: Config) -> None:
    """Build, log the version, serve until SIGINT/SIGTERM, shut down gracefully."""
    from prism.version import build_info

    info = build_info()
    refl = await build(opts, config)
    log.info("reflector version %s, built %s", info.get("Version"), info.get("build date", "<now>"))
    await refl.run()
    log.info("reflector stopped")
