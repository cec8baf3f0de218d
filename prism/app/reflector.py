"""`prism reflector`: assemble the store chain and the servers from flags (reflector.md §1.3, §3.4).

Three steps, each returning a typed result: `build_origin` (the store that holds the truth,
picked from `ORIGINS`, optionally DB-backed), `build_stores` (the disk and memory caches
around it) and `build_servers` (receiver, peer, HTTP/3, HTTP and metrics over the chain).
Every inconsistent combination is refused by `validate` before anything is built, with one
sentence naming the flag to change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from prism.app.blocklist import DEFAULT_HUBS, DEFAULT_INTERVAL, DEFAULT_LIST_URL, BlocklistUpdater
from prism.app.cache_chain import CacheChain, DiskCacheSpecError, build_cache_chain, parse_disk_cache_spec
from prism.app.dht import AnnouncingNode, DhtAnnounceOptions
from prism.app.limits import process_admission
from prism.app.metrics import Metrics, MetricsServer
from prism.app.paths import DirectoryError, ensure_directory
from prism.app.protected import ProtectedList
from prism.app.s3origin import OriginConfigError, check_s3, names_a_bucket, s3_store
from prism.app.supervisor import Call, Supervisor
from prism.config import Config, ConfigError, parse_mysql_dsn
from prism.db.mysql import MysqlDatabase
from prism.hostport import AddressError, HostPort, parse_host_port
from prism.http.h3server import Http3BlobServer
from prism.http.queue import RequestQueue
from prism.http.server import HttpBlobServer
from prism.http.tls import DEFAULT_DATAGRAM_SIZE
from prism.peer.server import PeerServer
from prism.reflector.receiver import ReflectorReceiver
from prism.store.base import BlobStore
from prism.store.db_backed import DBBackedStore
from prism.store.disk import DiskStore
from prism.store.fallback import ReadWriteSplitStore
from prism.store.guards import BytesInCounter, ProtectedGuard
from prism.store.http import HttpStore
from prism.store.http3 import Http3Store
from prism.store.origin_endpoint import OriginEndpointStore
from prism.store.peer import PeerStore
from prism.store.singleflight import SingleFlightStore

log = logging.getLogger("prism.app")

UPSTREAM_PROTOCOLS = ("tcp", "http", "http3")
UPSTREAM_DEFAULT_PORTS = {"http": 80, "tcp": 5567, "http3": 5568}
"""The port of an --upstream-reflector given without one: reflector.go's HTTP upstream is
`http://` + the value (port 80); tcp and http3 take the standard peer and HTTP/3 ports."""
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
    dht: DhtAnnounceOptions | None = None
    """`--dht-port` and friends: a DHT node announcing what the origin and disk caches hold."""
    blocklist_url: str = DEFAULT_LIST_URL
    blocklist_hubs: str = ",".join(DEFAULT_HUBS)
    """Wallet servers (comma-separated host:port) the blocklist updater resolves outpoints with."""
    blocklist_interval: float = DEFAULT_INTERVAL
    protected_list_url: str | None = None
    """None: the config's `protected_list_url` (reflector.go's URL by default); "": no list."""


# -- origin kinds -------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginKind:
    """One way to get the origin store: the flag that picks it and how to make it."""

    flag: str
    chosen: Callable[[ReflectorOptions, Config], bool]
    make: Callable[[ReflectorOptions, Config], BlobStore]
    read_only: bool
    """Uploads need a writable origin: a read-only one needs --disable-uploads."""
    verifies: bool
    """It checks each blob's SHA-384 on arrival, so a cache fill need not hash it again."""


def upstream_address(opts: ReflectorOptions) -> HostPort:
    """--upstream-reflector as HOST:PORT, the protocol's standard port when none is given."""
    try:
        return parse_host_port(
            opts.upstream_reflector,
            default_port=UPSTREAM_DEFAULT_PORTS.get(opts.upstream_protocol),
            what="--upstream-reflector",
        )
    except AddressError as e:
        raise ReflectorConfigError(str(e)) from None


def _upstream_reflector(opts: ReflectorOptions, config: Config) -> BlobStore:
    addr = str(upstream_address(opts))
    if opts.upstream_protocol == "tcp":
        return BytesInCounter(PeerStore(addr, UPSTREAM_TIMEOUT))
    if opts.upstream_protocol == "http3":
        return Http3Store(addr, UPSTREAM_TIMEOUT, max_datagram_size=opts.http3_max_datagram_size)
    return HttpStore(addr, opts.upstream_edge_token, UPSTREAM_TIMEOUT)


