"""`prism start new|SEED`: the full node of reflector.go's `start` (reflector.md §1.3, §8).

A reflector receiver, peer server (and prism's HTTP, HTTP/3 and metrics servers) over
DBBacked(S3, main DB), assembled by `prism.app.reflector.build`; a DHT node; membership on a serf
agent. Each node announces the stored hashes of its slice of the key space (`SlicePlan`), read from
the database in keyset pages, and stops announcing what left its slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prism.app.dht import DhtAnnounceOptions, announcing_node
from prism.app.reflector import Reflector, ReflectorConfigError, ReflectorOptions, build
from prism.app.s3origin import names_a_bucket
from prism.app.supervisor import Call
from prism.cluster.agent import AgentError, SerfAgent
from prism.cluster.membership import Membership
from prism.cluster.slicing import SETTLE, Assignment, ClusterSnapshot, KeyRange, SlicePlan
from prism.config import Config
from prism.db.mysql import MysqlDatabase
from prism.dht.node import DhtNode
from prism.dht.workers import AnnouncerSnapshot
from prism.hostport import HostPort

log = logging.getLogger("prism.cluster")

PAGE = 1000
"""Hashes per database page when reading a slice."""
RESCAN = 600.0
"""Seconds between two reads of the slice: blobs uploaded to any node since are announced."""
RETRY = 5.0
"""Seconds before reading the slice again after the database failed."""
FLAG_NAMES = {"--tcp-peer-port": "--peer-port", "--receiver-port": "--reflector-port"}
"""`prism reflector`'s flags in its errors, as `prism start` calls them."""


@dataclass
class StartOptions:
    """Every flag of `prism start` (reflector.md §1.3) and prism's own."""

    seed: str = "new"
    """`new`: a new cluster; else the host:port of a member to join."""
    cluster_port: int = 17946
    peer_port: int = 3333
    reflector_port: int = 5566
    dht_port: int = 4444
    dht_seeds: list[HostPort] | None = None
    hash_range: KeyRange | None = None
    # prism additions
    store_path: str = ""
    http_peer_port: int = 5569
    http3_peer_port: int = 5568
    metrics_port: int = 2112
    host: str = "0.0.0.0"
    dht_announce: str = "all"
    dht_announce_rate: float = 10.0
    allow_private_peers: bool = False
    min_members: int = 1
    serf_rpc: HostPort | None = None
    """Attach to this agent instead of starting one."""
    settle: float = SETTLE
    rescan: float = RESCAN
    shutdown_grace: float = 5.0
    dht: DhtAnnounceOptions = field(init=False)

    def __post_init__(self) -> None:
        self.dht = DhtAnnounceOptions(
            port=self.dht_port,
            seeds=self.dht_seeds,
            announce=self.dht_announce,
            allow_private_peers=self.allow_private_peers,
            rate=self.dht_announce_rate,
            host=self.host,
        )