def _store_path(opts: ReflectorOptions, config: Config) -> BlobStore:
    return DiskStore(opts.store_path)  # validate made the directory


def _origin_endpoint(opts: ReflectorOptions, config: Config) -> BlobStore:
    return OriginEndpointStore(opts.origin_endpoint, opts.origin_endpoint_fallback, UPSTREAM_TIMEOUT)


def _s3(opts: ReflectorOptions, config: Config) -> BlobStore:
    return s3_store(config)


def _cloudfront_rw(opts: ReflectorOptions, config: Config) -> BlobStore:
    # Reads go through the HTTP endpoints (a CDN in front of the bucket), writes to the bucket.
    return ReadWriteSplitStore(_origin_endpoint(opts, config), s3_store(config))


def _other_origin_flag(opts: ReflectorOptions) -> bool:
    return bool(opts.upstream_reflector or opts.store_path or opts.origin_endpoint)


ORIGINS: dict[str, OriginKind] = {
    "upstream-reflector": OriginKind(
        "--upstream-reflector",
        chosen=lambda o, c: bool(o.upstream_reflector),
        make=_upstream_reflector,
        read_only=True,
        verifies=True,
    ),
    "store-path": OriginKind(
        "--store-path",
        chosen=lambda o, c: bool(o.store_path),
        make=_store_path,
        read_only=False,
        verifies=False,
    ),
    "origin-endpoint": OriginKind(
        "--origin-endpoint",
        chosen=lambda o, c: bool(o.origin_endpoint) and not names_a_bucket(c),
        make=_origin_endpoint,
        read_only=True,
        verifies=True,
    ),
    "cloudfront-rw": OriginKind(
        "--origin-endpoint (with the config's S3 bucket for writes)",
        chosen=lambda o, c: bool(o.origin_endpoint) and names_a_bucket(c),
        make=_cloudfront_rw,
        read_only=False,
        verifies=True,
    ),
    "s3": OriginKind(
        "the config's S3 bucket",
        chosen=lambda o, c: names_a_bucket(c) and not _other_origin_flag(o),
        make=_s3,
        read_only=False,
        verifies=True,
    ),
}
"""Every origin `prism reflector` can be built on; `validate` makes sure exactly one is chosen."""


def chosen_origins(opts: ReflectorOptions, config: Config) -> list[OriginKind]:
    return [kind for kind in ORIGINS.values() if kind.chosen(opts, config)]


# -- validation ---------------------------------------------------------------------------


def validate(opts: ReflectorOptions, config: Config) -> OriginKind:
    """Refuse inconsistent flags before anything is built or started; the origin to build."""
    _check_values(opts)
    origin = _check_origin(opts, config)
    if opts.use_db and not config.db_conn:
        raise ReflectorConfigError(
            "--use-db needs db_conn in the config file: add it, or pass --use-db=false"
        )
    if not opts.disable_uploads and origin.read_only:
        raise ReflectorConfigError(
            f"uploads need a writable origin but {origin.flag} is read-only: pass --disable-uploads "
            "(a blob cache) or use --store-path"
        )
    _check_files(opts)
    _check_ports(opts)
    _check_dsns(opts, config)
    _check_directories(opts)
    return origin


def _check_dsns(opts: ReflectorOptions, config: Config) -> None:
    keys = [("local_db_conn", config.local_db_conn)]
    if opts.use_db:
        keys.append(("db_conn", config.db_conn))
    for key, dsn in keys:
        if dsn:
            try:
                parse_mysql_dsn(dsn)
            except ConfigError as e:
                raise ReflectorConfigError(f"{key} in the config file: {e}") from None


def _check_directories(opts: ReflectorOptions) -> None:
    """Every directory the flags name exists (created if missing) and is writable."""
    dirs: list[tuple[str, str]] = []
    for flag, text in (
        ("--disk-cache", opts.disk_cache),
        ("--optional-disk-cache", opts.optional_disk_cache),
    ):
        try:
            spec = parse_disk_cache_spec(text)
        except DiskCacheSpecError as e:
            raise ReflectorConfigError(f"{flag}: {e}") from None
        if spec is not None:
            dirs.append((flag, spec.path))
    if opts.store_path:
        dirs.append(("--store-path", opts.store_path))
    for flag, path in dirs:
        try:
            ensure_directory(path, flag)
        except DirectoryError as e:
            raise ReflectorConfigError(str(e)) from None


def _check_values(opts: ReflectorOptions) -> None:
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
    if opts.upstream_reflector:
        upstream_address(opts)


def _check_origin(opts: ReflectorOptions, config: Config) -> OriginKind:
    origins = chosen_origins(opts, config)
    if len(origins) > 1:
        raise ReflectorConfigError(f"give only one origin, not {' and '.join(o.flag for o in origins)}")
    if not origins:
        raise ReflectorConfigError(
            "this configuration does not include a valid upstream source: give --store-path DIR, "
            "--upstream-reflector HOST:PORT, --origin-endpoint URL or an S3 bucket in the config"
        )
    if origins[0].make in (_s3, _cloudfront_rw):
        try:
            s3_store(config)  # only checks the keys; nothing is contacted before start
        except OriginConfigError as e:
            raise ReflectorConfigError(str(e)) from None
    return origins[0]


def _check_files(opts: ReflectorOptions) -> None:
    if bool(opts.http3_cert) != bool(opts.http3_key):
        raise ReflectorConfigError("--http3-cert and --http3-key must be given together")
    for flag, path in (("--http3-cert", opts.http3_cert), ("--http3-key", opts.http3_key)):
        if path and not os.path.isfile(path):
            raise ReflectorConfigError(f"{flag}: no such file {path!r}")
    if opts.store_path and not os.path.isabs(opts.store_path):
        raise ReflectorConfigError(f"--store-path must be an absolute path, got {opts.store_path!r}")


def _check_ports(opts: ReflectorOptions) -> None:
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


# -- assembly -----------------------------------------------------------------------------


@dataclass
class Origin:
    """Step A: the store that holds the truth, before any cache."""

    store: BlobStore
    """The origin, DB-backed with --use-db: the receiver's `underlying` store."""
    database: MysqlDatabase | None
    """The main database (db_conn), a component to start and close; None without --use-db."""
    verified: bool
    """Every blob it hands back had its SHA-384 checked on arrival."""


@dataclass
class Stores:
    """Step B: the origin, the caches around it, and the outer store every server uses."""

    origin: Origin
    caches: CacheChain

    @property
    def outer(self) -> BlobStore:
        return self.caches.store


@dataclass
class Servers:
    """Step C: the servers over the chain (`receiver` is None with --disable-uploads)."""

    receiver: ReflectorReceiver | None
    peer: PeerServer
    http3: Http3BlobServer
    http: HttpBlobServer
    metrics: MetricsServer


@dataclass
class Reflector:
    """What `build` assembled: the stores, the servers, and the supervisor that runs them."""

    options: ReflectorOptions
    stores: Stores
    servers: Servers
    supervisor: Supervisor
    metrics: Metrics
    blocklist: BlocklistUpdater | None = None

    @property
    def underlying(self) -> BlobStore:
        return self.stores.origin.store

    @property
    def outer(self) -> BlobStore:
        return self.stores.outer

    async def run(self) -> None:
        await self.supervisor.run()


def build_origin(opts: ReflectorOptions, config: Config, kind: OriginKind) -> Origin:
    """Step A: the chosen origin, wrapped in the DB-backed store over `db_conn` with --use-db."""
    store = kind.make(opts, config)
    database: MysqlDatabase | None = None
    if opts.use_db:
        database = MysqlDatabase.from_dsn(config.db_conn, track_access="streams")
        store = DBBackedStore(store, database, delete_on_miss=False)
    return Origin(store, database, verified=kind.verifies)


def build_stores(opts: ReflectorOptions, config: Config, origin: Origin) -> Stores:
    """Step B: `--disk-cache`, then `--optional-disk-cache`, then `--mem-cache` around the origin."""
    caches = build_cache_chain(
        origin.store,
        disk_cache=opts.disk_cache,
        optional_disk_cache=opts.optional_disk_cache,
        mem_cache=opts.mem_cache,
        local_db_conn=config.local_db_conn,
        verify_origin=not origin.verified,
    )
    return Stores(origin, caches)


def build_servers(
    opts: ReflectorOptions, stores: Stores, protected: ProtectedList, metrics: Metrics
) -> Servers:
    """Step C: the servers (none listens yet)."""
    outer = stores.outer
    admission = process_admission()
    receiver = None
    if not opts.disable_uploads:
        receiver = ReflectorReceiver(
            outer,
            underlying=stores.origin.store,
            host=opts.host,
            port=opts.receiver_port,
            timeout=RECEIVER_TIMEOUT,
            admission=admission,
        )
        if opts.disable_blocklist:
            receiver.blocklister = None  # wants = "not stored yet", as reflector.go without a blocklist
        if not opts.use_db:
            log.info("no database: the reflector receiver applies no blocklist")
        elif opts.disable_blocklist:
            log.info("--disable-blocklist: the reflector receiver applies no blocklist")
    peer_store = ProtectedGuard(outer, protected.is_protected) if protected.url else outer
    queue_size = opts.request_queue_size
    return Servers(
        receiver=receiver,
        peer=PeerServer(peer_store, opts.host, opts.tcp_peer_port, admission=admission, idle_timeout=60.0),
        http3=Http3BlobServer(
            SingleFlightStore(outer, component="sf-http3"),
            opts.host,
            opts.http3_peer_port,
            cert_file=opts.http3_cert or None,
            key_file=opts.http3_key or None,
            protected=protected.is_protected,
            queue=RequestQueue(queue_size),
            max_datagram_size=opts.http3_max_datagram_size,
        ),
        http=HttpBlobServer(
            SingleFlightStore(outer, component="sf-http"),
            opts.host,
            opts.http_peer_port,
            edge_token=opts.upstream_edge_token,
            protected=protected.is_protected,
            queue=RequestQueue(queue_size),
            admission=admission,
        ),
        metrics=MetricsServer(metrics, opts.host, opts.metrics_port),
    )