class SliceAnnouncer:
    """A DHT node (a Supervisor component) announcing the stored hashes of this node's slice.

    `assign` hands it each new assignment; it reads the slice from the database in pages, announces
    the hashes it did not announce yet (at once: they may be a lost member's) and stops announcing
    those outside the slice. Every `rescan` seconds it reads the slice again for blobs stored since.
    """

    def __init__(
        self,
        opts: DhtAnnounceOptions,
        db: MysqlDatabase,
        peer_port: Callable[[], int],
        *,
        rescan: float = RESCAN,
        page: int = PAGE,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.opts = opts
        self.db = db
        self.peer_port = peer_port
        self.rescan = rescan
        self.page = page
        self.report = report or log.info
        self.node: DhtNode | None = None
        self.assignment: Assignment | None = None
        self.range: KeyRange | None = None
        """The slice whose hashes are announced now."""
        self.hashes: set[str] = set()
        self.scans = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        node = announcing_node(self.opts, self.peer_port())
        await node.start()
        self.node = node
        self._task = asyncio.get_running_loop().create_task(self._run())
        log.info("DHT node on udp %s:%d announces peer port %d", *node.address, node.peer_port)

    async def stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.node is not None:
            await self.node.stop(min(grace, 1.0))

    def assign(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self._wake.set()

    def snapshot(self) -> AnnouncerSnapshot | None:
        node = self.node
        return None if node is None or node.announcer is None else node.announcer.snapshot()

    def cluster_snapshot(self) -> ClusterSnapshot:
        a = self.assignment
        return ClusterSnapshot(a.total if a else 0, a.n if a else 0, len(self.hashes))

    def _wanted(self) -> KeyRange | None:
        return None if self.assignment is None else self.assignment.range

    async def _run(self) -> None:
        wait = self.rescan
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._scan(self._wanted())
            except Exception as e:  # the database is down: read the slice again soon
                log.warning("cannot read this node's slice from the database: %s", e)
                wait = min(RETRY, self.rescan)
            else:
                wait = self.rescan

    async def _scan(self, wanted: KeyRange | None) -> None:
        """Announce the stored hashes of `wanted`, and no others (abandoned if the slice changes)."""
        node = self.node
        assert node is not None
        self._drop({h for h in self.hashes if wanted is None or int(h, 16) not in wanted})
        self.range = wanted
        if wanted is None:
            self.report("slice: none: announcing nothing")
            return
        seen: set[str] = set()
        after: str | None = None
        while True:
            page = await self.db.stored_hashes_page(
                wanted.start_hex, wanted.end_hex, self.page, after=after, sd_head=self.opts.announce != "all"
            )
            if self._wanted() != wanted:
                return  # re-sliced meanwhile: the next pass reads the new slice
            fresh = [h for h in page if h not in self.hashes]
            if fresh:
                node.announce(fresh)
                self.hashes.update(fresh)
            seen.update(page)
            if len(page) < self.page:
                break
            after = page[-1]
        self._drop(self.hashes - seen)  # deleted since the last read
        self.scans += 1
        a = self.assignment
        where = f"{a.n} of {a.total}" if a else "?"
        self.report(f"slice {where}: {wanted.start_hex}-{wanted.end_hex}: {len(self.hashes)} hashes")

    def _drop(self, gone: set[str]) -> None:
        if gone and self.node is not None:
            self.node.unannounce(gone)
            self.hashes -= gone


@dataclass
class StartNode:
    """What `build_start` assembled; `run` serves until SIGINT/SIGTERM."""

    reflector: Reflector
    agent: SerfAgent | None
    membership: Membership
    announcer: SliceAnnouncer

    async def run(self) -> None:
        await self.reflector.supervisor.run()


def _check_origin(opts: StartOptions, config: Config) -> None:
    if not opts.store_path and not names_a_bucket(config):
        raise ReflectorConfigError(
            "start needs an S3 bucket in the config (aws_id, aws_secret, bucket_region, bucket_name) "
            "or --store-path DIR"
        )
    if not config.db_conn:
        raise ReflectorConfigError("start needs db_conn in the config file: the stored hashes come from it")


def reflector_options(opts: StartOptions) -> ReflectorOptions:
    """The reflector part of a node: no cache, the DB-backed origin, no blocklist (as reflector.go)."""
    return ReflectorOptions(
        tcp_peer_port=opts.peer_port,
        receiver_port=opts.reflector_port,
        http_peer_port=opts.http_peer_port,
        http3_peer_port=opts.http3_peer_port,
        metrics_port=opts.metrics_port,
        disable_blocklist=True,
        use_db=True,
        disk_cache="",
        store_path=opts.store_path,
        host=opts.host,
        shutdown_grace=opts.shutdown_grace,
        protected_list_url="",
    )


def _renamed(message: str) -> str:
    for old, new in FLAG_NAMES.items():
        message = message.replace(old, new)
    return message


def show(line: str) -> None:
    print(line, flush=True)


def describe(a: Assignment) -> str:
    return f"membership: {a.n} of {a.total}: {' '.join(a.members)}"


def _membership(opts: StartOptions, agent: SerfAgent | None, announcer: SliceAnnouncer) -> Membership:
    """Membership through our agent (or the operator's, `--serf-rpc`), handing slices to `announcer`."""
    plan = SlicePlan(
        agent.name if agent else "",  # the operator's agent: its name, asked at start
        asyncio.get_running_loop().time(),
        settle=opts.settle,
        min_members=opts.min_members,
        fixed=opts.hash_range,
    )

    def assigned(a: Assignment) -> None:
        show(describe(a))
        announcer.assign(a)

    def rpc() -> tuple[str, int]:
        if agent is not None:
            return agent.rpc
        assert opts.serf_rpc is not None
        return opts.serf_rpc.host, opts.serf_rpc.port

    return Membership(rpc, plan, assigned, [] if opts.seed == "new" else [opts.seed])


async def build_start(opts: StartOptions, config: Config) -> StartNode:
    """Validate and assemble a node (nothing listens until `run`); ReflectorConfigError on bad flags."""
    _check_origin(opts, config)
    try:
        refl = await build(reflector_options(opts), config)
    except ReflectorConfigError as e:
        raise ReflectorConfigError(_renamed(str(e))) from None
    database = refl.stores.origin.database
    assert database is not None
    peer = refl.servers.peer
    announcer = SliceAnnouncer(opts.dht, database, lambda: peer.port, rescan=opts.rescan, report=show)
    agent = None if opts.serf_rpc else SerfAgent(opts.host, opts.cluster_port)
    if agent is not None:
        try:
            agent.check_installed()
        except AgentError as e:
            raise ReflectorConfigError(str(e)) from None
    membership = _membership(opts, agent, announcer)
    sup = refl.supervisor
    for entry in sup.entries:
        entry.flag = FLAG_NAMES.get(entry.flag, entry.flag)
    if agent is not None:
        sup.add("serf agent", agent, "--cluster-port")

        async def named() -> None:
            show(f"cluster node {agent.name} on {opts.host}:{opts.cluster_port}")

        sup.add("cluster name", Call(start=named))
    sup.add("DHT node", announcer, "--dht-port")
    sup.add("cluster membership", membership, "--serf-rpc" if opts.serf_rpc else "start SEED")
    refl.metrics.announcers.append(announcer)
    refl.metrics.clusters.append(announcer)
    return StartNode(refl, agent, membership, announcer)


async def run_start(opts: StartOptions, config: Config) -> None:
    """Build, log the version, serve until SIGINT/SIGTERM, leave the cluster and shut down."""
    from prism.version import build_info

    info = build_info()
    node = await build_start(opts, config)
    log.info("prism start version %s, built %s", info.get("Version"), info.get("build date", "<now>"))
    await node.run()
    log.info("prism start stopped")