def supervise(stores: Stores, servers: Servers, protected: ProtectedList, supervisor: Supervisor) -> None:
    """Add the components in start order: the stores first, so they close after every server."""
    database = stores.origin.database

    async def close_stores() -> None:
        await protected.close()
        try:
            await stores.outer.close()  # closes every layer down to the origin
        except Exception as e:
            log.warning("closing the store chain: %s", e)
        if database is not None:
            await database.close()

    supervisor.add("store chain", Call(stop=close_stores))
    # A bucket that is missing, refuses the key or cannot be reached is refused at start.
    supervisor.add("the S3 origin", Call(start=lambda: check_s3(stores.origin.store)), "config")
    if database is not None:
        db = database

        async def start_database() -> None:
            # A database that is down at start is refused, as reflector.go does, not found
            # out on the first request.
            await db.start(require=True)

        supervisor.add("the database", Call(start=start_database), "db_conn")
    # Disk caches index themselves at start; at stop they flush the localdb access times.
    supervisor.add("caches", stores.caches, "--disk-cache")
    if servers.receiver is not None:
        supervisor.add("reflector receiver", servers.receiver, "--receiver-port")
    supervisor.add("peer server", servers.peer, "--tcp-peer-port")
    supervisor.add("HTTP/3 server", servers.http3, "--http3-peer-port")
    supervisor.add("HTTP server", servers.http, "--http-peer-port")
    supervisor.add("metrics server", servers.metrics, "--metrics-port")


async def build(opts: ReflectorOptions, config: Config) -> Reflector:
    """Validate, then assemble stores and servers (nothing listens until `run`)."""
    kind = validate(opts, config)
    stores = build_stores(opts, config, build_origin(opts, config, kind))
    metrics = Metrics()
    metrics.stores.append(stores.outer)
    url = opts.protected_list_url
    protected = ProtectedList(config.protected_list_url if url is None else url)
    servers = build_servers(opts, stores, protected, metrics)
    if servers.receiver is not None:
        metrics.receivers.append(servers.receiver)
    metrics.servers.extend((servers.peer, servers.http3, servers.http))
    supervisor = Supervisor(grace=opts.shutdown_grace)
    supervise(stores, servers, protected, supervisor)
    if opts.dht is not None:
        peer = servers.peer
        dht = AnnouncingNode(opts.dht, stores.outer, lambda: peer.port)
        supervisor.add("DHT node", dht, "--dht-port")
        metrics.announcers.append(dht)
    blocklist = _blocklist_updater(opts, servers)
    if blocklist is not None:
        supervisor.add("blocklist updater", blocklist, "--blocklist-url")
        metrics.blocklists.append(blocklist)
    return Reflector(opts, stores, servers, supervisor, metrics, blocklist)


def _blocklist_updater(opts: ReflectorOptions, servers: Servers) -> BlocklistUpdater | None:
    """The updater over the receiver's Blocklister (the DB-backed store), unless --disable-blocklist."""
    if opts.disable_blocklist or servers.receiver is None or servers.receiver.blocklister is None:
        return None
    hubs = [h.strip() for h in opts.blocklist_hubs.split(",") if h.strip()]
    return BlocklistUpdater(
        servers.receiver.blocklister, list_url=opts.blocklist_url, hubs=hubs, interval=opts.blocklist_interval
    )


async def run_reflector(opts: ReflectorOptions, config: Config) -> None:
    """Build, log the version, serve until SIGINT/SIGTERM, shut down gracefully."""
    from prism.version import build_info

    info = build_info()
    refl = await build(opts, config)
    log.info("reflector version %s, built %s", info.get("Version"), info.get("build date", "<now>"))
    await refl.run()
    log.info("reflector stopped")
